"""Training frames from one or several datasets, at any image size, read as they are drawn.

A dataset with random access (``source[i]`` and ``source.labelled(i, task)``, e.g. a folder
dataset) is never held in memory: each drawn image is read, decoded and letterboxed to the model
input (as the node letterboxes camera frames), then cropped. Worker threads build the next batches
while TensorFlow runs the current step (OpenCV and Pillow decode and resize with the GIL released),
and the loader counts the steps that had to wait for data. A source without random access (the
simulator, which keeps its own frame cache) is letterboxed into memory as before.

Several datasets train one model: their label sets combine into one DatasetSpec (segmentation
classes from the datasets labelled for segmentation, detection classes from those labelled for
detection), and each frame keeps saying which tasks it is labelled for. Framework-free.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from perception_core.codec import decode_image
from perception_core.datasets.cache import frames_at_scale
from perception_core.datasets.check import check_dataset
from perception_core.datasets.folder import open_dataset
from perception_core.datasets.source import TASKS, FrameSource
from perception_core.datasets.spec import DatasetSpec
from perception_core.pipeline.letterbox import letterbox, letterbox_boxes
from perception_core.types import Detections

PREFETCH_BATCHES = 2  # batches in flight ahead of the training step


class DatasetRefused(ValueError):
    """A dataset training cannot use as described (its check report, or a conflict between datasets)."""


def open_datasets(yaml_paths: Sequence[str], split: str = "train", workers: int = 2) -> tuple[list, list[dict]]:
    """Each dataset YAML checked as ``dataset check`` checks it (one with errors is refused with its report),
    then its ``split`` opened; returns (sources, records for the run: YAML, sha256, classes, images per split
    and task)."""
    sources, records = [], []
    for path in yaml_paths:
        report = check_dataset(path, workers=workers, progress=True)
        if report.errors:
            raise DatasetRefused(f"{path} has errors; fix them or leave the files out:\n{report.text()}")
        source = open_dataset(path, split)
        sources.append(source)
        records.append({"yaml": str(source.yaml_path), "yaml_sha256": source.yaml_sha256, "split": split,
                        "spec": source.spec.to_dict(),
                        "counts": {name: {"images": stats.images, **{t: stats.labelled[t] for t in TASKS}}
                                   for name, stats in report.splits.items()}})
    return sources, records


def combined_spec(specs: Sequence[DatasetSpec]) -> DatasetSpec:
    """One label set for datasets that may each be labelled for one task only.

    Segmentation classes (and colours) come from the datasets with segmentation classes, detection
    classes from those with detection classes; datasets that disagree on a task's class list, or
    on the ignore label, are refused (a class id would mean two things).
    """
    if len(specs) == 1:
        return specs[0]
    chosen = {}
    for task, attr in (("segmentation", "seg_classes"), ("detection", "det_classes")):
        labelled = [s for s in specs if getattr(s, attr)]
        for other in labelled[1:]:
            if getattr(other, attr) != getattr(labelled[0], attr):
                raise DatasetRefused(f"{task} classes differ between datasets {labelled[0].name!r} "
                                 f"{list(getattr(labelled[0], attr))} and {other.name!r} {list(getattr(other, attr))}: "
                                 f"give them one class list (a label_map in the dataset YAML)")
        chosen[task] = labelled[0] if labelled else None
    ignore = {s.ignore_label for s in specs}
    if len(ignore) > 1:
        raise DatasetRefused(f"the datasets' ignore labels differ ({sorted(ignore)}): give them one ignore_label")
    seg, det = chosen["segmentation"], chosen["detection"]
    return DatasetSpec(seg.seg_classes if seg else (), det.det_classes if det else (),
                       seg_colors_bgr=seg.seg_colors_bgr if seg else None, ignore_label=ignore.pop(),
                       name="+".join(s.name for s in specs))


def random_access(source: FrameSource) -> bool:
    return hasattr(source, "__getitem__") and hasattr(source, "labelled")


class SourceFrames:
    """A random-access source's frames at the input scale ``hw``, each read and letterboxed when asked for."""

    def __init__(self, source, hw: tuple[int, int], spec: DatasetSpec) -> None:
        self.source, self.hw, self.spec = source, tuple(hw), spec

    def __len__(self) -> int:
        return len(self.source)

    def is_labelled(self, i: int, task: str) -> bool:
        return bool(self.source.labelled(int(i), task))

    def labelled_count(self, task: str) -> int:
        return sum(self.is_labelled(i, task) for i in range(len(self)))

    def frame(self, i: int):
        """(image, mask, boxes, classes) of frame ``i`` letterboxed to ``hw``; unlabelled tasks: all-ignore
        mask, no boxes (the sampler's labelled flags keep them out of the losses)."""
        sample = self.source[int(i)].validated(self.spec)
        if sample.tasks != {task for task in TASKS if self.is_labelled(i, task)}:
            raise ValueError(f"{sample.key}: labelled for {sorted(sample.tasks)}, but its source said otherwise")
        image = sample.image if isinstance(sample.image, np.ndarray) else decode_image(sample.image)
        image, t = letterbox(image, self.hw)
        if sample.class_mask is None:
            mask = np.full(self.hw, self.spec.ignore_label, np.uint8)
        else:
            mask, _ = letterbox(sample.class_mask, self.hw, pad_value=self.spec.ignore_label,
                                interpolation=cv2.INTER_NEAREST)
        dets = sample.detections if sample.detections is not None else Detections.empty()
        return image, mask, letterbox_boxes(dets.xyxy, t), np.asarray(dets.class_id, np.int32)


