"""The one report writer: EvaluationResults -> JSON, ``report.md`` and its PNGs (confusion matrix,
precision-recall curves, latency histogram, worst frames), for any FrameSource."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from perception_core.evaluation.evaluate import EvaluationResult
from perception_core.metrics.detection import DetectionResult
from perception_core.pipeline.pipeline import STAGES, TOTAL
from perception_core.pipeline.timing import summarize_ms
from perception_core.plotting import pyplot, save


def results_json(results: Mapping[str, EvaluationResult], source_info: dict, **extra) -> dict:
    """One result: its fields; several: ``{"frames", "source", "models": {name: fields}}``. ``extra`` joins each."""
    per_model = {name: {**r.as_dict(), **extra} for name, r in results.items()}
    if len(per_model) == 1:
        return {**next(iter(per_model.values())), "source_info": source_info}
    return {"frames": next(iter(results.values())).frames, "source_info": source_info, "models": per_model}


def write_json(path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def fmt(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def summary_line(name: str, result: EvaluationResult) -> str:
    """One line per model for the terminal: accuracy, total latency percentiles, frames and errors."""
    r, total = result.as_dict(), result.latency_ms()[TOTAL]
    line = (f"{name:28s} mIoU {fmt(r['miou'])}  mAP50 {fmt(r['map50'])}  mAP50:95 {fmt(r['map50_95'])}  "
            f"latency p50 {fmt(total.p50_ms, 2)} p95 {fmt(total.p95_ms, 2)} p99 {fmt(total.p99_ms, 2)} ms  "
            f"({r['frames']} frames, {r['decode_errors']} decode errors, {r['truth_errors']} truth errors)")
    if r["by_size"]:
        line += "\n    recall@0.5 by object size: " + ", ".join(
            f"{k} {fmt(v['recall50'])} (n={v['targets']})" for k, v in r["by_size"].items())
    return line


def write_report(out_dir, results: Mapping[str, EvaluationResult], source_info: dict, **extra) -> Path:
    """``evaluation.json``, ``report.md`` and the PNGs in ``out_dir``; file names carry the model when several."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "evaluation.json", results_json(results, source_info, **extra))
    first = next(iter(results.values()))
    lines = [f"# Evaluation on {first.source}", "", "| | |", "|---|---|", *source_rows(source_info),
             f"| frames | {first.frames} |"]
    if extra:
        lines += [f"| {k} | {v} |" for k, v in extra.items()]
    if "topics" in source_info:
        lines += ["", "## Topics", "", "| topic | type | messages |", "|---|---:|---:|"]
        lines += [f"| `{topic}` | {t['type']} | {t['messages']} |" for topic, t in source_info["topics"].items()]
    for name, result in results.items():
        prefix = f"{Path(name).stem}_" if len(results) > 1 else ""
        lines += model_section(out_dir, name, result, prefix, "##" if len(results) == 1 else "###")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def source_rows(info: dict) -> list[str]:
    if "path" not in info:  # not a bag
        return [f"| source | {info['name']} |"]
    return [f"| bag | `{info['path']}` ({info['storage']}, {info['size_bytes'] / 2**20:.1f} MiB, "
            f"{info['duration_s']:.2f} s) |", f"| camera | `{info['image_topic']}` ({info['image_type']}) |"]


