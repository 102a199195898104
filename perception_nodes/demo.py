"""`make demo`: synthetic camera -> multitask node -> latency monitor + evaluator, each in its own process.

Streams the nodes' logs while they run; after ``--seconds`` of outputs prints the per-stage timing
table, end-to-end latency, frame rates, drops and accuracy that the nodes published on
/diagnostics, saves a few overlay images, then stops every process with SIGINT (as Ctrl-C
would) and fails if any of them crashed or no output arrived.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from perception_core.pipeline.pipeline import STAGES
from perception_core.resources import package_file
from perception_nodes.observer import GraphObserver
from perception_nodes.processes import NodeProcess, stop_nodes
from perception_nodes.ros_env import local_graph_env

# name -> (module, parameter file): the executables and YAML files of launch/simulation.launch.xml
NODES = {
    "camera": ("perception_nodes.synthetic_camera_node", "synthetic_camera.param.yaml"),
    "perception": ("perception_nodes.multitask_node", "multitask_node.param.yaml"),
    "monitor": ("perception_nodes.latency_monitor_node", "latency_monitor.param.yaml"),
    "evaluator": ("perception_nodes.evaluator_node", "evaluator.param.yaml"),
}


def print_report(observer: GraphObserver) -> bool:
    node, monitor, evaluator = (observer.status(name) for name in ("multitask_perception", "latency_monitor",
                                                                    "evaluator"))
    print("\n=== multitask_perception demo: 640x480 synthetic camera, one shared-backbone network ===")
    if not node:
        print("no diagnostics from the perception node")
        return False
    print(f"model {node['model']} on {node['engine']} ({node['precision']})")
    print(f"\n{'stage':<18}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for stage in (*STAGES, "publish", "total", "overlay"):
        cells = [float(node.get(f"{stage}_{q}_ms", "nan")) for q in ("p50", "p95", "p99")]
        print(f"{stage:<18}" + "".join(f"{c:>10.2f}" for c in cells))
    print("('total' = frame received by the node -> outputs published; the overlay is drawn after that,\n"
          " only while someone subscribes)")
    print(f"\nframes: received {node['received']}, processed {node['processed']}, dropped {node['dropped']}, "
          f"malformed {node['malformed']}; last second {node['fps_in']} fps in, {node['fps_out']} fps out")
    if monitor:
        print(f"end to end (camera stamp -> monitor receives detections): p50 "
              f"{float(monitor['end_to_end_p50_ms']):.1f} ms, p95 {float(monitor['end_to_end_p95_ms']):.1f} ms, "
              f"p99 {float(monitor['end_to_end_p99_ms']):.1f} ms; camera transport p50 "
              f"{float(monitor['input_p50_ms']):.2f} ms; unanswered frames {monitor['dropped']}")
    if evaluator:
        print(f"accuracy vs ground truth on {evaluator['paired']} frames: mIoU {float(evaluator['miou']):.3f}, "
              f"mAP50 {float(evaluator['map50']):.3f} (detections above the node's score threshold)")
    for path in observer.saved:
        print(f"overlay saved: {path}")
    return int(node["processed"]) > 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to run after the first output")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="where overlay PNGs go")
    parser.add_argument("--model", default="", help="ONNX model for the node (default: the bundled multitask)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    graph_env = local_graph_env()
    os.environ.update(graph_env)
    print(f"[demo] private ROS graph: domain {graph_env['ROS_DOMAIN_ID']}, LOCALHOST discovery, "
          f"Fast DDS profile {graph_env['FASTRTPS_DEFAULT_PROFILES_FILE']}", flush=True)
    observer = GraphObserver("demo_observer")
    observer.save_overlays(args.out, count=3)
    params = {"camera": [f"rate:={args.rate}"], "perception": [f"model:={args.model}"] if args.model else []}
    nodes = {name: NodeProcess(module, *params.get(name, []), params_file=package_file("config", yaml_file),
                               env=os.environ, echo=name).start()
             for name, (module, yaml_file) in NODES.items()}
    failures, deadline = [], None
    try:
        start = time.monotonic()
        while True:
            observer.spin_for(0.1)
            if deadline is None and observer.counter("processed") > 0:
                deadline = time.monotonic() + args.seconds
                print(f"[demo] first outputs after {time.monotonic() - start:.1f} s; running {args.seconds:g} s",
                      flush=True)
            if deadline is not None and time.monotonic() > deadline:
                break
            crashed = [name for name, process in nodes.items() if process.poll() is not None]
            if crashed:
                failures.append(f"{', '.join(crashed)} stopped early")
                break
            if deadline is None and time.monotonic() - start > 120:
                failures.append("no outputs within 120 s")
                break
        ok = print_report(observer)
    except KeyboardInterrupt:
        ok = False
    finally:
        failures += stop_nodes(nodes)
        observer.close()
    for failure in failures:
        print(f"[demo] FAILED: {failure}")
    return 0 if ok and not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
