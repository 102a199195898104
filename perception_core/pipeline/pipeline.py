"""Pipeline: the one per-frame path shared by the node, the profiler, the benchmark and the evaluator.

It runs one model (the multitask network) or several on the same batch (the separate-model
baseline: seg_only then det_only) and times every stage with a StageTimer.

Detections: the pipeline returns every peak down to ``score_threshold``, the lowest score any of
its callers asks for (the node's publishing threshold; 0.01 for mAP), at most ``max_detections``.
A caller that shows fewer (an overlay) filters the result itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from perception_core.codec import EncodedImage
from perception_core.engines import load_engine
from perception_core.engines.base import Engine
from perception_core.model_spec import ModelSpec
from perception_core.pipeline import stages
from perception_core.pipeline.letterbox import LetterboxTransform
from perception_core.pipeline.timing import StageTimer
from perception_core.types import Detections

STAGES = ("decode", "preprocess", "infer", "postprocess_seg", "postprocess_det")
TOTAL = "total"  # the per-frame sum of STAGES, reported beside them


@dataclass(frozen=True)
class PipelineResult:
    """One frame's answer at camera resolution; a head the models lack is None."""

    image: np.ndarray  # (H, W, 3) uint8 BGR as decoded (a view of the input where possible)
    class_mask: Optional[np.ndarray]  # (H, W) uint8 class ids
    detections: Optional[Detections]  # camera pixels
    transform: LetterboxTransform
    timings_ms: dict[str, float]


class Pipeline:
    """decode -> preprocess -> infer -> postprocess_seg -> postprocess_det, each stage timed."""

    def __init__(self, models: Sequence[tuple[Engine, ModelSpec]], *, score_threshold: float = 0.3,
                 max_detections: int = 100, timer_capacity: int = 1000) -> None:
        if not models:
            raise ValueError("a pipeline needs at least one model")
        input_hw = {spec.input_hw for _, spec in models}
        if len(input_hw) != 1:
            raise ValueError(f"models of one pipeline must share an input size, got {sorted(input_hw)}")
        if not 0.0 <= score_threshold <= 1.0 or max_detections < 0:
            raise ValueError(f"score_threshold must be in [0, 1] and max_detections >= 0, got "
                             f"{score_threshold}, {max_detections}")
        self.models = list(models)
        self.input_hw = input_hw.pop()
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.timer = StageTimer(STAGES, timer_capacity)
        # The model input, reused frame after frame (engines copy or consume it within infer()).
        self._batch = np.empty((1, *self.input_hw, 3), np.uint8)
        specs = [spec for _, spec in models]
        seg_spec = next((s for s in specs if "class_map" in s.outputs), specs[0])
        det_spec = next((s for s in specs if "boxes" in s.outputs), specs[0])
        self.seg_classes = seg_spec.seg_classes if "class_map" in seg_spec.outputs else ()
        self.seg_colors_bgr = seg_spec.seg_colors_bgr
        self.det_classes = det_spec.det_classes if "boxes" in det_spec.outputs else ()
        # The label set of the models' sidecars (a bag read for this pipeline is labelled in it).
        self.spec = dataclasses.replace(seg_spec.dataset, det_classes=det_spec.det_classes)

    @classmethod
    def from_model_files(cls, paths: Sequence[Union[str, Path]], *, engine: str = "onnxruntime", threads: int = 2,
                         providers: Optional[Sequence[str]] = None, delegate: Optional[str] = None,
                         **kwargs) -> Pipeline:
        """Load and validate each model's sidecar, build its engine (see engines.load_engine), and warm it up."""
        models = []
        for path in paths:
            spec = ModelSpec.load(path)
            try:
                runner = load_engine(spec, engine=engine, threads=threads, providers=providers, delegate=delegate)
                runner.warmup()
            except ValueError:
                raise
            except Exception as exc:  # ONNX Runtime's errors (InvalidArgument, Fail, ...) derive from Exception
                raise ValueError(f"cannot load model {spec.model_path} with {engine}: {exc}") from exc
            models.append((runner, spec))
        return cls(models, **kwargs)

    @property
    def engine_name(self) -> str:
        return "+".join(engine.name for engine, _ in self.models)

    @property
    def precision(self) -> str:
        return "+".join(sorted({engine.precision for engine, _ in self.models}))

    @property
    def model_names(self) -> str:
        return "+".join(spec.name for _, spec in self.models)

    def run(self, encoded: EncodedImage) -> PipelineResult:
        """Decode a camera payload, then :meth:`run_bgr`. ImageDecodeError leaves the timer untouched."""
        start = self.timer.start()
        bgr = stages.decode(encoded)
        return self.run_bgr(bgr, start)

    def run_bgr(self, bgr: np.ndarray, decode_started: Optional[float] = None) -> PipelineResult:
        timer = self.timer
        t = timer.start()
        if decode_started is not None:
            timer.record("decode", (t - decode_started) * 1e3)
        batch, transform = self._batch, stages.preprocess_into(bgr, self._batch)
        t = timer.lap("preprocess", t)
        outputs: dict[str, np.ndarray] = {}
        for engine, spec in self.models:
            outputs.update(stages.infer(engine, spec.input_name, batch))
        t = timer.lap("infer", t)
        mask = stages.postprocess_seg(outputs["class_map"], transform) if "class_map" in outputs else None
        t = timer.lap("postprocess_seg", t)
        detections = None
        if "boxes" in outputs:
            detections = stages.postprocess_det(outputs["boxes"], outputs["scores"], outputs["classes"], transform,
                                                self.score_threshold, self.max_detections)
        timer.lap("postprocess_det", t)
        timings = dict(timer.last_ms)
        if decode_started is None:
            timings["decode"] = 0.0
        return PipelineResult(bgr, mask, detections, transform, timings)
