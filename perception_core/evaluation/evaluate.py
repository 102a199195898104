"""The one evaluation path: the node's Pipeline over any FrameSource -> EvaluationResult.

``evaluate --sim``, ``evaluate --bag``, the benchmark's accuracy columns, the stage profiler and
the sidecar metrics of export and quantize all score frames here: decode (where the source keeps
the camera's payload), letterbox, engine, undo the letterbox, then the metrics at camera
resolution against the sample's ground truth. A frame that fails to decode is counted and
listed, never lost. Several pipelines can run on the same frames interleaved frame by frame, so
their latencies are comparable on a shared machine; each frame is scored by one function.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
from tqdm import tqdm

from perception_core.codec import EncodedImage, ImageDecodeError
from perception_core.datasets import DatasetSpec, FrameSource, Sample
from perception_core.metrics.detection import DetectionMetric, DetectionResult
from perception_core.metrics.segmentation import SegmentationMetric, SegmentationResult, iou_of
from perception_core.pipeline.pipeline import STAGES, TOTAL, Pipeline, PipelineResult
from perception_core.pipeline.timing import LatencySummary, summarize_ms
from perception_core.visualize import draw_overlay

SCORE_FLOOR = 0.01  # mAP needs the whole precision/recall curve: evaluated pipelines keep every peak above this
MAX_DETECTIONS = 100  # COCO's maxDets
DISPLAY_SCORE = 0.3  # boxes drawn on the worst-frame pictures
OVERLAY_HALF_WIDTH = 640  # each half of a worst-frame picture is scaled down to at most this width
ERRORS_LISTED = 20


@dataclass(frozen=True)
class EvaluationResult:
    """One pipeline on one source. A head the pipeline lacks, or truth the source lacks, leaves its result None."""

    model: str
    engine: str
    precision: str
    source: str
    frames: int
    score_floor: float
    scored_frames: dict[str, int]  # frames scored per task
    segmentation: Optional[SegmentationResult]
    detection: Optional[DetectionResult]
    latency_samples_ms: dict[str, np.ndarray]  # per stage and TOTAL, one sample per decoded frame
    decode_errors: list[dict]  # {"index", "key", "stamp_ns", "error"}
    truth_errors: list[dict]  # ground truth the source could not read in its spec, {"key", "stamp_ns", "error"}
    worst_frames: list[dict]  # {"index", "key", "stamp_ns", "miou" (None: unlabelled), "picture"}, worst first
    # The metrics' accumulated state, so that results of disjoint frames merge exactly (merge_results)
    segmentation_state: Optional[SegmentationMetric] = field(default=None, repr=False, compare=False)
    detection_state: Optional[DetectionMetric] = field(default=None, repr=False, compare=False)

    @property
    def evaluated(self) -> int:
        return self.frames - len(self.decode_errors)

    def latency_ms(self) -> dict[str, LatencySummary]:
        return {stage: summarize_ms(samples) for stage, samples in self.latency_samples_ms.items()}

    def as_dict(self) -> dict:
        """The JSON form (NaN, a class absent from both sides, becomes null)."""
        out = {"model": self.model, "engine": self.engine, "precision": self.precision, "source": self.source,
               "frames": self.frames, "evaluated": self.evaluated, "decode_errors": len(self.decode_errors),
               "decode_error_examples": self.decode_errors[:ERRORS_LISTED], "truth_errors": len(self.truth_errors),
               "truth_error_examples": self.truth_errors[:ERRORS_LISTED], "score_threshold": self.score_floor,
               "scored_frames": self.scored_frames, "miou": None, "pixel_accuracy": None, "iou": None,
               "map50": None, "map50_95": None, "ap50": None, "targets": None, "by_size": None,
               "latency_ms": {stage: s.as_dict() for stage, s in self.latency_ms().items()}}
        if self.segmentation is not None:
            out.update(self.segmentation.as_dict())
        if self.detection is not None:
            out.update(self.detection.as_dict())
        return json_safe(out)


def merge_results(results: Sequence[EvaluationResult], source: str) -> EvaluationResult:
    """One result of the frames of ``results`` taken one after another, as if one pass had scored them in that order.

    Confusion matrices sum and detections are gathered so that mAP is computed once over all frames:
    the metrics equal those of one :func:`evaluate` over the concatenated source. Frame indices of
    errors and worst frames are shifted to the concatenation's; the worst frames are re-ranked.
    """
    if not results:
        raise ValueError("no results to merge")
    first = results[0]
    identity = lambda r: (r.model, r.engine, r.precision, r.score_floor)  # noqa: E731
    if any(identity(r) != identity(first) for r in results):
        raise ValueError(f"cannot merge results of different pipelines: {sorted({identity(r) for r in results})}")
    segmentation = detection = None
    offsets = np.cumsum([0] + [r.frames for r in results[:-1]]).tolist()
    for r in results:
        if r.segmentation_state is not None:
            segmentation = (copy.deepcopy(r.segmentation_state) if segmentation is None
                            else segmentation.merge(r.segmentation_state))
        if r.detection_state is not None:
            detection = copy.deepcopy(r.detection_state) if detection is None else detection.merge(r.detection_state)
    shifted = lambda entries, offset: [{**e, "index": e["index"] + offset} for e in entries]  # noqa: E731
    scored = {task: sum(r.scored_frames[task] for r in results) for task in first.scored_frames}
    worst = sorted((e for r, offset in zip(results, offsets) for e in shifted(r.worst_frames, offset)),
                   key=lambda e: (e["miou"] is None, e["miou"] if e["miou"] is not None else e["index"]))
    return EvaluationResult(
        model=first.model, engine=first.engine, precision=first.precision, source=source,
        frames=sum(r.frames for r in results), score_floor=first.score_floor, scored_frames=scored,
        segmentation=segmentation.compute() if scored["segmentation"] else None,
        detection=detection.compute() if scored["detection"] else None,
        latency_samples_ms={stage: np.concatenate([r.latency_samples_ms[stage] for r in results])
                            for stage in first.latency_samples_ms},
        decode_errors=[e for r, offset in zip(results, offsets) for e in shifted(r.decode_errors, offset)],
        truth_errors=[e for r in results for e in r.truth_errors],
        worst_frames=worst[:max(len(r.worst_frames) for r in results)],
        segmentation_state=segmentation, detection_state=detection)


def json_safe(value):
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def evaluation_pipelines(model_paths: Sequence[Union[str, Path]], threads: int = 2,
                         **engine_options) -> dict[str, Pipeline]:
    """One Pipeline per model file (keyed by file name), keeping every detection down to SCORE_FLOOR."""
    return {Path(path).name: Pipeline.from_model_files([path], threads=threads, score_threshold=SCORE_FLOOR,
                                                       max_detections=MAX_DETECTIONS, **engine_options)
            for path in model_paths}


def evaluate(pipeline: Pipeline, source: FrameSource, *, count: Optional[int] = None, overlays: int = 0,
             progress: bool = False) -> EvaluationResult:
    """Score ``pipeline`` on the first ``count`` (default: all) samples of ``source``; draw the ``overlays`` worst."""
    return evaluate_interleaved({"": pipeline}, source, count=count, overlays=overlays, progress=progress)[""]


def evaluate_interleaved(pipelines: Mapping[str, Pipeline], source: FrameSource, *, count: Optional[int] = None,
                         overlays: int = 0, progress: bool = False) -> dict[str, EvaluationResult]:
    """:func:`evaluate` for several pipelines on the same frames, frame by frame (comparable latency)."""
    scorers = {name: FrameScorer(pipeline, source.spec, overlays) for name, pipeline in pipelines.items()}
    frames = len(source) if count is None else min(count, len(source))
    samples = itertools.islice(source, frames)
    for index, sample in enumerate(tqdm(samples, total=frames, desc=f"evaluate {source.name}", unit="frame",
                                        disable=not progress)):
        for scorer in scorers.values():
            scorer.score(index, sample)
    truth_errors = list(getattr(source, "truth_errors", ()))  # sources that read labels (bags) count the bad ones
    return {name: scorer.result(source.name, frames, truth_errors) for name, scorer in scorers.items()}


def check_labels(pipeline: Pipeline, spec: DatasetSpec) -> None:
    """Scores mean something only if the pipeline's class ids are the source's.

    A source with no classes for a head (a segmentation-only validation set) leaves that head unscored.
    """
    for head, predicted, labelled in (("segmentation", pipeline.seg_classes, spec.seg_classes),
                                      ("detection", pipeline.det_classes, spec.det_classes)):
        if predicted and labelled and tuple(predicted) != tuple(labelled):
            raise ValueError(f"{pipeline.model_names} predicts {head} classes {list(predicted)} but the frames are "
                             f"labelled in {list(labelled)} ({spec.name or 'unnamed spec'})")


class FrameScorer:
    """Metrics, per-stage latency, decode errors and worst frames of one pipeline, one frame at a time."""

    def __init__(self, pipeline: Pipeline, spec: DatasetSpec, overlays: int) -> None:
        check_labels(pipeline, spec)
        self.pipeline = pipeline
        scored = lambda predicted, labelled: bool(predicted) and bool(labelled)  # noqa: E731
        self.segmentation = (SegmentationMetric(spec.seg_classes, spec.ignore_label)
                             if scored(pipeline.seg_classes, spec.seg_classes) else None)
        self.detection = DetectionMetric(spec.det_classes) if scored(pipeline.det_classes, spec.det_classes) else None
        self.scored = {"segmentation": 0, "detection": 0}
        self.latency: dict[str, list[float]] = {stage: [] for stage in (*STAGES, TOTAL)}
        self.decode_errors: list[dict] = []
        self.gallery = FrameGallery(overlays, spec)

    def score(self, index: int, sample: Sample) -> None:
        try:
            result = (self.pipeline.run(sample.image) if isinstance(sample.image, EncodedImage)
                      else self.pipeline.run_bgr(sample.image))
        except ImageDecodeError as exc:
            self.decode_errors.append({"index": index, "key": sample.key, "stamp_ns": sample.stamp_ns,
                                       "error": str(exc)})
            return
        for stage in STAGES:
            self.latency[stage].append(result.timings_ms[stage])
        self.latency[TOTAL].append(sum(result.timings_ms[stage] for stage in STAGES))
        frame_miou = None
        if self.segmentation is not None and sample.class_mask is not None:
            before = self.segmentation.confusion.copy()
            self.segmentation.update(result.class_mask, sample.class_mask)
            frame_miou = iou_of(self.segmentation.confusion - before)[1]
            self.scored["segmentation"] += 1
        if self.detection is not None and sample.detections is not None:
            self.detection.update(result.detections, sample.detections)
            self.scored["detection"] += 1
        self.gallery.offer(frame_miou, index, sample, result)

    def result(self, source: str, frames: int, truth_errors: list[dict]) -> EvaluationResult:
        p = self.pipeline
        return EvaluationResult(
            model=p.model_names, engine=p.engine_name, precision=p.precision, source=source, frames=frames,
            score_floor=p.score_threshold, scored_frames=dict(self.scored),
            segmentation=self.segmentation.compute() if self.scored["segmentation"] else None,
            detection=self.detection.compute() if self.scored["detection"] else None,
            latency_samples_ms={stage: np.asarray(v, np.float64) for stage, v in self.latency.items()},
            decode_errors=self.decode_errors, truth_errors=truth_errors, worst_frames=self.gallery.entries(),
            segmentation_state=self.segmentation, detection_state=self.detection)


class FrameGallery:
    """The ``size`` frames with the lowest mIoU (then unlabelled frames, first ones first), drawn as pictures.

    A frame is drawn only when it enters the gallery, so keeping the worst frames costs nothing for
    the others.
    """

    def __init__(self, size: int, spec: DatasetSpec) -> None:
        self.size = size
        self.spec = spec
        self._kept: list[tuple[tuple[int, float], int, dict]] = []  # (rank, index, entry), worst first

    def offer(self, miou: Optional[float], index: int, sample: Sample, result: PipelineResult) -> None:
        rank = (0, miou) if miou is not None else (1, float(index))
        if self.size == 0 or (len(self._kept) == self.size and rank >= self._kept[-1][0]):
            return
        entry = {"index": index, "key": sample.key, "stamp_ns": sample.stamp_ns, "miou": miou,
                 "picture": self._draw(sample, result)}
        bisect.insort(self._kept, (rank, index, entry))  # indices are unique: entries are never compared
        del self._kept[self.size:]

    def entries(self) -> list[dict]:
        """Kept frames, worst first."""
        return [entry for _, _, entry in self._kept]

    def _draw(self, sample: Sample, result: PipelineResult) -> np.ndarray:
        colors, names = self.spec.seg_colors_bgr, self.spec.det_classes
        shown = result.detections[result.detections.score >= DISPLAY_SCORE] if result.detections is not None else None
        halves = [("prediction", draw_overlay(result.image, result.class_mask, shown, colors, names))]
        if sample.tasks:
            halves.insert(0, ("ground truth", draw_overlay(result.image, sample.class_mask, sample.detections,
                                                           colors, names)))
        pictures = []
        for label, picture in halves:
            scale = min(1.0, OVERLAY_HALF_WIDTH / picture.shape[1])
            if scale < 1.0:
                picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            cv2.putText(picture, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
            pictures.append(picture)
        return np.concatenate(pictures, axis=1)
