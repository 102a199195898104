"""Framework-free data types shared by the pipeline, metrics, datasets and nodes (no label set here:
classes come from a DatasetSpec or a model sidecar).

Every container validates its arrays on construction so that a shape or dtype
mistake fails where it is made, not three stages later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np


def _validate_xyxy(xyxy: np.ndarray) -> None:
    if xyxy.ndim != 2 or xyxy.shape[1] != 4:
        raise ValueError(f"xyxy must have shape (N, 4), got {xyxy.shape}")
    if xyxy.dtype != np.float32:
        raise ValueError(f"xyxy must be float32, got {xyxy.dtype}")


def _validate_per_row(name: str, values: np.ndarray, n: int, dtype) -> None:
    if values.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {values.shape}")
    if values.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype)}, got {values.dtype}")


@dataclass
class Detections:
    """N boxes as parallel arrays: xyxy float32 (N,4) pixels, class_id int32 (N,), score float32 (N,)."""

    xyxy: np.ndarray
    class_id: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        _validate_xyxy(self.xyxy)
        n = len(self.xyxy)
        _validate_per_row("class_id", self.class_id, n, np.int32)
        _validate_per_row("score", self.score, n, np.float32)
        if n and np.any(self.xyxy[:, 2:] < self.xyxy[:, :2]):
            raise ValueError("xyxy boxes must satisfy x1 <= x2 and y1 <= y2")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.zeros(0, np.float32))

    @classmethod
    def from_lists(cls, xyxy: Sequence, class_id: Sequence, score: Optional[Sequence] = None) -> Detections:
        """Build from Python sequences, coercing dtypes (scores default to 1.0: ground truth)."""
        boxes = np.asarray(xyxy, np.float32).reshape(-1, 4)
        ids = np.asarray(class_id, np.int32).reshape(-1)
        scores = np.ones(len(boxes), np.float32) if score is None else np.asarray(score, np.float32).reshape(-1)
        return cls(boxes, ids, scores)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Union[int, slice, Sequence[int], np.ndarray]) -> Detections:
        """Index every per-row field the same way, e.g. ``dets[dets.score > 0.5]``."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(self.xyxy[index], self.class_id[index], self.score[index])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (np.array_equal(self.xyxy, other.xyxy) and np.array_equal(self.class_id, other.class_id)
                and np.array_equal(self.score, other.score))


def validate_class_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Check that ``mask`` is an (H, W) uint8 class map with ids below ``num_classes``; return it."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"class mask must be (H, W) uint8, got {mask.shape} {mask.dtype}")
    if mask.size and int(mask.max()) >= num_classes:
        raise ValueError(f"class mask holds id {int(mask.max())}, only {num_classes} classes exist")
    return mask


@dataclass
class Frame:
    """One camera frame in the core: a BGR image plus its timestamp and frame id."""

    image: np.ndarray
    stamp_ns: int = 0
    frame_id: str = "camera"

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"frame image must be (H, W, 3) uint8 BGR, got {self.image.shape} {self.image.dtype}")
