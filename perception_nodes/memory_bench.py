"""Memory as the team lives with it: one multitask node process vs a seg_only node + a det_only node process.

Layout: one synthetic camera; six node processes (perception_nodes.multitask_node, the executable
the robot runs) subscribe to its ``image``, each in a namespace of its own: the multitask,
seg_only and det_only models, and beside each its runtime baseline. All run at once, so every
process sees the same frames on the same machine at the same time.

Runtime baseline: the same node with the same parameters, imports (rclpy, ONNX Runtime, OpenCV),
session options, publishers, DDS participant and per-frame work (decode, letterbox, post-processing
at camera resolution, publishing), but a weightless twin of its model: the same input, outputs and
sidecar, each output a constant of zeros. ``node - its baseline`` is then what the model itself
costs: weights, ONNX Runtime's activation arena and kernel buffers. Chosen over "RSS before vs
after the session is created" because that reading would miss what the first frames allocate (the
arena grows at the first run), and over a process without a session because the node does not run
without one; the twin's own session (a few constants) is counted as runtime.

Each process is read after every node has processed ``frames`` frames (steady state), the median
of ``samples`` readings one ``interval`` apart: VmRSS (whole-process RSS, what ``top`` shows; the
headline ratios), and from /proc/<pid>/smaps_rollup PSS (shared pages divided among the processes
that map them) and USS (private pages only), which count shared libraries fairly between one
process and two. The TensorRT engines' device memory comes from perception_core.engines.memory_estimate
(read from plans where tensorrt imports, an estimate elsewhere; its ``source`` says which).

``python -m perception_nodes.memory_bench`` runs this section alone and prints its JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from perception_core.engines.memory_estimate import tensorrt_memory
from perception_core.model_spec import ModelSpec, sidecar_path, write_sidecar
from perception_core.resources import package_file
from perception_nodes.observer import PERCEPTION, GraphObserver
from perception_nodes.processes import NodeProcess, stop_nodes
from perception_nodes.ros_env import local_graph_env

VARIANTS = ("multitask", "seg_only", "det_only")
HEADS = {"segmentation": Image, "detections": Detection2DArray}
STATUS_FIELDS = {"VmRSS": "vmrss", "VmHWM": "vmhwm", "RssAnon": "rss_anon", "RssFile": "rss_file",
                 "RssShmem": "rss_shmem"}
COMPARED = ("vmrss", "pss", "uss")


def process_memory_mib(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM and RSS by kind from /proc/<pid>/status; PSS and USS (Private_Clean + Private_Dirty)
    from /proc/<pid>/smaps_rollup (Linux >= 4.14). MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in STATUS_FIELDS:
            values[STATUS_FIELDS[key]] = int(rest.split()[0]) / 1024
    rollup = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        rollup[key] = int(rest.split()[0]) / 1024
    values["pss"] = rollup["Pss"]
    values["uss"] = rollup["Private_Clean"] + rollup["Private_Dirty"]
    return values


def weightless_twin(model_path: Path, out_dir: Path) -> Path:
    """``model_path``'s input, outputs and sidecar without its network: each output a constant of zeros of its
    type and shape (zero scores: no detections, an all-zero class map)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path), load_external_data=False)
    nodes, shapes = [], []
    for output in model.graph.output:
        tensor_type = output.type.tensor_type
        shape = numpy_helper.from_array(np.array([d.dim_value for d in tensor_type.shape.dim], np.int64),
                                        f"{output.name}_shape")
        shapes.append(shape)
        nodes.append(helper.make_node("ConstantOfShape", [shape.name], [output.name],
                                      value=helper.make_tensor("zero", tensor_type.elem_type, [1], [0])))
    graph = helper.make_graph(nodes, f"{model.graph.name}_weightless", list(model.graph.input),
                              list(model.graph.output), shapes)
    twin = helper.make_model(graph, opset_imports=model.opset_import)
    twin.ir_version = model.ir_version
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{model_path.stem}_runtime.onnx"
    onnx.save(twin, path)
    raw = json.loads(sidecar_path(model_path).read_text())
    fields = {k: v for k, v in raw.items() if k not in ("format_version", "model_file", "sha256", "metrics")}
    write_sidecar(path, {**fields, "name": f"{raw['name']}_runtime"})
    return path


def _median(readings: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in readings) for key in readings[0]}