class ConcatFrames:
    """Several datasets' frames (all at one input scale) as one index space, in the order given."""

    def __init__(self, parts: Sequence) -> None:
        self.parts = list(parts)
        sizes = {tuple(p.hw) for p in self.parts}
        if len(sizes) != 1:
            raise ValueError(f"frames at different input scales: {sorted(sizes)}")
        self.hw = sizes.pop()
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, i):
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[part], int(i - self.starts[part])

    def is_labelled(self, i: int, task: str) -> bool:
        part, j = self._locate(i)
        return part.is_labelled(j, task)

    def labelled_count(self, task: str) -> int:
        return sum(p.labelled_count(task) for p in self.parts)

    def frame(self, i: int):
        part, j = self._locate(i)
        return part.frame(j)


def training_frames(sources: Sequence[FrameSource], hw: tuple[int, int], spec: DatasetSpec):
    """The sources' frames at the input scale ``hw``: read on demand where a source allows it, else in memory."""
    parts = [SourceFrames(s, hw, spec) if random_access(s) else frames_at_scale(s, hw) for s in sources]
    return parts[0] if len(parts) == 1 else ConcatFrames(parts)


class Prefetcher:
    """Batches ``start``..``stop - 1`` of a BatchSampler, built ahead by ``workers`` threads.

    Each image of a batch is one task in the pool, so a batch of large images decodes in parallel.
    ``waits`` counts the batches the training loop asked for before they were ready and ``wait_s``
    the time it spent waiting.
    """

    def __init__(self, sampler, start: int, stop: int, workers: int = 2, depth: int = PREFETCH_BATCHES) -> None:
        self.sampler, self.stop = sampler, stop
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="loader")
        self.pending: dict[int, list] = {}
        self.next_step = start
        self.waits, self.wait_s = 0, 0.0
        for _ in range(max(1, depth)):
            self._submit()

    def _submit(self) -> None:
        if self.next_step < self.stop:
            self.pending[self.next_step] = [self.pool.submit(self.sampler.sample, d)
                                            for d in self.sampler.draws(self.next_step)]
            self.next_step += 1

    def get(self, step: int) -> dict:
        futures = self.pending.pop(step)
        ready = all(f.done() for f in futures)
        tick = time.perf_counter()
        samples = [f.result() for f in futures]
        if not ready:
            self.waits += 1
            self.wait_s += time.perf_counter() - tick
        self._submit()
        return self.sampler.collate(samples)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
