"""The multitask network against what a user would run instead: Ultralytics YOLO26n detect + YOLO26n-sem, one
after the other, all three in ONNX Runtime in one process with the project's session settings.

Only ONNX files are timed here; ultralytics and torch are not project dependencies. The YOLO files were made in a
throwaway venv outside the repository (random weights, built from ultralytics' own yaml files):

    python3 -m venv /work/yolo/venv
    /work/yolo/venv/bin/pip install torch==2.14.1 torchvision==0.29.1    # pip takes them from the machine's disk
    /work/yolo/venv/bin/pip install ultralytics==8.4.190 onnx onnxslim onnxruntime==1.32.0
    /work/yolo/venv/bin/python -c "from ultralytics import YOLO; [YOLO(m).export(format='onnx', imgsz=(384, 640), \
        batch=1, dynamic=False, simplify=True, nms=False, device='cpu') for m in ('yolo26n.yaml', 'yolo26n-sem.yaml')]"

ultralytics 8.4.190 ships cfg/models/26/yolo26.yaml and yolo26-sem.yaml (scale "n" comes from the file name). The
export picks opset 18; the semantic model bakes its argmax into a uint8 (1,384,640) class map; ``nms=False`` keeps the
detector's NMS-free head with its top-300 decoding in the graph, (1,300,6) final boxes, as the multitask network
decodes its top-K in the graph (the default, nms=None, exports the raw (1,84,5040) output that needs NMS outside).
/work/yolo/export_yolo26.py does this for the yaml's own class counts (80, 19), for the project's (3, 7) and at
384x512 (the multitask network's input), and records params, ultralytics' GFLOPs and PyTorch timings (2 threads) in
/work/yolo/yolo26_info.json (``--info``).

Each model gets the same 640x480 simulator validation frames, letterboxed (centred, pad 114) to its own fixed input:
the multitask network uint8 BGR NHWC (normalisation in the graph), YOLO at its export size (float32 RGB
NCHW / 255, prepared beforehand). Only ``session.run`` is timed, frame by frame, the models interleaved in an order
that rotates every frame so each one sees the same background load. Ratio = multitask p50 / (det p50 + sem p50),
and the same over per-frame sums (det + sem of the same frame, then p50).

    .venv/bin/python tools/compare_yolo26.py --pair yolo26n /work/yolo/onnx/yolo26n.onnx \
        /work/yolo/onnx/yolo26n-sem.onnx --info /work/yolo/yolo26_info.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from perception_core.bench import model_parameters
from perception_core.datasets.simulator import SimulatorSource
from perception_core.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception_core.macs import model_macs
from perception_core.pipeline.letterbox import letterbox
from perception_core.pipeline.timing import summarize_ms

TARGET = 0.20
MULTITASK = "multitask fp32"


def feed_for(engine: OnnxRuntimeEngine, bgr: np.ndarray) -> dict[str, np.ndarray]:
    """One camera frame as the model's single input: uint8 NHWC BGR (ours) or float32 NCHW RGB / 255 (YOLO)."""
    (name, (shape, dtype)), = engine.input_spec.items()
    if "uint8" in dtype:
        image, _ = letterbox(bgr, shape[1:3])
        return {name: image[None]}
    image, _ = letterbox(bgr, shape[2:4])
    return {name: np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1), np.float32)[None] / np.float32(255)}


def time_interleaved(engines: dict[str, OnnxRuntimeEngine], feeds: dict[str, list], warmup: int,
                     repeats: int) -> dict[str, np.ndarray]:
    """``session.run`` times (ms) per model, frame by frame, the order rotated each frame."""
    names = list(engines)
    for name in names:
        for feed in feeds[name][:warmup]:
            engines[name].infer(feed)
    samples = {name: [] for name in names}
    frames = len(next(iter(feeds.values())))
    for step in range(repeats * frames):
        i = step % frames
        for name in names[step % len(names):] + names[:step % len(names)]:
            start = time.perf_counter()
            engines[name].infer(feeds[name][i])
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: np.asarray(s) for name, s in samples.items()}


def describe(path: Path, engine: OnnxRuntimeEngine) -> dict:
    return {"onnx": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "inputs": {k: [list(s), t] for k, (s, t) in engine.input_spec.items()},
            "outputs": {o.name: [o.shape, o.type] for o in engine.session.get_outputs()},
            "parameters": model_parameters(path), "macs": model_macs(path)["total"]}


