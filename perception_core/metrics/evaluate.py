"""``python -m perception_core evaluate``: bundled ONNX models on the simulator's validation split.

Camera frames (640x480) -> the node's Pipeline (letterbox -> engine -> undo the letterbox) -> metrics at camera
resolution, exactly the path the node takes. Several models run on the same frames, interleaved
frame by frame, so their latencies are comparable on this shared machine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from perception_core.engines import load_engine
from perception_core.metrics.detection import DetectionMetric
from perception_core.metrics.latency import summarize_ms
from perception_core.metrics.segmentation import SegmentationMetric
from perception_core.model_spec import ModelSpec
from perception_core.pipeline.pipeline import Pipeline
from perception_core.types import Detections
from perception_core.visualize import draw_overlay

SCORE_THRESHOLD_MAP = 0.01  # keep low-score peaks for mAP; the node thresholds higher


def save_confusion_png(confusion: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.colorbar(im)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(model_paths: Sequence[str], frames: int = 500, threads: int = 2, out_dir: Optional[str] = None,
             overlays: int = 3, warmup: int = 5) -> dict:
    """Metrics and latency per model on the first ``frames`` validation frames; PNGs into ``out_dir``."""
    from perception_core.datasets.simulator import simulator_frames
    from perception_core.sim import VALIDATION_SEED

    specs = [ModelSpec.load(p) for p in model_paths]
    # The node's own Pipeline (letterbox -> engine -> undo the letterbox), keeping every peak for mAP.
    pipelines = [Pipeline([(load_engine(spec, threads=threads), spec)], score_threshold=SCORE_THRESHOLD_MAP,
                          max_detections=spec.top_k) for spec in specs]
    data = simulator_frames(VALIDATION_SEED, frames)
    seg = [SegmentationMetric(s.seg_classes) for s in specs]
    det = [DetectionMetric(s.det_classes) for s in specs]
    latency = [[] for _ in specs]
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for pipeline in pipelines:
        pipeline.models[0][0].warmup(warmup)
    for i in range(len(data)):
        image = np.asarray(data.images[i])
        target_mask = np.asarray(data.masks[i])
        boxes, classes = data.frame_boxes(i)
        target = Detections(np.asarray(boxes, np.float32), np.asarray(classes, np.int32),
                            np.ones(len(boxes), np.float32))
        for k, (spec, pipeline) in enumerate(zip(specs, pipelines)):
            result = pipeline.run_bgr(image)
            latency[k].append(result.timings_ms["infer"])
            if result.class_mask is not None:
                seg[k].update(result.class_mask, target_mask)
            if result.detections is not None:
                det[k].update(result.detections, target)
            if out and i < overlays:
                shown = result.detections[result.detections.score >= 0.3] if result.detections is not None else None
                picture = draw_overlay(image, result.class_mask, shown, spec.seg_colors_bgr, spec.det_classes)
                cv2.imwrite(str(out / f"{spec.model_path.stem}_overlay_{i}.png"), picture)
    results = {}
    for k, spec in enumerate(specs):
        r = {"model": spec.model_path.name, "precision": spec.precision, "frames": len(data),
             "miou": None, "map50": None, "map50_95": None,
             "latency_ms": summarize_ms(latency[k]).as_dict(), "threads": threads}
        if "class_map" in spec.outputs:
            s = seg[k].compute()
            r.update(s.as_dict())
            if out:
                save_confusion_png(s.confusion, s.class_names, out / f"{spec.model_path.stem}_confusion.png",
                                   f"{spec.model_path.name}: mIoU {s.miou:.3f} ({len(data)} frames)")
        if "boxes" in spec.outputs:
            r.update(det[k].compute().as_dict())
        results[spec.model_path.name] = r
    return results


def main(args) -> int:
    results = evaluate(args.model, frames=args.sim, threads=args.threads, out_dir=args.out_dir,
                       overlays=args.overlays)
    report = next(iter(results.values())) if len(results) == 1 else {"frames": args.sim, "models": results}
    for name, r in results.items():
        fmt = lambda v: "  -  " if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{name:28s} mIoU {fmt(r['miou'])}  mAP50 {fmt(r['map50'])}  mAP50:95 {fmt(r['map50_95'])}  "
              f"latency p50 {r['latency_ms']['p50_ms']:.2f} ms p95 {r['latency_ms']['p95_ms']:.2f} "
              f"p99 {r['latency_ms']['p99_ms']:.2f}  ({r['frames']} frames)")
        if r.get("by_size"):
            print("    recall@0.5 by object size: " + ", ".join(
                f"{k} {fmt(v['recall50'])} (n={v['targets']})" for k, v in r["by_size"].items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0
