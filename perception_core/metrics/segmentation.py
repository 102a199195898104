"""Semantic segmentation metric: a confusion matrix accumulated over frames (update/reset/compute)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np


@dataclass(frozen=True)
class SegmentationResult:
    """Rows of ``confusion`` are ground truth, columns predictions. IoU is NaN for a class absent from both."""

    confusion: np.ndarray
    iou: np.ndarray
    miou: float
    pixel_accuracy: float
    class_names: tuple[str, ...]

    def per_class_iou(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.class_names, self.iou)}

    def as_dict(self) -> dict:
        return {"miou": self.miou, "pixel_accuracy": self.pixel_accuracy, "iou": self.per_class_iou()}


class SegmentationMetric:
    """mIoU and pixel accuracy of (H,W) class maps; pixels labelled ``ignore_index`` are skipped."""

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255) -> None:
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        n = len(self.class_names)
        self.confusion = np.zeros((n, n), np.int64)

    def update(self, predictions: Union[np.ndarray, list[np.ndarray]],
               targets: Union[np.ndarray, list[np.ndarray]]) -> SegmentationMetric:
        """Accumulate one (H,W) pair or lists of them (equal length, equal shapes)."""
        if isinstance(predictions, np.ndarray) and predictions.ndim == 2:
            predictions, targets = [predictions], [targets]
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
        n = len(self.class_names)
        for pred, target in zip(predictions, targets):
            if pred.shape != target.shape:
                raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
            valid = target != self.ignore_index
            t, p = target[valid].astype(np.int64), pred[valid].astype(np.int64)
            if t.size and max(int(t.max()), int(p.max())) >= n:
                raise ValueError(f"class id >= {n} in prediction or target")
            self.confusion += np.bincount(t * n + p, minlength=n * n).reshape(n, n)
        return self

    def merge(self, other: SegmentationMetric) -> SegmentationMetric:
        """Add ``other``'s frames (same classes): the confusion matrices sum, so the merge is exact."""
        if (other.class_names, other.ignore_index) != (self.class_names, self.ignore_index):
            raise ValueError(f"cannot merge metrics of classes {other.class_names} (ignore {other.ignore_index}) into "
                             f"{self.class_names} (ignore {self.ignore_index})")
        self.confusion += other.confusion
        return self

    def compute(self) -> SegmentationResult:
        """IoU per class; mIoU averages the classes present in ground truth or prediction."""
        cm = self.confusion
        iou, miou = iou_of(cm)
        total = cm.sum()
        return SegmentationResult(cm.copy(), iou, miou, float(np.trace(cm) / total) if total else float("nan"),
                                  self.class_names)


def iou_of(confusion: np.ndarray) -> tuple[np.ndarray, float]:
    """IoU per class (NaN where a class is absent from both sides) and their mean, from a confusion matrix."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return iou, float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