def compare(model: Path, pairs: list[tuple[str, Path, Path]], frames: int, threads: int, warmup: int,
            repeats: int, info: dict) -> dict:
    paths = {MULTITASK: model}
    for label, det, sem in pairs:
        paths[f"{label} det"], paths[f"{label} sem"] = det, sem
    engines = {name: OnnxRuntimeEngine(p, intra_op_threads=threads) for name, p in paths.items()}
    source = SimulatorSource("validation", frames)
    images = [sample.image for sample in source]
    feeds = {name: [feed_for(engine, bgr) for bgr in images] for name, engine in engines.items()}
    print(f"[yolo26] timing {len(engines)} models on {len(images)} frames, interleaved, {threads} threads", flush=True)
    samples = time_interleaved(engines, feeds, warmup, repeats)
    summary = {name: summarize_ms(s).as_dict() for name, s in samples.items()}
    mt = summary[MULTITASK]["p50_ms"]
    result = {
        "what": "multitask fp32 ONNX Runtime time per frame vs Ultralytics YOLO26n detect + YOLO26n-sem run one after "
                "the other (random weights, built from ultralytics' yaml files), all in ONNX Runtime in one process",
        "frames": f"{len(images)} simulator validation frames 640x480, letterboxed to each model's input, "
                  f"{warmup} warm-up frames, {repeats} passes, order rotated per frame",
        "timed": "session.run only (inputs prepared beforehand)",
        "threads": threads,
        "session": "OnnxRuntimeEngine: intra_op threads as above, inter_op 1, spinning off, ORT_ENABLE_ALL, CPU",
        "target_ratio": TARGET,
        "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__, **info.get("versions", {})},
        "models": {name: {**describe(paths[name], engines[name]), "latency_ms": summary[name]} for name in paths},
        "pairs": {},
        "yolo_export": {k: v for k, v in info.items() if k not in ("models", "versions")},
    }
    exported = {Path(m["onnx"]).name: m for m in info.get("models", {}).values()}
    for label, det, sem in pairs:
        d, s = f"{label} det", f"{label} sem"
        sums = summarize_ms(samples[d] + samples[s]).as_dict()
        result["pairs"][label] = {
            "det": d, "sem": s, "sum_of_p50_ms": summary[d]["p50_ms"] + summary[s]["p50_ms"],
            "per_frame_sum_ms": sums,
            "ratio_multitask_over_pair": mt / (summary[d]["p50_ms"] + summary[s]["p50_ms"]),
            "ratio_multitask_over_pair_per_frame_sums": mt / sums["p50_ms"],
            "macs_multitask_over_pair": result["models"][MULTITASK]["macs"] / (
                result["models"][d]["macs"] + result["models"][s]["macs"]),
        }
        for name, path in ((d, det), (s, sem)):
            if path.name in exported:
                result["models"][name]["ultralytics"] = exported[path.name]
    first = result["pairs"][pairs[0][0]]
    result["ratio_multitask_over_yolo26_pair"] = first["ratio_multitask_over_pair"]
    result["ratio_multitask_over_yolo26_pair_per_frame_sums"] = first["ratio_multitask_over_pair_per_frame_sums"]
    result["target_met"] = result["ratio_multitask_over_yolo26_pair"] <= TARGET
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("LABEL", "DET_ONNX", "SEM_ONNX"),
                        help="a YOLO detect + semantic pair (repeatable; the first one gives the headline ratio)")
    parser.add_argument("--model", type=Path, default=Path("models/multitask.onnx"))
    parser.add_argument("--info", type=Path, help="yolo26_info.json written by export_yolo26.py (merged in)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/yolo26_comparison.json"))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    pairs = [(label, Path(det), Path(sem)) for label, det, sem in args.pair]
    info = json.loads(args.info.read_text()) if args.info else {}
    result = compare(args.model, pairs, args.frames, args.threads, args.warmup, args.repeats, info)
    for name, m in result["models"].items():
        lat = m["latency_ms"]
        print(f"{name:28s} p50 {lat['p50_ms']:7.2f}  p95 {lat['p95_ms']:7.2f}  p99 {lat['p99_ms']:7.2f} ms"
              f"   {m['macs'] / 1e6:7.1f} M MACs  {m['parameters'] / 1e6:5.2f} M params")
    for label, p in result["pairs"].items():
        print(f"multitask / {label} pair: {p['ratio_multitask_over_pair']:.3f} (p50s), "
              f"{p['ratio_multitask_over_pair_per_frame_sums']:.3f} (per-frame sums); "
              f"MACs {p['macs_multitask_over_pair']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"[yolo26] wrote {args.out}; target ratio <= {TARGET}: {'met' if result['target_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
