"""Watching a running node graph from this process: the one observer of the demo and the graph benchmark.

It keeps the latest /diagnostics values of every node, the camera-stamp latency of output topics
(read from the raw CDR bytes, so watching costs microseconds per message), and can save a few
overlay images. It lives in a context of its own, so it runs beside anything else in the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from perception_nodes.conversions import image_msg_to_bgr, stamp_ns_from_cdr

PERCEPTION = "multitask_perception"  # the perception node's name, as its /diagnostics status names it


class GraphObserver:
    def __init__(self, name: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.statuses: dict[str, dict[str, str]] = {}  # status name -> key/values, most recently updated last
        self.latencies_ms: list[float] = []  # every watched topic
        self.per_topic: dict[str, list[float]] = {}
        self.saved: list[Path] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.statuses.pop(status.name, None)
            self.statuses[status.name] = {kv.key: kv.value for kv in status.values}

    def status(self, node: str = PERCEPTION) -> dict[str, str]:
        """The latest values reported by a node called ``node`` (in any namespace); {} if none yet."""
        matches = [values for name, values in self.statuses.items() if name.rsplit("/", 1)[-1].startswith(f"{node}:")]
        return matches[-1] if matches else {}

    def counter(self, key: str, node: str = PERCEPTION) -> int:
        return int(self.status(node).get(key, 0))

    def watch_latency(self, topic: str) -> None:
        """Record camera stamp -> arrival latency of every message on ``topic`` (a Detection2DArray)."""
        samples = self.per_topic.setdefault(topic, [])

        def on_output(serialized: bytes) -> None:
            latency = (time.time_ns() - stamp_ns_from_cdr(serialized)) / 1e6
            samples.append(latency)
            self.latencies_ms.append(latency)

        self.node.create_subscription(Detection2DArray, topic, on_output,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT), raw=True)

    def save_overlays(self, out_dir: Path, count: int, topic: str = "overlay", spacing_s: float = 3.0) -> None:
        """Save ``count`` overlay images ``spacing_s`` apart into ``out_dir``, then unsubscribe (the node
        draws overlays only while someone listens)."""
        last = [0.0]

        def on_overlay(msg: Image) -> None:
            if len(self.saved) < count and time.monotonic() - last[0] > spacing_s:
                path = out_dir / f"overlay_{len(self.saved)}.png"
                cv2.imwrite(str(path), image_msg_to_bgr(msg))
                self.saved.append(path)
                last[0] = time.monotonic()
                if len(self.saved) == count:
                    self.node.destroy_subscription(subscription)

        subscription = self.node.create_subscription(Image, topic, on_overlay, QoSProfile(depth=2))

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)

    def spin_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not condition():
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
