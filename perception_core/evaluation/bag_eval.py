"""``python -m perception_core evaluate --bag PATH``: the node's Pipeline on every image of a bag, offline.

Deterministic and without a ROS graph: each image message of the bag goes through the same
Pipeline the node runs (decode, letterbox, engine, undo the letterbox), and is scored against the
ground truth with its stamp where the bag has some. Every image message is accounted for: it is
either evaluated or listed as a decode error. Detections are kept down to a score of 0.01, as
mAP needs; latency is reported per stage whatever the bag holds.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
from tqdm import tqdm

from perception_core.codec import ImageDecodeError
from perception_core.evaluation.bags import BagFrame, ImageBag, bag_size_bytes
from perception_core.metrics.detection import DetectionMetric, DetectionResult
from perception_core.metrics.evaluate import SCORE_THRESHOLD_MAP, save_confusion_png
from perception_core.metrics.latency import summarize_ms
from perception_core.metrics.segmentation import SegmentationMetric
from perception_core.pipeline.pipeline import STAGES, Pipeline, PipelineResult
from perception_core.profiling import TOTAL
from perception_core.types import DET_CLASSES, SEG_CLASSES
from perception_core.visualize import draw_overlay

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "multitask.onnx"
MAX_DETECTIONS = 100
DISPLAY_SCORE = 0.3  # boxes drawn on overlays; scoring keeps everything down to SCORE_THRESHOLD_MAP
OVERLAY_HALF_WIDTH = 640  # each half of an overlay picture is scaled down to at most this width
ERRORS_LISTED = 20


class FrameGallery:
    """The ``size`` frames with the lowest key (per-frame mIoU, or the frame index), drawn as overlays.

    A frame is drawn only when it enters the gallery, so keeping the worst frames costs nothing
    for the others.
    """

    def __init__(self, size: int, pipeline: Pipeline) -> None:
        self.size = size
        self.pipeline = pipeline
        self._heap: list[tuple[float, int, dict]] = []  # (-key, index, entry): the root is the best kept frame

    def offer(self, key: Optional[float], index: int, frame: BagFrame, result: PipelineResult) -> None:
        if key is None or self.size == 0 or (len(self._heap) == self.size and key >= -self._heap[0][0]):
            return
        entry = {"index": index, "stamp_ns": frame.stamp_ns, "key": key, "picture": self._draw(frame, result)}
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, (-key, index, entry))
        else:
            heapq.heappushpop(self._heap, (-key, index, entry))

    def entries(self) -> list[dict]:
        """Kept frames, lowest key first."""
        return [entry for _, _, entry in sorted(self._heap, key=lambda item: (-item[0], item[1]))]

    def _draw(self, frame: BagFrame, result: PipelineResult) -> np.ndarray:
        p = self.pipeline
        shown = result.detections[result.detections.score >= DISPLAY_SCORE] if result.detections is not None else None
        halves = [("prediction", draw_overlay(result.image, result.class_mask, shown, p.seg_colors_bgr,
                                              p.det_classes or DET_CLASSES))]
        if frame.truth_mask is not None or frame.truth_detections is not None:
            truth = draw_overlay(result.image, frame.truth_mask, frame.truth_detections, p.seg_colors_bgr,
                                 p.det_classes or DET_CLASSES)
            halves.insert(0, ("ground truth", truth))
        pictures = []
        for label, picture in halves:
            scale = min(1.0, OVERLAY_HALF_WIDTH / picture.shape[1])
            if scale < 1.0:
                picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            cv2.putText(picture, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
            pictures.append(picture)
        return np.concatenate(pictures, axis=1)


def evaluate_bag(bag_path: Union[str, Path], model_path: Union[str, Path, None] = None, *,
                 image_topic: Optional[str] = None, threads: int = 2, report_dir: Union[str, Path, None] = None,
                 overlays: int = 4, progress: bool = True) -> dict:
    """Run the Pipeline on every image message of the bag; metrics, latency and (optionally) a report."""
    model_path = Path(model_path) if model_path else DEFAULT_MODEL
    pipeline = Pipeline.from_model_files([model_path], threads=threads, score_threshold=SCORE_THRESHOLD_MAP,
                                         max_detections=MAX_DETECTIONS)
    seg_classes, det_classes = pipeline.seg_classes or SEG_CLASSES, pipeline.det_classes or DET_CLASSES
    segmentation, detection = SegmentationMetric(seg_classes), DetectionMetric(det_classes)
    latency: dict[str, list[float]] = {stage: [] for stage in (*STAGES, TOTAL)}
    errors: list[dict] = []
    scored = {"segmentation": 0, "detections": 0}
    with ImageBag(bag_path, image_topic, det_classes=det_classes, num_seg_classes=len(seg_classes)) as bag:
        rank_by_iou = "mask" in bag.truth_topics and bool(pipeline.seg_classes)
        gallery = FrameGallery(overlays, pipeline)
        bag_info = {"path": str(bag.path), "storage": bag.storage, "size_bytes": bag_size_bytes(bag.path),
                    "duration_s": bag.duration_s, "image_topic": bag.image_topic, "image_type": bag.image_type,
                    "ground_truth_topics": dict(bag.truth_topics),
                    "topics": {c.topic: {"type": c.msgtype, "messages": c.msgcount} for c in bag.connections}}
        frames = bag.image_count
        for index, frame in enumerate(tqdm(bag.frames(), total=frames, desc=f"evaluate {bag.path.name}",
                                           unit="frame", disable=not progress)):
            try:
                result = pipeline.run(frame.image)
            except ImageDecodeError as exc:
                errors.append({"index": index, "stamp_ns": frame.stamp_ns, "error": str(exc)})
                continue
            for stage in STAGES:
                latency[stage].append(result.timings_ms[stage])
            latency[TOTAL].append(sum(result.timings_ms[stage] for stage in STAGES))
            frame_iou = None
            if frame.truth_mask is not None and result.class_mask is not None:
                segmentation.update(result.class_mask, frame.truth_mask)
                frame_iou = SegmentationMetric(seg_classes).update(result.class_mask, frame.truth_mask).compute().miou
                scored["segmentation"] += 1
            if frame.truth_detections is not None and result.detections is not None:
                detection.update(result.detections, frame.truth_detections)
                scored["detections"] += 1
            gallery.offer(frame_iou if rank_by_iou else float(index), index, frame, result)
    seg_result = segmentation.compute() if scored["segmentation"] else None
    det_result = detection.compute() if scored["detections"] else None
    results = {
        "bag": bag_info, "model": model_path.name, "engine": pipeline.engine_name, "precision": pipeline.precision,
        "threads": threads, "score_threshold": SCORE_THRESHOLD_MAP, "frames": frames,
        "evaluated": frames - len(errors), "decode_errors": len(errors),
        "decode_error_examples": errors[:ERRORS_LISTED],
        "scored_frames": scored, "miou": None, "pixel_accuracy": None, "iou": None,
        "map50": None, "map50_95": None, "ap50": None, "targets": None, "by_size": None,
        "latency_ms": {stage: summarize_ms(values).as_dict() for stage, values in latency.items()},
    }
    if seg_result is not None:
        results.update(seg_result.as_dict())
    if det_result is not None:
        results.update(det_result.as_dict())
    if report_dir is not None:
        results["report"] = str(write_report(Path(report_dir), results, seg_result, det_result, latency,
                                             gallery.entries(), rank_by_iou))
    return json_safe(results)


def json_safe(value):
    """NaN (a class absent from both sides) becomes None, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --- report --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(result: DetectionResult, path: Path, title: str) -> None:
    """One precision-recall curve per detection class at IoU 0.5, AP50 in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (recall, precision) in result.pr_curves50.items():
        ax.plot(recall, precision, label=f"{name} (AP50 {result.ap50_per_class[name]:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if result.pr_curves50:
        ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latency_histogram(samples_ms: dict[str, Sequence[float]], path: Path, title: str) -> None:
    """Histogram of the per-frame total with its p50/p95/p99, and the per-stage medians as bars."""
    plt = _pyplot()
    total = np.asarray(samples_ms[TOTAL], np.float64)
    fig, (hist_ax, bar_ax) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    hist_ax.hist(total, bins=min(50, max(5, total.size // 4)), color="tab:blue", alpha=0.8)
    for q, style in zip((50, 95, 99), ("-", "--", ":")):
        value = np.percentile(total, q)
        hist_ax.axvline(value, color="black", linestyle=style, label=f"p{q} {value:.2f} ms")
    hist_ax.set_xlabel("pipeline total per frame (ms)")
    hist_ax.set_ylabel("frames")
    hist_ax.legend()
    medians = [float(np.median(samples_ms[stage])) for stage in STAGES]
    bar_ax.barh(STAGES, medians, color="tab:orange")
    bar_ax.invert_yaxis()
    bar_ax.set_xlabel("p50 per stage (ms)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_report(out_dir: Path, results: dict, seg_result, det_result: Optional[DetectionResult],
                 latency: dict[str, list[float]], gallery: list[dict], ranked_by_iou: bool) -> Path:
    """``report.md`` plus confusion matrix, PR curves, latency histogram and overlay PNGs in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bag = results["bag"]
    name = Path(bag["path"]).name
    lines = [f"# Offline evaluation of `{name}`", "",
             "| | |", "|---|---|",
             f"| bag | `{bag['path']}` ({bag['storage']}, {bag['size_bytes'] / 2**20:.1f} MiB, "
             f"{bag['duration_s']:.2f} s) |",
             f"| camera | `{bag['image_topic']}` ({bag['image_type']}) |",
             f"| model | {results['model']} ({results['engine']}, {results['precision']}, "
             f"{results['threads']} threads) |",
             f"| frames | {results['frames']} image messages: {results['evaluated']} evaluated, "
             f"{results['decode_errors']} decode errors |",
             f"| scored | segmentation on {results['scored_frames']['segmentation']} frames, detections on "
             f"{results['scored_frames']['detections']} frames |", "",
             "## Topics", "", "| topic | type | messages |", "|---|---|---:|"]
    lines += [f"| `{topic}` | {t['type']} | {t['messages']} |" for topic, t in bag["topics"].items()]
    lines += ["", "## Accuracy", ""]
    if seg_result is None and det_result is None:
        lines.append("The bag has no ground truth topics for this camera: latency only.")
    if seg_result is not None:
        lines += [f"mIoU **{_fmt(results['miou'])}**, pixel accuracy {_fmt(results['pixel_accuracy'])}.", "",
                  "| class | IoU |", "|---|---:|"]
        lines += [f"| {cls} | {_fmt(iou)} |" for cls, iou in seg_result.per_class_iou().items()]
        save_confusion_png(seg_result.confusion, seg_result.class_names, out_dir / "confusion.png",
                           f"{name}: mIoU {seg_result.miou:.3f}")
        lines += ["", "![confusion matrix](confusion.png)", ""]
    if det_result is not None:
        lines += [f"mAP50 **{_fmt(results['map50'])}**, mAP50:95 {_fmt(results['map50_95'])} "
                  f"({det_result.targets} boxes; detections kept down to score {results['score_threshold']}).", "",
                  "| class | AP50 |", "|---|---:|"]
        lines += [f"| {cls} | {_fmt(ap)} |" for cls, ap in det_result.ap50_per_class.items()]
        lines += ["", "| object size (sqrt of box area, camera px) | boxes | recall@0.5 | AP50 |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {size} | {v['targets']} | {_fmt(v['recall50'])} | {_fmt(v['ap50'])} |"
                  for size, v in det_result.by_size.items()]
        plot_pr_curves(det_result, out_dir / "pr_curves.png", f"{name}: precision-recall at IoU 0.5")
        lines += ["", "![precision-recall curves](pr_curves.png)", ""]
    lines += ["## Latency (ms, pipeline stages as the node runs them)", "",
              "| stage | p50 | p95 | p99 | max |", "|---|---:|---:|---:|---:|"]
    for stage, s in results["latency_ms"].items():
        lines.append(f"| {stage} | {_fmt(s['p50_ms'])} | {_fmt(s['p95_ms'])} | {_fmt(s['p99_ms'])} | "
                     f"{_fmt(s['max_ms'])} |")
    if latency[TOTAL]:
        plot_latency_histogram(latency, out_dir / "latency_histogram.png",
                               f"{name}: {results['model']}, {len(latency[TOTAL])} frames")
        lines += ["", "![latency histogram](latency_histogram.png)"]
    lines += ["", "## Worst frames by mIoU (ground truth left, prediction right)" if ranked_by_iou
              else "## First frames (prediction)", ""]
    for rank, entry in enumerate(gallery, start=1):
        file_name = f"overlay_{rank}.png"
        cv2.imwrite(str(out_dir / file_name), entry["picture"])
        caption = f"frame {entry['index']}, stamp {entry['stamp_ns']}"
        if ranked_by_iou:
            caption += f", mIoU {entry['key']:.3f}"
        lines += [f"{caption}", "", f"![{caption}]({file_name})", ""]
    if results["decode_errors"]:
        lines += ["## Decode errors", ""]
        listed = results["decode_error_examples"]
        lines += [f"- frame {e['index']} (stamp {e['stamp_ns']}): {e['error']}" for e in listed]
        if results["decode_errors"] > len(listed):
            lines.append(f"- ... {results['decode_errors'] - len(listed)} more")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- command line --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m perception_core evaluate",
                                     description="Run the pipeline on every image of a rosbag2 bag, offline.")
    parser.add_argument("--bag", required=True, help="bag folder (mcap or sqlite3) or a .mcap/.db3 file")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="ONNX model with its .json sidecar")
    parser.add_argument("--topic", help="camera topic (default: /image, /image/compressed or the only camera)")
    parser.add_argument("--json", help="write the metrics here")
    parser.add_argument("--report", help="write report.md and its PNGs into this folder")
    parser.add_argument("--overlays", type=int, default=4, help="frames drawn in the report")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    results = evaluate_bag(args.bag, args.model, image_topic=args.topic, threads=args.threads,
                           report_dir=args.report, overlays=args.overlays)
    total = results["latency_ms"][TOTAL]
    print(f"{results['bag']['path']}: {results['frames']} frames ({results['decode_errors']} decode errors), "
          f"mIoU {_fmt(results['miou'])}, mAP50 {_fmt(results['map50'])}, mAP50:95 {_fmt(results['map50_95'])}, "
          f"latency p50 {_fmt(total['p50_ms'], 2)} p95 {_fmt(total['p95_ms'], 2)} p99 {_fmt(total['p99_ms'], 2)} ms")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if "report" in results:
        print(f"report: {results['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