def _ratio(one: dict[str, float], two: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{'rss' if k == 'vmrss' else k}_node_over_two_nodes": one[k] / two[k] for k in COMPARED}


def run_memory(models_dir: Path, threads: int = 2, frames: int = 30, samples: int = 5, interval: float = 1.0,
               rate: float = 10.0, timeout: float = 180.0) -> dict:
    """Start the camera and the six nodes, wait until each has processed ``frames`` frames, read their memory."""
    models = {v: Path(models_dir) / f"{v}.onnx" for v in VARIANTS}
    for path in models.values():
        ModelSpec.load(path)  # a missing or mismatched model fails here, not as a node that never reports
    started = time.monotonic()
    observer = GraphObserver("memory_bench")
    processes: dict[str, NodeProcess] = {}
    counts: dict[str, dict[str, int]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="memory_bench_") as tmp:
        runs = {}
        for variant, path in models.items():
            runs[variant] = path
            runs[f"{variant}_runtime"] = weightless_twin(path, Path(tmp))
        try:
            processes["camera"] = NodeProcess("perception_nodes.synthetic_camera_node", f"rate:={rate}",
                                              "loop_frames:=10", namespace="/memory").start()
            for name, model in runs.items():
                node = NodeProcess("perception_nodes.multitask_node", f"model:={model}", f"threads:={threads}",
                                   namespace=f"/memory/{name}")
                node.cmd += ["-r", "image:=/memory/image"]  # one camera for all
                processes[name] = node.start()
                counts[name] = {head: 0 for head in HEADS}
                for head, msg_type in HEADS.items():
                    observer.node.create_subscription(
                        msg_type, f"/memory/{name}/{head}",
                        lambda _, c=counts[name], h=head: c.__setitem__(h, c[h] + 1),
                        QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT), raw=True)

            def processed(name: str) -> int:
                return int(observer.statuses.get(f"/memory/{name}/{PERCEPTION}: pipeline", {}).get("processed", 0))

            ready = observer.spin_until(lambda: all(processed(n) >= frames for n in runs), timeout=timeout)
            exited = {n: p.poll() for n, p in processes.items() if p.poll() is not None}
            if not ready or exited:
                raise RuntimeError(f"nodes not at {frames} processed frames within {timeout:g} s "
                                   f"({ {n: processed(n) for n in runs} }, exited: {exited})")
            for c in counts.values():
                c.update(dict.fromkeys(HEADS, 0))
            readings: dict[str, list] = {name: [] for name in runs}
            for _ in range(samples):
                observer.spin_for(interval)
                for name in runs:
                    readings[name].append(process_memory_mib(processes[name].pid))
            frames_seen = {name: processed(name) for name in runs}
        finally:
            failures += stop_nodes(processes)
            observer.close()
    memory = {name: _median(r) for name, r in readings.items()}
    nodes = {}
    for variant in VARIANTS:
        own, base = memory[variant], memory[f"{variant}_runtime"]
        nodes[variant] = {"model": models[variant].name, "processed": frames_seen[variant],
                          "published_in_window": counts[variant], "memory_mib": own, "runtime_memory_mib": base,
                          "runtime_published_in_window": counts[f"{variant}_runtime"],
                          "model_mib": {k: own[k] - base[k] for k in COMPARED}}
    two = {k: memory["seg_only"][k] + memory["det_only"][k] for k in memory["seg_only"]}
    two_models = {k: nodes["seg_only"]["model_mib"][k] + nodes["det_only"]["model_mib"][k] for k in COMPARED}
    ratios = {**_ratio(memory["multitask"], two), **_ratio(nodes["multitask"]["model_mib"], two_models, "model_")}
    return {
        "layout": "one camera -> 6 node processes at once: multitask, seg_only, det_only and each one's runtime "
                  "baseline (the same node with a weightless twin of its model)",
        "camera": {"rate_hz": rate, "size": "640x480 bgr8"}, "threads_per_node": threads,
        "steady_state": f"after {frames} processed frames per node; median of {samples} readings {interval:g} s apart",
        "fields": "MiB; vmrss = VmRSS (whole process), pss/uss from /proc/<pid>/smaps_rollup, model_mib = node - "
                  "its runtime baseline",
        "nodes": nodes, "two_nodes_mib": two, "two_nodes_model_mib": two_models, "ratios": ratios,
        "tensorrt": tensorrt_memory(models), "process_failures": failures, "seconds": time.monotonic() - started,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perception_nodes.memory_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=package_file("models", "multitask.onnx").parent)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.update(local_graph_env())
    results = run_memory(args.models, args.threads, args.frames, args.samples)
    print(json.dumps(results, indent=1))
    return 1 if results["process_failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
