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

import cv2
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from perception_core.pipeline.pipeline import STAGES
from perception_core.resources import package_file
from perception_nodes.conversions import image_msg_to_bgr
from perception_nodes.processes import start_node, stop_nodes
from perception_nodes.ros_env import local_graph_env

# name -> (module, parameter file): the executables and YAML files of launch/simulation.launch.xml
NODES = {
    "camera": ("perception_nodes.synthetic_camera_node", "synthetic_camera.param.yaml"),
    "perception": ("perception_nodes.multitask_node", "multitask_node.param.yaml"),
    "monitor": ("perception_nodes.latency_monitor_node", "latency_monitor.param.yaml"),
    "evaluator": ("perception_nodes.evaluator_node", "evaluator.param.yaml"),
}


class Observer:
    """Collects the latest /diagnostics status per name and saves a few overlay images."""

    def __init__(self, context, out_dir: Path, overlays: int) -> None:
        self.node = rclpy.create_node("demo_observer", context=context)
        self.status: dict[str, dict[str, str]] = {}
        self.out_dir, self.overlays_wanted, self.saved = out_dir, overlays, []
        self.last_saved = 0.0
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 50)
        self.overlay_sub = self.node.create_subscription(Image, "overlay", self.on_overlay, QoSProfile(depth=2))

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.status[status.name] = {kv.key: kv.value for kv in status.values}

    def on_overlay(self, msg: Image) -> None:
        if len(self.saved) < self.overlays_wanted and time.monotonic() - self.last_saved > 3.0:
            path = self.out_dir / f"overlay_{len(self.saved)}.png"
            cv2.imwrite(str(path), image_msg_to_bgr(msg))
            self.saved.append(path)
            self.last_saved = time.monotonic()
            if len(self.saved) == self.overlays_wanted:  # stop the node drawing overlays for us
                self.node.destroy_subscription(self.overlay_sub)

    def find(self, prefix: str) -> dict[str, str]:
        return next((v for k, v in self.status.items() if k.lstrip("/").startswith(prefix)), {})


def print_report(observer: Observer) -> bool:
    node, monitor, evaluator = (observer.find(p) for p in ("multitask_perception:", "latency_monitor:", "evaluator:"))
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
    context = rclpy.Context()
    rclpy.init(context=context)
    observer = Observer(context, args.out, overlays=3)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(observer.node)
    params = {"camera": [f"rate:={args.rate}"], "perception": [f"model:={args.model}"] if args.model else []}
    nodes = {name: start_node(module, params.get(name, []), dict(os.environ), prefix=name,
                              params_file=str(package_file("config", yaml_file)))
             for name, (module, yaml_file) in NODES.items()}
    failures, deadline = [], None
    try:
        start = time.monotonic()
        while True:
            executor.spin_once(timeout_sec=0.1)
            if deadline is None and int(observer.find("multitask_perception:").get("processed", "0")) > 0:
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
        executor.shutdown()
        observer.node.destroy_node()
        rclpy.try_shutdown(context=context)
    for failure in failures:
        print(f"[demo] FAILED: {failure}")
    return 0 if ok and not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
