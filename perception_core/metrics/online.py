"""Accuracy of a running graph, without ROS: outputs and ground truth paired by stamp, then scored.

The evaluator node feeds it messages (rclpy's, or rosbags' with the same fields); it feeds the
metric objects the offline evaluation uses (SegmentationMetric, DetectionMetric).

Where the classes come from (nothing here assumes a label set):
- segmentation: the model's class names, from its sidecar when one is named, else from the
  LabelInfo the perception node latches. Until they are known, complete frames are held (up to
  ``held_limit``, the oldest then counted as "unscored"), never scored against a guess;
- detection: the model's sidecar when named; else the class NAMES the messages carry (a
  Detection2D's class_id is a name): a prediction counts as correct only where its name equals
  the ground truth's. The label set is then every name seen so far, outputs and truth alike; a
  name only the outputs use has no targets, which COCO's mAP leaves out of its mean (its
  detections still count against nothing, as false positives of that class).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Optional

from perception_core import message_readers as read
from perception_core.datasets.spec import IGNORE_LABEL
from perception_core.metrics.detection import DetectionMetric
from perception_core.metrics.segmentation import SegmentationMetric

PARTS = ("segmentation", "detections", "ground_truth/segmentation", "ground_truth/detections")
COUNTERS = ("paired", "unpaired", "malformed", "held", "unscored")


class OnlineAccuracy:
    """``add(part, msg)`` per message; a frame whose four PARTS arrived is scored (or held); ``expire`` reports
    frames still incomplete after ``pair_timeout_s``."""

    def __init__(self, pair_timeout_s: float, seg_classes: Optional[Sequence[str]] = None,
                 det_classes: Optional[Sequence[str]] = None, ignore_label: int = IGNORE_LABEL,
                 held_limit: int = 600) -> None:
        self.pair_timeout_s = pair_timeout_s
        self.ignore_label = ignore_label
        self.held_limit = held_limit
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.last_error = ""  # why the latest malformed frame could not be scored
        self.segmentation: Optional[SegmentationMetric] = None
        self.det_names_fixed = det_classes is not None
        self.detection = DetectionMetric(det_classes or ())
        self._partial: OrderedDict[int, dict[str, Any]] = OrderedDict()  # stamp -> {part: msg, "_since": s}
        self._held: OrderedDict[int, dict[str, Any]] = OrderedDict()  # complete, waiting for class names
        if seg_classes is not None:
            self.set_seg_classes(seg_classes)

    @property
    def seg_classes(self) -> Optional[tuple[str, ...]]:
        return None if self.segmentation is None else self.segmentation.class_names

    def set_seg_classes(self, names: Sequence[str]) -> bool:
        """The model's segmentation classes (e.g. from LabelInfo); scores the held frames. False if unchanged.

        A different list (another model took over) starts both metrics afresh.
        """
        names = tuple(names)
        if names == self.seg_classes:
            return False
        if not names:
            raise ValueError("a label set without segmentation classes cannot score masks")
        if self.segmentation is not None:
            self.detection.reset()
            self.counts["paired"] = 0
        self.segmentation = SegmentationMetric(names, ignore_index=self.ignore_label)
        while self._held:
            self._score(self._held.popitem(last=False)[1])
        self.counts["held"] = 0
        return True

    def add(self, part: str, msg, now_s: Optional[float] = None) -> None:
        stamp = read.stamp_ns(msg.header.stamp)
        record = self._partial.setdefault(stamp, {"_since": time.monotonic() if now_s is None else now_s})
        record[part] = msg
        if len(record) == len(PARTS) + 1:
            del self._partial[stamp]
            if self.segmentation is None:
                self._hold(stamp, record)
            else:
                self._score(record)

    def expire(self, now_s: Optional[float] = None) -> int:
        """Frames still missing a message after ``pair_timeout_s``: dropped and counted as unpaired."""
        horizon = (time.monotonic() if now_s is None else now_s) - self.pair_timeout_s
        expired = [s for s, record in self._partial.items() if record["_since"] < horizon]
        for stamp in expired:
            del self._partial[stamp]
        self.counts["unpaired"] += len(expired)
        return len(expired)

    def _hold(self, stamp: int, record: dict) -> None:
        self._held[stamp] = record
        if len(self._held) > self.held_limit:
            self._held.popitem(last=False)
            self.counts["unscored"] += 1
        self.counts["held"] = len(self._held)

    def _score(self, record: dict) -> None:
        """One complete frame into both metrics; a message that does not fit the label set is malformed."""
        try:
            n = len(self.segmentation.class_names)
            mask = read.class_mask(record["segmentation"], n)
            truth_mask = read.class_mask(record["ground_truth/segmentation"], n, self.ignore_label)
            if not self.det_names_fixed:
                self._learn_names(record["detections"], record["ground_truth/detections"])
            dets, truth = (read.detections(record[p], self.detection.class_names)
                           for p in ("detections", "ground_truth/detections"))
            if mask.shape != truth_mask.shape:
                raise ValueError(f"mask {mask.shape} and ground truth {truth_mask.shape} differ in size")
        except ValueError as exc:
            self.counts["malformed"] += 1
            self.last_error = str(exc)
            return
        self.segmentation.update(mask, truth_mask)
        self.detection.update(dets, truth)
        self.counts["paired"] += 1

    def _learn_names(self, *msgs) -> None:
        """Extend the detection label set with the class names these Detection2DArrays use."""
        known = list(self.detection.class_names)
        for msg in msgs:
            for det in msg.detections:
                if det.results:
                    name = max(det.results, key=lambda r: r.hypothesis.score).hypothesis.class_id
                    if name not in known:
                        known.append(name)
        # DetectionMetric keeps class ids per image and names them at compute(): a longer list keeps them valid
        self.detection.class_names = tuple(known)

    def results(self) -> dict[str, float]:
        """mIoU, pixel accuracy, mAP50, mAP50:95 and per-class IoU of the frames scored so far ({} before any)."""
        if not self.counts["paired"]:
            return {}
        seg, det = self.segmentation.compute(), self.detection.compute()
        return {"miou": seg.miou, "pixel_accuracy": seg.pixel_accuracy, "map50": det.map50,
                "map50_95": det.map50_95, **{f"iou_{k}": v for k, v in seg.per_class_iou().items()}}
