"""Frames cached as .npy memmaps: a split is produced once (in parallel, with a progress bar), then
read back in microseconds. Training reads its frames from here at the network's input scale: a
source that caches its own frames at that scale (the simulator) hands them over, any other
FrameSource is letterboxed into an in-memory FrameCache (:func:`frames_at_scale`).

Frame i must depend only on (split, i), so the first N frames of a larger cache are the same data
and are reused. The cache lives under ``$XDG_CACHE_HOME/multitask_perception/frames`` (override
with ``MULTITASK_PERCEPTION_CACHE``), never inside the package.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from tqdm import tqdm

from perception_core.codec import decode_image
from perception_core.datasets.source import TASKS, FrameSource, Sample
from perception_core.datasets.spec import DatasetSpec
from perception_core.pipeline.letterbox import letterbox, letterbox_boxes
from perception_core.types import Detections

# image (H,W,3) uint8, mask (H,W) uint8, boxes (M,4) float32, classes (M,) int32
FrameArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def cache_root() -> Path:
    if os.environ.get("MULTITASK_PERCEPTION_CACHE"):
        return Path(os.environ["MULTITASK_PERCEPTION_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "multitask_perception" / "frames"


@dataclass
class FrameCache:
    """N frames as parallel arrays; boxes are ragged: frame i owns rows offsets[i]:offsets[i+1]."""

    images: np.ndarray  # (N,H,W,3) uint8 BGR
    masks: np.ndarray  # (N,H,W) uint8 class ids (the spec's ignore label where unlabelled, e.g. letterbox padding)
    boxes: np.ndarray  # (M,4) float32 xyxy pixels
    classes: np.ndarray  # (M,) int32 detection class ids
    offsets: np.ndarray  # (N+1,) int64
    labelled: Optional[np.ndarray] = None  # (N, len(TASKS)) bool: frame i has TASKS[j]'s labels; None: all do

    def __len__(self):
        return len(self.images)

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])

    def frame_boxes(self, i):
        return self.boxes[self.offsets[i]:self.offsets[i + 1]], self.classes[self.offsets[i]:self.offsets[i + 1]]

    def frame(self, i) -> FrameArrays:
        """Frame ``i``'s (image, mask, boxes, classes), views into the cache."""
        boxes, classes = self.frame_boxes(i)
        return self.images[i], self.masks[i], boxes, classes

    def is_labelled(self, i, task: str) -> bool:
        return self.labelled is None or bool(self.labelled[i, TASKS.index(task)])

    def labelled_count(self, task: str) -> int:
        return len(self) if self.labelled is None else int(self.labelled[:, TASKS.index(task)].sum())

    def samples(self, prefix: str) -> Iterator[Sample]:
        for i in range(len(self)):
            boxes, classes = self.frame_boxes(i)
            detections = Detections(np.asarray(boxes, np.float32), np.asarray(classes, np.int32),
                                    np.ones(len(boxes), np.float32))
            yield Sample(np.asarray(self.images[i]), f"{prefix}/{i}",
                         np.asarray(self.masks[i]) if self.is_labelled(i, "segmentation") else None,
                         detections if self.is_labelled(i, "detection") else None)

    @classmethod
    def from_source(cls, source: FrameSource, input_hw: tuple[int, int]) -> FrameCache:
        """Every sample of ``source`` letterboxed to ``input_hw``, held in memory.

        A sample without a class mask gets one of the spec's ignore label (it trains no segmentation);
        one without detections is marked unlabelled for detection rather than read as "no objects".
        """
        spec = source.spec
        images, masks, boxes, classes, labelled = [], [], [], [], []
        for sample in source:
            sample.validated(spec)
            image = sample.image if isinstance(sample.image, np.ndarray) else decode_image(sample.image)
            mask = sample.class_mask if sample.class_mask is not None else np.full(
                image.shape[:2], spec.ignore_label, np.uint8)
            dets = sample.detections if sample.detections is not None else Detections.empty()
            image, mask, b, c = letterboxed((image, mask, dets.xyxy, dets.class_id), input_hw, spec.ignore_label)
            images.append(image)
            masks.append(mask)
            boxes.append(b)
            classes.append(c)
            labelled.append([task in sample.tasks for task in TASKS])
        if not images:
            raise ValueError(f"{source.name} has no frames")
        offsets = np.cumsum([0] + [len(b) for b in boxes]).astype(np.int64)
        return cls(np.stack(images), np.stack(masks), np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
                   np.concatenate(classes).astype(np.int32), offsets, np.asarray(labelled, bool))


