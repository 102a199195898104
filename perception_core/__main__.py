"""``python -m perception_core <command>``: train, export, quantize, evaluate (--sim, --bag or --data),
dataset (export-sim, check), plot, macs, record, bench, build-engine.

TensorFlow is imported only by the commands that need it (train, export, quantize), after the
thread and log settings are in place; evaluate runs on ONNX Runtime (LiteRT for .tflite files) alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from perception_core.resources import package_file
from perception_core.training.backbones import BACKBONES, DEFAULT_BACKBONE, HEAD_BLOCKS


def _hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _task_ratio(text: str) -> dict[str, float]:
    """"seg=1,det=2" -> {"seg": 1.0, "det": 2.0}."""
    try:
        return {head.strip(): float(value) for head, value in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. seg=1,det=1, got {text!r}") from None


def cmd_train(args) -> int:
    _quiet_tensorflow()
    from perception_core.training.loader import DatasetRefused, open_datasets
    from perception_core.training.model import BackboneWeightsError
    from perception_core.training.train import StrategyRefused, train

    model_kwargs = {key: value for key, value in (("det_stride", args.det_stride), ("head_block", args.head_block))
                    if value is not None}
    if args.backbone is not None:
        model_kwargs["backbone"] = args.backbone
    try:
        sources, datasets = open_datasets(args.data, workers=args.workers) if args.data else (None, None)
        out = train(task=args.task, steps=args.steps, batch=args.batch, out=args.out, resume=args.resume,
                    seed=args.seed, image_hw=args.image_size, crop_hw=args.crop, frames=args.frames, lr=args.lr,
                    balance=args.balance, seg_weight=args.seg_weight, det_weight=args.det_weight,
                    checkpoint_every=args.checkpoint_every, threads=args.threads, init_from=args.init_from,
                    model_kwargs=model_kwargs, source=sources, datasets=datasets, task_ratio=args.task_ratio,
                    workers=args.workers, backbone_weights=args.backbone_weights, devices=args.devices,
                    strategy=args.strategy)
    except (DatasetRefused, BackboneWeightsError, StrategyRefused) as err:
        print(f"train: {err}", file=sys.stderr)
        return 2
    print(f"trained {args.task}: {out}")
    return 0


def cmd_export(args) -> int:
    _quiet_tensorflow()
    from perception_core.training.export import ExportMismatchError, export

    try:
        export(args.checkpoint, args.out, top_k=args.top_k, verify_frames=args.verify_frames,
               eval_frames=args.eval_frames, tflite=args.tflite, threads=args.threads,
               class_map_stride=args.class_map_stride, image_hw=args.image_size)
    except ExportMismatchError as err:
        print(f"EXPORT FAILED: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_quantize(args) -> int:
    _quiet_tensorflow()
    from perception_core.training.quantize import quantize

    quantize(args.model, args.out, args.out_trt, calibration_frames=args.calibration_frames,
             eval_frames=args.eval_frames, threads=args.threads, float_det_trunk=args.float_det_trunk,
             float_stem_convs=args.float_stem)
    return 0


def cmd_evaluate(args) -> int:
    if args.bags:
        return cmd_evaluate_bags(args)
    from perception_core.evaluation.evaluate import evaluate_interleaved, evaluation_pipelines
    from perception_core.evaluation.report import results_json, summary_line, write_json, write_report

    args.threads = args.threads or 2
    pipelines = evaluation_pipelines(args.model or [package_file("models", "multitask.onnx")], args.threads)
    if args.bag:  # a bag does not say its classes: it is read in the (first) model's
        from perception_core.datasets.bag import BagSource

        source = BagSource(args.bag, next(iter(pipelines.values())).spec, args.topic)
        source_info = source.info
    elif args.data:  # a folder dataset names its classes: they must be the model's
        from perception_core.datasets.folder import open_dataset

        source = open_dataset(args.data, args.split)
        source_info = source.info
    else:
        from perception_core.datasets.simulator import SimulatorSource

        source = SimulatorSource("validation", args.sim)
        source_info = {"name": source.name}
    results = evaluate_interleaved(pipelines, source, overlays=args.overlays if args.report else 0, progress=True)
    for name, result in results.items():
        print(summary_line(name, result))
    if args.json:
        write_json(args.json, results_json(results, source_info, threads=args.threads))
    if args.report:
        print(f"report: {write_report(args.report, results, source_info, threads=args.threads)}")
    return 0


def cmd_evaluate_bags(args) -> int:
    """--bags: the bags fanned out over Ray actors, per-bag results and one merged result."""
    from perception_core.evaluation.fleet import OBJECT_STORE_MB, RayMissing, evaluate_bags, find_bags
    from perception_core.evaluation.report import summary_line, write_json, write_report

    models = args.model or [package_file("models", "multitask.onnx")]
    if len(models) != 1:
        print("evaluate --bags: one --model at a time (each worker holds one pipeline)", file=sys.stderr)
        return 2
    threads = args.threads or 1
    try:
        bags, skipped = find_bags(args.bags)
        if skipped:
            print(f"evaluate --bags: {len(skipped)} entries are not bags, skipped: "
                  f"{', '.join(path.name for path in skipped)}", file=sys.stderr)
        workers = args.workers or max(1, (os.cpu_count() or 1) // threads)
        fleet = evaluate_bags(models[0], bags, workers=workers, threads=threads, address=args.ray_address,
                              topic=args.topic, object_store_mb=args.object_store_mb or OBJECT_STORE_MB,
                              chunk_frames=args.chunk_frames, where=args.bags)
    except (RayMissing, FileNotFoundError, ValueError, ConnectionError) as err:  # ConnectionError: no cluster there
        print(f"evaluate --bags: {err}", file=sys.stderr)
        return 2
    for outcome in fleet.outcomes:
        if outcome.result is not None:
            print(summary_line(Path(outcome.bag).name, outcome.result))
        else:
            print(f"{Path(outcome.bag).name:28s} FAILED: {outcome.error}")
    counts, timing = fleet.frame_counts(), fleet.timing_s
    if fleet.merged is not None:
        print(summary_line(f"merged ({len(fleet.outcomes) - len(fleet.failed)} bags)", fleet.merged))
    print(f"frames: {counts['in_bags']} in the bags = {counts['evaluated']} evaluated + {counts['rejected']} rejected "
          f"({counts['decode_errors']} decode errors, {counts['in_failed_bags']} in failed bags); "
          f"{len(fleet.failed)} of {len(fleet.outcomes)} bags failed")
    rate = counts["evaluated"] / timing["evaluate"]
    print(f"ray: start {timing['ray_start']:.2f} s, actors ready {timing['actors_ready']:.2f} s, evaluate "
          f"{timing['evaluate']:.2f} s ({rate:.1f} frames/s on {workers} workers x {threads} threads), "
          f"shutdown {timing['ray_shutdown']:.2f} s")
    if args.json:
        write_json(args.json, {**fleet.as_dict(), "not_bags": [str(path) for path in skipped]})
    if args.report and fleet.merged is not None:
        info = {"name": fleet.merged.source}
        print(f"report: {write_report(args.report, {fleet.model: fleet.merged}, info, threads=threads)}")
    return 1 if fleet.failed else 0


def cmd_dataset_export_sim(args) -> int:
    from perception_core.datasets.export_sim import export_sim

    try:
        path = export_sim(args.out, args.frames, args.format, seed=args.seed, tasks=args.tasks,
                          val_frames=args.val_frames, start=args.start)
    except (ValueError, FileExistsError) as err:
        print(f"export-sim: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _plot_dataset_check(report, out: str) -> None:
    """Histograms of a checked dataset: object sizes, boxes and segmentation pixels per class, per split."""
    import numpy as np

    from perception_core.datasets.check import SMALL_OBJECT_PX
    from perception_core.plotting import pyplot, save

    plt = pyplot()
    spec, splits = report.spec, report.splits
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    bins = np.geomspace(2, 2048, 34)
    width = 0.8 / max(len(splits), 1)
    for k, (name, stats) in enumerate(splits.items()):
        if stats.box_sizes:
            axes[0].hist(np.clip(stats.box_sizes, bins[0], bins[-1]), bins=bins, histtype="step",
                         label=f"{name}: {100 * stats.small_share():.1f} % < {SMALL_OBJECT_PX} px")
        det_x = np.arange(spec.num_det_classes) + k * width
        axes[1].bar(det_x, [stats.boxes[c] for c in range(spec.num_det_classes)], width, label=name)
        total = max(sum(stats.seg_pixels.values()) + stats.ignore_pixels, 1)
        seg_x = np.arange(spec.num_seg_classes) + k * width
        axes[2].bar(seg_x, [100 * stats.seg_pixels[c] / total for c in range(spec.num_seg_classes)], width,
                    label=name)
    axes[0].axvline(SMALL_OBJECT_PX, color="k", linestyle="--", linewidth=1)
    axes[0].set(xscale="log", xlabel="object size sqrt(w*h) [px]", ylabel="boxes", title="object sizes")
    centre = width * (len(splits) - 1) / 2
    axes[1].set(xticks=np.arange(spec.num_det_classes) + centre, ylabel="boxes", title="boxes per class")
    axes[1].set_xticklabels(spec.det_classes, rotation=45, ha="right")
    axes[2].set(xticks=np.arange(spec.num_seg_classes) + centre, ylabel="% of pixels",
                title="segmentation pixels per class")
    axes[2].set_xticklabels(spec.seg_classes, rotation=45, ha="right")
    for ax in axes:
        ax.grid(True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    save(fig, out)


def cmd_dataset_check(args) -> int:
    from perception_core.datasets.check import check_dataset

    report = check_dataset(args.yaml, workers=args.workers, progress=True)
    print(report.text(max_problems=args.max_problems))
    if args.plots and report.spec is not None:
        _plot_dataset_check(report, args.plots)
        print(f"plots: {args.plots}")
    return 1 if report.errors else 0


def cmd_plot(args) -> int:
    from perception_core.training.report import plot_histories

    plot_histories(args.runs, args.out)
    return 0


def cmd_macs(args) -> int:
    import json

    from perception_core.macs import format_macs, model_macs

    table = {Path(path).name: model_macs(path) for path in args.model}
    print(format_macs(table))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n")
    return 0


# Commands with their own argument parsers: the rest of the command line is handed to them.
DELEGATED = {"bench": "perception_core.bench", "build-engine": "perception_core.engines.tensorrt_engine",
             "record": "perception_core.evaluation.record"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m perception_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one variant on folder datasets (--data) or cached simulator frames")
    p.add_argument("--task", choices=("multitask", "seg", "det"), required=True)
    p.add_argument("--data", action="append", metavar="YAML",
                   help="a folder dataset's YAML (repeat for several, e.g. one labelled for segmentation and one "
                        "for detection); checked first, as dataset check does. Default: the simulator")
    p.add_argument("--task-ratio", type=_task_ratio, metavar="seg=R,det=R",
                   help="each task's share of a batch, drawn from the images labelled for it (default: uniform "
                        "when every image is labelled for every head, else equal shares)")
    p.add_argument("--backbone", choices=sorted(BACKBONES), help=f"keras.applications backbone (default: "
                   f"{DEFAULT_BACKBONE})")
    p.add_argument("--backbone-weights", default="none", metavar="imagenet|PATH|none",
                   help="backbone start: Keras's ImageNet weights (downloaded into its cache), a backbone "
                        ".weights.h5 (e.g. a run's backbone.weights.h5), or none (fresh)")
    p.add_argument("--workers", type=int, default=2, help="threads that read and decode training images")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", required=True, help="run directory, e.g. runs/multitask")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=_hw, default=(384, 512), help="model input HxW at inference")
    p.add_argument("--crop", type=_hw, default=(192, 256), help="training crop HxW at the inference pixel scale")
    p.add_argument("--frames", type=int, default=5000, help="simulator training frames (without --data)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--balance", choices=("uncertainty", "fixed"), default="uncertainty")
    p.add_argument("--seg-weight", type=float, default=1.0,
                   help="segmentation loss weight (--balance fixed) or priority (--balance uncertainty)")
    p.add_argument("--det-weight", type=float, default=1.0,
                   help="detection loss weight (--balance fixed) or priority (--balance uncertainty)")
    p.add_argument("--det-stride", type=int, choices=(4, 8),
                   help="detection head stride (default: the model's, 4); 4 fuses the stride-4 features for small "
                        "objects")
    p.add_argument("--head-block", choices=HEAD_BLOCKS,
                   help="FPN output and task trunks (default: separable, depthwise 3x3 + 1x1; dense: the 3x3 conv of "
                        "models trained before it)")
    p.add_argument("--init-from", metavar="RUN_DIR|MODEL.onnx",
                   help="warm start from a run directory, or from an exported ONNX model when its run is gone "
                        "(layers matching by name and shape)")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--devices", type=int, default=1,
                   help="replicas of each step with --strategy mirrored: N GPUs, or on a machine without GPUs N "
                        "logical CPU devices made from its CPU before TensorFlow starts (the distributed path, "
                        "no speed-up on a few cores); --batch is the global batch, split evenly across them")
    p.add_argument("--strategy", choices=("mirrored", "multiworker"), default="mirrored",
                   help="mirrored: this machine's --devices; multiworker: the machines TF_CONFIG lists, each "
                        "running this same command (every GPU of each, else its CPU); only the chief writes --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="run directory -> ONNX (+ LiteRT) with a verified model.json sidecar")
    p.add_argument("--checkpoint", required=True, help="run directory (or its checkpoint/ folder)")
    p.add_argument("--out", required=True, help="e.g. models/multitask.onnx")
    p.add_argument("--tflite", help="also write a LiteRT model here, e.g. models/multitask.tflite")
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--verify-frames", type=int, default=50)
    p.add_argument("--image-size", type=_hw, help="export at another input HxW (default: the run's)")
    p.add_argument("--class-map-stride", type=int, default=2, help="argmax at input/s, then repeat (cheaper)")
    p.add_argument("--eval-frames", type=int, default=500, help="validation frames for the sidecar's metrics")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="INT8: QDQ ONNX (CPU u8s8 and TensorRT s8 forms) or full-integer LiteRT")
    p.add_argument("--model", default="models/multitask.onnx", help="an exported .onnx or .tflite model")
    p.add_argument("--out", help="default: beside the model as <stem>_int8.onnx / <stem>_int8.tflite")
    p.add_argument("--out-trt", help="TensorRT form of an ONNX model; default: <stem>_int8_trt.onnx")
    p.add_argument("--calibration-frames", type=int, default=200)
    p.add_argument("--float-det-trunk", action="store_true", help="keep the detection head's 3x3 conv in float")
    p.add_argument("--float-stem", type=int, metavar="N",
                   help="CPU form: keep the first N convs (and the normalisation before them) in float; default: up "
                        "to the first conv that narrows the channels (0 quantizes every conv)")
    p.add_argument("--eval-frames", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("evaluate", help="metrics and latency of models on the validation split or a rosbag2 bag")
    p.add_argument("--model", nargs="+", help="one or more .onnx (ONNX Runtime) or .tflite (LiteRT) files, run "
                   "side by side on the same frames (default: the bundled multitask.onnx)")
    frames = p.add_mutually_exclusive_group()
    frames.add_argument("--sim", type=int, default=500, help="number of simulator validation frames (the default)")
    frames.add_argument("--bag", help="a rosbag2 bag (mcap or sqlite3 folder or file); ground truth optional")
    frames.add_argument("--data", help="a folder dataset's YAML (see dataset check); its classes must be the model's")
    frames.add_argument("--bags", metavar="DIR_OR_GLOB",
                        help="many bags (a folder of bags or a glob pattern) fanned out over Ray workers: per-bag "
                             "and merged results (needs requirements/scale.txt)")
    p.add_argument("--split", default="val", help="split of the --data dataset (default: val)")
    p.add_argument("--topic", help="camera topic of the bag (default: /image, /image/compressed or the only camera)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--report", help="write evaluation.json, report.md and its PNGs into this folder")
    p.add_argument("--overlays", type=int, default=4, help="worst frames drawn in the report")
    p.add_argument("--threads", type=int, help="inference threads (default 2; with --bags: per worker, default 1)")
    p.add_argument("--workers", type=int, help="--bags: Ray workers, each holding one pipeline (default: CPUs / "
                   "threads of this machine)")
    p.add_argument("--ray-address", metavar="ADDR", help="--bags: an existing Ray cluster (e.g. 10.0.0.5:6379 or "
                   "auto); default: a local Ray runtime started for this run and stopped after it")
    p.add_argument("--chunk-frames", type=int, default=0, metavar="N",
                   help="--bags: split each bag into chunks of N frames, handed out separately (fewer bags than "
                        "workers, or bags of very different lengths); default 0: whole bags")
    p.add_argument("--object-store-mb", type=int,
                   help="--bags: object store of the local Ray runtime (default 256 MiB)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("dataset", help="folder datasets: export simulator frames as one, check one")
    dataset = p.add_subparsers(dest="dataset_command", required=True)
    d = dataset.add_parser("export-sim", help="simulator frames -> DIR/dataset.yaml + images and labels "
                           "(train: --frames from --start; val: the simulator's validation split)")
    d.add_argument("--out", required=True, help="an empty folder")
    d.add_argument("--frames", type=int, required=True, help="training frames")
    d.add_argument("--format", choices=("coco", "yolo", "masks"), required=True,
                   help="coco: COCO JSON (boxes; masks as RLE); yolo: YOLO txt boxes + PNG masks; masks: PNG masks")
    d.add_argument("--tasks", help="seg,det, seg or det (default: seg,det; seg for masks)")
    d.add_argument("--seed", type=int, help="simulator seed of the training frames (default: its training split)")
    d.add_argument("--start", type=int, default=0, help="first training frame (disjoint sets: 0 and N)")
    d.add_argument("--val-frames", type=int, help="validation frames (default: frames // 4; 0: no val split)")
    d.set_defaults(func=cmd_dataset_export_sim)
    d = dataset.add_parser("check", help="counts per split and class, sizes, and every problem with its file; "
                           "exit 1 on errors")
    d.add_argument("yaml", help="the dataset's YAML, e.g. DIR/dataset.yaml")
    d.add_argument("--plots", help="write the histograms to this PNG")
    d.add_argument("--workers", type=int, default=2, help="processes reading images")
    d.add_argument("--max-problems", type=int, default=50, help="problems listed per severity")
    d.set_defaults(func=cmd_dataset_check)

    p = sub.add_parser("plot", help="training-curve PNG from run directories")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--out", default="docs/model/training_curves.png")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("macs", help="multiply-adds per part (backbone, neck, each head) of exported ONNX models")
    p.add_argument("--model", nargs="+", required=True, help="ONNX models, e.g. models/multitask.onnx")
    p.add_argument("--json", help="also write the counts here")
    p.set_defaults(func=cmd_macs)

    sub.add_parser("bench", help="multitask vs separate vs int8, and the node end to end (make bench)")
    sub.add_parser("build-engine", help="ONNX -> cached TensorRT plan (Jetson/GPU with TensorRT only)")
    sub.add_parser("record", help="simulator sequence -> rosbag2 (mcap or sqlite3), with ground truth")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    module = DELEGATED.get(argv[0]) if argv else None
    if module:
        import importlib

        return importlib.import_module(module).main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
