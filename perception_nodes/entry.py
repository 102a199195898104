"""The executables' entry points (what ``ros2 launch`` and ``ros2 run`` start).

Stop signals are handled before the node's module is imported: importing rclpy, OpenCV and ONNX
Runtime takes about a second, and a Ctrl-C in that second must end the node quietly too.
"""

from __future__ import annotations

import importlib

from perception_nodes import stop

# executable -> module of perception_nodes
NODES = {"multitask_node": "multitask_node", "synthetic_camera": "synthetic_camera_node",
         "latency_monitor": "latency_monitor_node", "stage_profiler": "stage_profiler_node",
         "evaluator": "evaluator_node"}


def run(module: str) -> int:
    stop.handle_stop_signals()
    main = importlib.import_module(module).main
    return 0 if stop.requested else main()


def multitask_node() -> int:
    return run("perception_nodes.multitask_node")


def synthetic_camera() -> int:
    return run("perception_nodes.synthetic_camera_node")


def latency_monitor() -> int:
    return run("perception_nodes.latency_monitor_node")


def stage_profiler() -> int:
    return run("perception_nodes.stage_profiler_node")


def evaluator() -> int:
    return run("perception_nodes.evaluator_node")