@dataclass
class CachedSource:
    """Frames already in a FrameCache (hand-made, or cached by another source), as a FrameSource."""

    frames: FrameCache
    spec: DatasetSpec
    name: str

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Sample]:
        return self.frames.samples(self.name)


def frames_at_scale(source: FrameSource, input_hw: tuple[int, int]) -> FrameCache:
    """``source``'s frames at the network's input scale: its own cache if it holds them at that scale
    (the simulator renders and caches a split at any scale), else letterboxed in memory."""
    cached = getattr(source, "frames", None)
    if isinstance(cached, FrameCache) and tuple(cached.images.shape[1:3]) == tuple(input_hw):
        return cached
    return FrameCache.from_source(source, input_hw)


def letterboxed(arrays: FrameArrays, out_hw: Optional[tuple[int, int]], ignore_label: int) -> FrameArrays:
    """A frame at the network's input scale, as the pipeline letterboxes it; padding is unlabelled."""
    image, mask, boxes, classes = arrays
    if out_hw is None:
        return arrays
    image, t = letterbox(image, out_hw)
    mask, _ = letterbox(mask, out_hw, pad_value=ignore_label, interpolation=cv2.INTER_NEAREST)
    return image, mask, letterbox_boxes(boxes, t), classes


def load_frames(split: str, count: int, frame_hw: tuple[int, int], produce: Callable[[int], FrameArrays],
                workers: int = 2) -> FrameCache:
    """The first ``count`` frames of ``split`` (e.g. "frames_s0") at ``frame_hw``: from any cache holding at
    least that many, else produced with ``produce(i)`` (a picklable function) and cached."""
    size = f"{frame_hw[0]}x{frame_hw[1]}"
    root = cache_root()
    held = [p for p in root.glob(f"{split}_n*_{size}") if (p / "meta.json").exists()]
    held = sorted((int(p.name[len(split) + 2:].split("_")[0]), p) for p in held)
    path = next((p for n, p in held if n >= count), None)
    if path is None:
        path = root / f"{split}_n{count}_{size}"
        _build(path, count, frame_hw, produce, workers)
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r")[:count] for name in ("images", "masks")}
    offsets = np.load(path / "offsets.npy")[:count + 1]
    boxes = np.load(path / "boxes.npy")[:offsets[-1]]
    classes = np.load(path / "classes.npy")[:offsets[-1]]
    return FrameCache(**arrays, boxes=boxes, classes=classes, offsets=offsets)


def _build(path: Path, count: int, hw: Sequence[int], produce: Callable[[int], FrameArrays], workers: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(path / "images.npy", "w+", np.uint8, (count, hw[0], hw[1], 3))
    masks = np.lib.format.open_memmap(path / "masks.npy", "w+", np.uint8, (count, hw[0], hw[1]))
    boxes, classes, offsets = [], [], [0]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.imap(produce, range(count), chunksize=8)
        for i, (image, mask, b, c) in enumerate(tqdm(results, total=count, desc=f"cache {path.name}")):
            images[i], masks[i] = image, mask
            boxes.append(np.asarray(b, np.float32).reshape(-1, 4))
            classes.append(np.asarray(c, np.int32))
            offsets.append(offsets[-1] + len(b))
    images.flush()
    masks.flush()
    np.save(path / "boxes.npy", np.concatenate(boxes))
    np.save(path / "classes.npy", np.concatenate(classes))
    np.save(path / "offsets.npy", np.asarray(offsets, np.int64))
    (path / "meta.json").write_text(json.dumps({"split": path.name, "count": count, "hw": list(hw)}))

