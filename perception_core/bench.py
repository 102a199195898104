"""``python -m perception_core bench``: multitask vs separate models vs INT8, ONNX Runtime vs LiteRT, in one run.

Everything is compared on the same frames in the same run, as ratios, with p50/p95/p99:
- latency per stage and in total, the configurations interleaved frame by frame;
- accuracy of each configuration on those frames (the one evaluation path, every peak kept);
- peak RSS of each configuration in a process of its own, above an empty-runtime baseline;
- parameters (ONNX initializers, LiteRT constant tensors) and multiply-adds per part (ONNX models).
The node as deployed (camera process -> node process -> observer) is measured from the nodes'
side, which runs this benchmark first and adds its figures to the same outputs (``make bench``).
Writes ``bench/results.json``, ``bench/results.md`` and ``bench/bench.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from perception_core.datasets.simulator import SimulatorSource
from perception_core.evaluation.evaluate import SCORE_FLOOR, evaluate
from perception_core.macs import model_macs
from perception_core.pipeline.pipeline import TOTAL, Pipeline
from perception_core.profiling import (
    camera_payloads,
    format_table,
    plot_stage_bars,
    summarize_samples,
    time_pipelines,
)
from perception_core.resources import package_file

CONFIGURATIONS = {  # the model file picks the runtime: .onnx -> ONNX Runtime, .tflite -> LiteRT (XNNPACK)
    "multitask fp32": ("multitask.onnx",),
    "separate fp32": ("seg_only.onnx", "det_only.onnx"),
    "multitask int8": ("multitask_int8.onnx",),
    "multitask fp32 litert": ("multitask.tflite",),
    "multitask int8 litert": ("multitask_int8.tflite",),
}


def model_parameters(path: Path) -> int:
    """Number of weights stored in a model file: an ONNX file's initializers, a LiteRT file's constant
    tensors (quantization scales and zero points not counted there, unlike QDQ's initializers)."""
    if path.suffix == ".tflite":
        from ai_edge_litert.tools import flatbuffer_utils

        model = flatbuffer_utils.read_model(path)
        return int(sum(np.prod(t.shape, dtype=np.int64) for g in model.subgraphs for t in g.tensors
                       if model.buffers[t.buffer].data is not None))
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(sum(np.prod(init.dims, dtype=np.int64) for init in model.graph.initializer))


def memory_probe(model_paths: list[str], frames: int, threads: int) -> dict[str, float]:
    """Run in a fresh process: peak RSS after loading the models (if any) and running ``frames`` frames."""
    payloads = camera_payloads(SimulatorSource("validation", frames))
    if model_paths:
        pipeline = Pipeline.from_model_files(model_paths, threads=threads)
        for encoded in payloads:
            pipeline.run(encoded)
    return {"peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's RSS high-water mark. Not getrusage's ru_maxrss: that one carries over the parent's
    peak across fork + exec, so a child of a large benchmark process would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure_memory(model_paths: list[Path], frames: int, threads: int) -> float:
    cmd = [sys.executable, "-m", "perception_core.bench", "--memory-probe", *map(str, model_paths),
           "--frames", str(frames), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]


def ratio(a, b):
    return float(a / b) if a is not None and b else None


def run_bench(models_dir: Path, out_dir: Path, frames: int, threads: int) -> tuple[dict, dict]:
    """The in-process configurations: results (as in results.json) and per-stage latency summaries."""
    started = time.monotonic()
    paths = {name: [models_dir / f for f in files] for name, files in CONFIGURATIONS.items()}
    source = SimulatorSource("validation", frames)
    payloads = camera_payloads(source)
    description = f"{len(payloads)} simulator validation frames 640x480 bgr8"
    # Timed as the node runs (its default score threshold); scored with every peak down to SCORE_FLOOR, as mAP needs.
    pipelines = {name: Pipeline.from_model_files(p, threads=threads) for name, p in paths.items()}
    print(f"[bench] timing {len(pipelines)} configurations, interleaved frame by frame, {threads} threads", flush=True)
    latency = summarize_samples(time_pipelines(pipelines, payloads, warmup=5, repeats=2))
    print(format_table(latency), flush=True)
    del pipelines
    print("[bench] accuracy on the same frames", flush=True)
    acc = {}
    for name, p in paths.items():
        r = evaluate(Pipeline.from_model_files(p, threads=threads, score_threshold=SCORE_FLOOR), source).as_dict()
        acc[name] = {key: r[key] for key in ("miou", "map50", "map50_95")}
    print("[bench] peak RSS, each configuration in its own process", flush=True)
    baseline = measure_memory([], 20, threads)
    memory = {name: measure_memory(p, 20, threads) - baseline for name, p in paths.items()}
    params = {name: sum(model_parameters(m) for m in p) for name, p in paths.items()}
    macs = {name: {m.name: model_macs(m) for m in p if m.suffix == ".onnx"} for name, p in paths.items()}
    total_macs = {name: sum(m["total"] for m in per_model.values()) or None for name, per_model in macs.items()}

    p50 = {name: latency[name][TOTAL].p50_ms for name in latency}
    infer50 = {name: latency[name]["infer"].p50_ms for name in latency}
    results = {
        "frames": description, "threads": threads, "machine": "2-core shared CPU (see note)",
        "configurations": {name: {
            "models": list(CONFIGURATIONS[name]), "parameters": params[name], "macs": total_macs[name],
            "macs_per_part": macs[name],
            "latency_ms": {stage: s.as_dict() for stage, s in latency[name].items()},
            "rss_above_baseline_mib": memory[name], **acc[name]} for name in CONFIGURATIONS},
        "baseline_rss_mib": baseline,
        "ratios": {
            "latency_multitask_over_separate": ratio(p50["multitask fp32"], p50["separate fp32"]),
            "infer_multitask_over_separate": ratio(infer50["multitask fp32"], infer50["separate fp32"]),
            "memory_multitask_over_separate": ratio(memory["multitask fp32"], memory["separate fp32"]),
            "parameters_multitask_over_separate": ratio(params["multitask fp32"], params["separate fp32"]),
            "macs_multitask_over_separate": ratio(total_macs["multitask fp32"], total_macs["separate fp32"]),
            "int8_over_fp32": ratio(infer50["multitask int8"], infer50["multitask fp32"]),
            "int8_over_fp32_total": ratio(p50["multitask int8"], p50["multitask fp32"]),
            "litert_fp32_over_onnxruntime_fp32": ratio(infer50["multitask fp32 litert"], infer50["multitask fp32"]),
            "litert_int8_over_onnxruntime_int8": ratio(infer50["multitask int8 litert"], infer50["multitask int8"]),
            "litert_int8_over_litert_fp32": ratio(infer50["multitask int8 litert"], infer50["multitask fp32 litert"]),
        },
        "seconds": time.monotonic() - started,
    }
    return results, latency


def write_outputs(results: dict, latency, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    lines = [f"# Benchmark: {results['frames']}, {results['threads']} threads", "",
             "| configuration | params | M MACs | total p50 / p95 / p99 ms | infer p50 ms | RSS above baseline MiB "
             "| mIoU | mAP50 |", "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for name, c in results["configurations"].items():
        t = c["latency_ms"][TOTAL]
        macs = "-" if c.get("macs") is None else f"{c['macs'] / 1e6:.0f}"
        lines.append(f"| {name} | {c['parameters']:,} | {macs} | {t['p50_ms']:.2f} / {t['p95_ms']:.2f} / "
                     f"{t['p99_ms']:.2f} "
                     f"| {c['latency_ms']['infer']['p50_ms']:.2f} | {c['rss_above_baseline_mib']:.1f} "
                     f"| {fmt(c['miou'])} | {fmt(c['map50'])} |")
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {fmt(v)} |" for k, v in results["ratios"].items()]
    node = results.get("node")
    if node:
        lines += ["", "| node (camera -> node -> observer, 640x480) | value |", "|---|---|"]
        for key in ("engine_infer_p50_ms", "node_total_p50_ms", "infer_over_bare", "python_ms_640x480",
                    "overhead_ratio", "e2e_over_engine", "pre_post_ms_640x480", "pre_post_ms_1080p",
                    "max_fps_without_drops", "overload_p99_over_p50", "first_output_s"):
            lines.append(f"| {key} | {fmt(node.get(key))} |")
        for key in ("max_fps_without_drops", "python_ms_640x480", "infer_over_bare"):
            if key in node.get("int8", {}):
                lines.append(f"| int8 model: {key} | {fmt(node['int8'][key])} |")
        o = node["overload"]
        lines.append(f"| overload RSS start -> end MiB | {o['rss_mib_start']:.1f} -> {o['rss_mib_end']:.1f} |")
        m = results["multicamera"]
        lines += ["", f"| 2 cameras at {m['camera_rate']:g} Hz | one node (one engine) | two nodes |", "|---|---|---|",
                  f"| node RSS MiB | {m['one_node']['node_rss_mib']:.0f} | {m['two_nodes']['node_rss_mib']:.0f} |"]
        for cam in m["one_node"]["cameras"]:
            one, two = m["one_node"]["cameras"][cam], m["two_nodes"]["cameras"][cam]
            lines.append(f"| {cam} fps / e2e p50 / p99 ms | {one['fps_out']:.1f} / {one['e2e_p50_ms']:.1f} / "
                         f"{one['e2e_p99_ms']:.1f} | {two['fps_out']:.1f} / {two['e2e_p50_ms']:.1f} / "
                         f"{two['e2e_p99_ms']:.1f} |")
    if "budget" in results:
        lines += budget_table(results["budget"])
    if "memory" in results:
        lines += memory_table(results["memory"])
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    plot_stage_bars(latency, out_dir / "bench.png", f"per-stage p50 (bar) and total p95 (tick): {results['frames']}")


def budget_table(budget: dict) -> list[str]:
    """The latency budget under a CPU hog (perception_nodes.budget_bench): p95 against the budget, switch times."""
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = ["", f"| latency budget {budget['budget_ms']:.1f} ms ({budget['budget_rule']}), camera "
             f"{budget['camera_rate_hz']:g} Hz, {budget['hogs']} hog(s) | value |", "|---|---|"]
    lines += [f"| {key} | {fmt(budget.get(key))} |" for key in (
        "p95_over_budget", "p95_over_budget_without", "hog_p50_on_over_off", "hog_p95_on_over_off",
        "switch_down_after_hog_start_s", "switch_up_after_hog_stop_s", "switches", "cost_ratio", "rss_mib_fallback")]
    return lines


def memory_table(memory: dict) -> list[str]:
    """Node processes' memory (perception_nodes.memory_bench) and the TensorRT engines' device memory."""
    lines = ["", "| node process, steady state, MiB | VmRSS | PSS | USS | runtime baseline VmRSS "
             "| model (VmRSS - baseline) |", "|---|---|---|---|---|---|"]
    for name, n in memory["nodes"].items():
        m = n["memory_mib"]
        lines.append(f"| {name} | {m['vmrss']:.1f} | {m['pss']:.1f} | {m['uss']:.1f} | "
                     f"{n['runtime_memory_mib']['vmrss']:.1f} | {n['model_mib']['vmrss']:.1f} |")
    two, models = memory["two_nodes_mib"], memory["two_nodes_model_mib"]
    runtime = sum(memory["nodes"][name]["runtime_memory_mib"]["vmrss"] for name in ("seg_only", "det_only"))
    lines.append(f"| seg_only + det_only | {two['vmrss']:.1f} | {two['pss']:.1f} | {two['uss']:.1f} | {runtime:.1f} | "
                 f"{models['vmrss']:.1f} |")
    trt = memory["tensorrt"]
    lines += ["", f"| TensorRT device MiB: {trt['source']} | multitask | seg_only + det_only | ratio |",
              "|---|---|---|---|"]
    for precision in ("fp16", "int8"):
        if precision in trt:
            t = trt[precision]
            lines.append(f"| {precision} | {t['engines']['multitask']['device_bytes'] / 2**20:.2f} | "
                         f"{t['separate_device_bytes'] / 2**20:.2f} | {t['multitask_over_separate']:.3f} |")
    return lines + ["", trt["note"]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m perception_core bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=package_file("models", "multitask.onnx").parent)
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    parser.add_argument("--memory-probe", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(args.memory_probe, args.frames, args.threads)))
        return 0
    results, latency = run_bench(args.models, args.out, args.frames, args.threads)
    write_outputs(results, latency, args.out)
    print((args.out / "results.md").read_text())
    print(f"[bench] wrote {args.out}/results.json, results.md, bench.png in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
