"""Controlled timing of the pipeline: same frames, threads, warm-up and repeats for every configuration.

Two views of the same Pipeline, both on camera payloads read from a FrameSource (or captured live
by the stage profiler node):
- :func:`profile_stages` times each stage on its own over the whole frame set (inputs prepared
  beforehand), so one stage's cache effects do not leak into the next;
- :func:`time_pipelines` runs whole frames through several pipelines interleaved frame by frame,
  so on a shared, noisy machine every configuration sees the same background load.
Results print as a table and are written as JSON, CSV and a PNG chart.
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from perception_core.codec import EncodedImage, array_to_raw, encode_compressed
from perception_core.datasets import FrameSource
from perception_core.pipeline import stages
from perception_core.pipeline.pipeline import STAGES, TOTAL, Pipeline
from perception_core.pipeline.timing import LatencySummary, summarize_ms
from perception_core.plotting import pyplot, save


def encode_frame(bgr: np.ndarray, encoding: str = "bgr8") -> EncodedImage:
    """A BGR frame as a camera would send it: raw ``bgr8`` or ``jpeg``."""
    if encoding == "jpeg":
        return EncodedImage(encode_compressed(bgr, "jpeg", 90), compressed_format="jpeg")
    if encoding != "bgr8":
        raise ValueError(f"frame sets are bgr8 or jpeg, got {encoding!r}")
    data, step = array_to_raw(bgr, "bgr8")
    return EncodedImage(bytes(data), "bgr8", bgr.shape[1], bgr.shape[0], step)


def camera_payloads(source: FrameSource, count: Optional[int] = None, encoding: str = "bgr8") -> list[EncodedImage]:
    """The first ``count`` frames of ``source`` as the camera sends them: payloads it keeps (a bag's) as they
    are, decoded images encoded as ``encoding``."""
    return [s.image if isinstance(s.image, EncodedImage) else encode_frame(s.image, encoding)
            for s in itertools.islice(source, count)]


def _time_each(fn: Callable, items: Sequence, warmup: int, repeats: int) -> list[float]:
    for item in items[:warmup]:
        fn(item)
    samples = []
    for _ in range(repeats):
        for item in items:
            start = time.perf_counter()
            fn(item)
            samples.append((time.perf_counter() - start) * 1e3)
    return samples


def profile_stages(pipeline: Pipeline, frames: Sequence[EncodedImage], warmup: int = 5,
                   repeats: int = 3) -> dict[str, LatencySummary]:
    """Each stage timed in isolation on every frame; ``total`` is the per-frame sum of the isolated stage times."""
    decoded = [stages.decode(f) for f in frames]
    prepared = [stages.preprocess(image, pipeline.input_hw) for image in decoded]

    def infer(item):
        outputs = {}
        for engine, spec in pipeline.models:
            outputs.update(stages.infer(engine, spec.input_name, item[0]))
        return outputs

    outputs = [infer(item) for item in prepared]
    with_transform = [(out, t) for out, (_, t) in zip(outputs, prepared)]
    samples = {
        "decode": _time_each(stages.decode, frames, warmup, repeats),
        "preprocess": _time_each(lambda image: stages.preprocess(image, pipeline.input_hw), decoded, warmup, repeats),
        "infer": _time_each(infer, prepared, warmup, repeats),
    }
    if "class_map" in outputs[0]:
        samples["postprocess_seg"] = _time_each(lambda o: stages.postprocess_seg(o[0]["class_map"], o[1]),
                                                with_transform, warmup, repeats)
    if "boxes" in outputs[0]:
        samples["postprocess_det"] = _time_each(
            lambda o: stages.postprocess_det(o[0]["boxes"], o[0]["scores"], o[0]["classes"], o[1],
                                             pipeline.score_threshold, pipeline.max_detections),
            with_transform, warmup, repeats)
    per_frame_total = np.sum([np.asarray(v) for v in samples.values()], axis=0)
    summaries = {stage: summarize_ms(v) for stage, v in samples.items()}
    summaries[TOTAL] = summarize_ms(per_frame_total)
    return summaries


def time_pipelines(pipelines: dict[str, Pipeline], frames: Sequence[EncodedImage], warmup: int = 5,
                   repeats: int = 1) -> dict[str, dict[str, np.ndarray]]:
    """Whole frames through every pipeline, interleaved frame by frame; per-stage and total samples (ms)."""
    for pipeline in pipelines.values():
        for encoded in frames[:warmup]:
            pipeline.run(encoded)
    samples = {name: {stage: [] for stage in (*STAGES, TOTAL)} for name in pipelines}
    for _ in range(repeats):
        for encoded in frames:
            for name, pipeline in pipelines.items():
                timings = pipeline.run(encoded).timings_ms
                for stage in STAGES:
                    samples[name][stage].append(timings[stage])
                samples[name][TOTAL].append(sum(timings[s] for s in STAGES))
    return {name: {stage: np.asarray(v) for stage, v in per.items()} for name, per in samples.items()}


def summarize_samples(samples: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, LatencySummary]]:
    return {name: {stage: summarize_ms(v) for stage, v in per.items()} for name, per in samples.items()}


def format_table(results: dict[str, dict[str, LatencySummary]]) -> str:
    """Rows: configuration x stage; columns: p50 / p95 / p99 in ms."""
    lines = [f"{'configuration':<26}{'stage':<17}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'n':>7}"]
    for name, per in results.items():
        for stage, s in per.items():
            lines.append(f"{name:<26}{stage:<17}{s.p50_ms:>9.3f}{s.p95_ms:>9.3f}{s.p99_ms:>9.3f}{s.count:>7}")
    return "\n".join(lines)


def write_stage_timings(results: dict[str, dict[str, LatencySummary]], out_dir: Path, title: str,
                        meta: Optional[dict] = None) -> dict[str, Path]:
    """Write ``stage_timings.json``, ``.csv`` and ``.png`` (stacked p50 per stage) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"stage_timings.{kind}" for kind in ("json", "csv", "png")}
    paths["json"].write_text(json.dumps({"title": title, **(meta or {}), "results": {
        name: {stage: s.as_dict() for stage, s in per.items()} for name, per in results.items()}}, indent=1))
    with paths["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "stage", "count", "p50_ms", "p95_ms", "p99_ms", "max_ms"])
        for name, per in results.items():
            for stage, s in per.items():
                writer.writerow([name, stage, s.count, f"{s.p50_ms:.4f}", f"{s.p95_ms:.4f}", f"{s.p99_ms:.4f}",
                                 f"{s.max_ms:.4f}"])
    plot_stage_bars(results, paths["png"], title)
    return paths


def plot_stage_bars(results: dict[str, dict[str, LatencySummary]], path: Path, title: str) -> None:
    """Horizontal bars, one per configuration, split into the stages' p50 (ms); p95 of the total as a tick."""
    plt = pyplot()
    names = list(results)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * len(names)))
    left = np.zeros(len(names))
    for stage in STAGES:
        widths = np.array([results[n][stage].p50_ms if stage in results[n] else 0.0 for n in names])
        widths = np.nan_to_num(widths)
        ax.barh(names, widths, left=left, label=stage)
        left += widths
    totals95 = [results[n][TOTAL].p95_ms if TOTAL in results[n] else np.nan for n in names]
    ax.scatter(totals95, names, marker="|", s=300, color="black", label="total p95", zorder=3)
    ax.set_xlabel("milliseconds per frame (p50 per stage)")
    ax.set_title(title, fontsize=10)
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    save(fig, path)
