"""Detection metric: COCO mAP through pycocotools (not hand-written), update/reset/compute."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from perception_core.types import Detections

# Object size bins by sqrt(box area) in pixels of the frame the boxes are in: where detectors lose recall.
SIZE_BINS = {"<8px": (0, 8), "8-16px": (8, 16), "16-32px": (16, 32), "32-64px": (32, 64), ">=64px": (64, 1e5)}


@dataclass(frozen=True)
class DetectionResult:
    map50: float
    map50_95: float
    ap50_per_class: dict[str, float]
    images: int
    targets: int
    # class -> (recall, precision) at IoU 0.5 on COCO's 101 recall points; only classes with targets
    pr_curves50: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, compare=False)
    # SIZE_BINS name -> {"targets", "ap50", "recall50"} (COCO area ranges, up to 100 detections per image)
    by_size: dict[str, dict] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        return {"map50": self.map50, "map50_95": self.map50_95, "ap50": self.ap50_per_class,
                "images": self.images, "targets": self.targets, "by_size": self.by_size}


class DetectionMetric:
    """Accumulates per-image predictions and targets (``Detections``, same pixel frame), then COCOeval bbox."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = tuple(class_names)
        self.reset()

    def reset(self) -> None:
        self._predictions: list[Detections] = []
        self._targets: list[Detections] = []

    def update(self, predictions: Union[Detections, list[Detections]],
               targets: Union[Detections, list[Detections]]) -> DetectionMetric:
        if isinstance(predictions, Detections):
            predictions, targets = [predictions], [targets]
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
        self._predictions.extend(predictions)
        self._targets.extend(targets)
        return self

    def merge(self, other: DetectionMetric) -> DetectionMetric:
        """Append ``other``'s frames after these (same classes). COCO's AP is not a sum of per-part APs: the
        frames are gathered, so that ``compute`` ranks all of them at once."""
        if other.class_names != self.class_names:
            raise ValueError(f"cannot merge metrics of classes {other.class_names} into {self.class_names}")
        self._predictions.extend(other._predictions)
        self._targets.extend(other._targets)
        return self

    def compute(self) -> DetectionResult:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        images, annotations, results = [], [], []
        for image_id, (pred, target) in enumerate(zip(self._predictions, self._targets), start=1):
            images.append({"id": image_id})
            for box, cls in zip(target.xyxy.tolist(), target.class_id.tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                    "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
            for box, cls, score in zip(pred.xyxy.tolist(), pred.class_id.tolist(), pred.score.tolist()):
                results.append({"image_id": image_id, "category_id": cls + 1, "score": score,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
        if not annotations or not results:
            return DetectionResult(0.0, 0.0, dict.fromkeys(self.class_names, 0.0), len(images), len(annotations))
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = {"images": images, "annotations": annotations,
                          "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]}
            gt.createIndex()
            evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
            # COCO's four ranges first (summarize reads them by label), then this project's size bins
            evaluator.params.areaRng += [[lo * lo, hi * hi] for lo, hi in SIZE_BINS.values()]
            evaluator.params.areaRngLbl += list(SIZE_BINS)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        precision = evaluator.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all recalls, classes, all areas, 100 dets
        ap50 = {}
        for k, name in enumerate(self.class_names):
            p = precision[:, k]
            ap50[name] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
        return DetectionResult(max(0.0, float(evaluator.stats[1])), max(0.0, float(evaluator.stats[0])), ap50,
                               len(images), len(annotations),
                               pr_curves_at_50(precision, evaluator.params.recThrs, self.class_names),
                               by_size(evaluator, annotations))


def by_size(evaluator, annotations: list[dict]) -> dict[str, dict]:
    """AP50 and recall at IoU 0.5 per SIZE_BINS range from an accumulated COCOeval (classes averaged)."""
    labels = evaluator.params.areaRngLbl
    out = {}
    for name, (lo, hi) in SIZE_BINS.items():
        a = labels.index(name)
        recall = evaluator.eval["recall"][0, :, a, -1]  # IoU 0.5, classes, this range, 100 detections
        precision = evaluator.eval["precision"][0, :, :, a, -1]
        targets = sum(lo * lo <= t["area"] < hi * hi for t in annotations)
        out[name] = {"targets": int(targets),
                     "recall50": float(recall[recall > -1].mean()) if (recall > -1).any() else None,
                     "ap50": float(precision[precision > -1].mean()) if (precision > -1).any() else None}
    return out


def pr_curves_at_50(precision: np.ndarray, recall_points: np.ndarray,
                    class_names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """COCOeval's (recall points, classes) precision at IoU 0.5 -> class -> (recall, precision) curves.

    COCO marks classes without targets with -1; those get no curve.
    """
    curves = {}
    for k, name in enumerate(class_names):
        valid = precision[:, k] > -1
        if valid.any():
            curves[name] = (np.asarray(recall_points)[valid].copy(), precision[valid, k].copy())
    return curves