def model_section(out_dir: Path, name: str, result: EvaluationResult, prefix: str, h: str) -> list[str]:
    r = result.as_dict()
    lines = ["", f"{h} {name}", "",
             f"{result.model} ({result.engine}, {result.precision}): {result.evaluated} frames evaluated, "
             f"{len(result.decode_errors)} decode errors; segmentation scored on "
             f"{result.scored_frames['segmentation']} frames, detections on {result.scored_frames['detection']}; "
             f"{len(result.truth_errors)} ground truth errors.", "", f"{h}# Accuracy", ""]
    seg, det = result.segmentation, result.detection
    if seg is None and det is None:
        lines.append("No ground truth for this model's heads: latency only.")
    if seg is not None:
        lines += [f"mIoU **{fmt(r['miou'])}**, pixel accuracy {fmt(r['pixel_accuracy'])}.", "",
                  "| class | IoU |", "|---|---:|"]
        lines += [f"| {cls} | {fmt(iou)} |" for cls, iou in seg.per_class_iou().items()]
        plot_confusion(seg.confusion, seg.class_names, out_dir / f"{prefix}confusion.png",
                       f"{name}: mIoU {seg.miou:.3f} ({result.scored_frames['segmentation']} frames)")
        lines += ["", f"![confusion matrix]({prefix}confusion.png)", ""]
    if det is not None:
        lines += [f"mAP50 **{fmt(r['map50'])}**, mAP50:95 {fmt(r['map50_95'])} ({det.targets} boxes; detections "
                  f"kept down to score {result.score_floor}).", "", "| class | AP50 |", "|---|---:|"]
        lines += [f"| {cls} | {fmt(ap)} |" for cls, ap in det.ap50_per_class.items()]
        lines += ["", "| object size (sqrt of box area, camera px) | boxes | recall@0.5 | AP50 |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {size} | {v['targets']} | {fmt(v['recall50'])} | {fmt(v['ap50'])} |"
                  for size, v in det.by_size.items()]
        plot_pr_curves(det, out_dir / f"{prefix}pr_curves.png", f"{name}: precision-recall at IoU 0.5")
        lines += ["", f"![precision-recall curves]({prefix}pr_curves.png)", ""]
    lines += [f"{h}# Latency (ms, pipeline stages as the node runs them)", "",
              "| stage | p50 | p95 | p99 | max |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {stage} | {fmt(s['p50_ms'])} | {fmt(s['p95_ms'])} | {fmt(s['p99_ms'])} | {fmt(s['max_ms'])} |"
              for stage, s in r["latency_ms"].items()]
    if result.evaluated:
        plot_latency_histogram(result.latency_samples_ms, out_dir / f"{prefix}latency_histogram.png",
                               f"{name}: {result.evaluated} frames")
        lines += ["", f"![latency histogram]({prefix}latency_histogram.png)"]
    if result.worst_frames:
        lines += ["", f"{h}# Worst frames by mIoU, then unlabelled frames (ground truth left, prediction right)", ""]
    for rank, entry in enumerate(result.worst_frames, start=1):
        file_name = f"{prefix}overlay_{rank}.png"
        cv2.imwrite(str(out_dir / file_name), entry["picture"])
        caption = f"frame {entry['index']} ({entry['key']}, stamp {entry['stamp_ns']})"
        if entry["miou"] is not None:
            caption += f", mIoU {entry['miou']:.3f}"
        lines += [caption, "", f"![{caption}]({file_name})", ""]
    for title, errors, count, where in (("Decode errors", r["decode_error_examples"], r["decode_errors"], "index"),
                                        ("Ground truth errors", r["truth_error_examples"], r["truth_errors"], "key")):
        if count:
            lines += [f"{h}# {title}", ""]
            lines += [f"- frame {e[where]} (stamp {e['stamp_ns']}): {e['error']}" for e in errors]
            if count > len(errors):
                lines.append(f"- ... {count - len(errors)} more")
    return lines


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    """Rows normalised to recall per ground-truth class."""
    plt = pyplot()
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
    save(fig, path)


def plot_pr_curves(result: DetectionResult, path: Path, title: str) -> None:
    """One precision-recall curve per detection class at IoU 0.5, AP50 in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (recall, precision) in result.pr_curves50.items():
        ax.plot(recall, precision, label=f"{name} (AP50 {result.ap50_per_class[name]:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=10)
    ax.grid()
    if result.pr_curves50:
        ax.legend(loc="lower left")
    save(fig, path)


def plot_latency_histogram(samples_ms: Mapping[str, np.ndarray], path: Path, title: str) -> None:
    """Histogram of the per-frame total with its p50/p95/p99, and the per-stage medians as bars."""
    plt = pyplot()
    total = samples_ms[TOTAL]
    fig, (hist_ax, bar_ax) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    hist_ax.hist(total, bins=min(50, max(5, total.size // 4)), color="tab:blue", alpha=0.8)
    summary = summarize_ms(total)
    for label, value, style in (("p50", summary.p50_ms, "-"), ("p95", summary.p95_ms, "--"),
                                ("p99", summary.p99_ms, ":")):
        hist_ax.axvline(value, color="black", linestyle=style, label=f"{label} {value:.2f} ms")
    hist_ax.set_xlabel("pipeline total per frame (ms)")
    hist_ax.set_ylabel("frames")
    hist_ax.legend()
    bar_ax.barh(STAGES, [summarize_ms(samples_ms[stage]).p50_ms for stage in STAGES], color="tab:orange")
    bar_ax.invert_yaxis()
    bar_ax.set_xlabel("p50 per stage (ms)")
    fig.suptitle(title, fontsize=10)
    save(fig, path)
