"""Watches a perception graph from outside: frame rates, latencies, and frames that got no answer.

It pairs every output with its input by header stamp (the node copies the input header), so
"end to end" means camera stamp -> this monitor's receipt of the node's detections. Inputs with
no output after ``answer_timeout`` seconds count as dropped. Subscriptions use ``raw=True`` and
read only the stamp from the serialized CDR bytes: watching a 1080p stream costs microseconds
per frame and does not perturb what it measures. With no perception node running it still
reports the camera's rate and transport latency.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from perception_core.metrics.latency import LatencyWindow
from perception_nodes.conversions import diagnostic_array, diagnostic_status, stamp_ns_from_cdr
from perception_nodes.params import declare_params, param
from perception_nodes.runner import run_node

# Best effort matches reliable and best-effort publishers alike.
MONITOR_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


@dataclass(frozen=True)
class LatencyMonitorParams:
    transport: str = param("raw", "Watch 'image' (raw) or 'image/compressed'.", choices=("raw", "compressed"))
    report_period: float = param(1.0, "Seconds between printed summaries.", range=(0.1, 60.0), live=True)
    window: int = param(300, "Samples kept for the percentiles.", range=(10, 100000), live=True)
    answer_timeout: float = param(2.0, "An input with no output after this many seconds is dropped.",
                                  range=(0.1, 60.0), live=True)


class LatencyMonitor(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("latency_monitor", **node_options)
        self.params = p = declare_params(self, LatencyMonitorParams, on_change=self._apply_params)
        image_type, image_topic = (Image, "image") if p.transport == "raw" else (CompressedImage, "image/compressed")
        self.transport = LatencyWindow(p.window)
        self.end_to_end = LatencyWindow(p.window)
        self.pending: OrderedDict[int, int] = OrderedDict()  # input stamp -> arrival (ns), awaiting an answer
        self.counts = dict.fromkeys(("inputs", "answered", "dropped", "unmatched", "malformed"), 0)
        self.image_sub = self.create_subscription(image_type, image_topic, self.on_input, qos_profile_sensor_data,
                                                  raw=True)
        self.output_sub = self.create_subscription(Detection2DArray, "detections", self.on_output, MONITOR_QOS,
                                                   raw=True)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = self.create_timer(p.report_period, self.report)

    def _apply_params(self, new: LatencyMonitorParams) -> None:
        """Live parameters: a new window starts empty; the period and timeout apply from now."""
        old, self.params = self.params, new
        if new.window != old.window:
            self.transport, self.end_to_end = LatencyWindow(new.window), LatencyWindow(new.window)
        if new.report_period != old.report_period:
            self.timer.timer_period_ns = int(new.report_period * 1e9)

    def _stamp(self, serialized: bytes):
        try:
            return stamp_ns_from_cdr(serialized)
        except ValueError as exc:
            self.counts["malformed"] += 1
            self.get_logger().warning(f"unreadable message: {exc}", throttle_duration_sec=5.0)
            return None

    def on_input(self, serialized: bytes) -> None:
        now = self.get_clock().now().nanoseconds
        stamp = self._stamp(serialized)
        if stamp is None:
            return
        self.counts["inputs"] += 1
        self.transport.update(now / 1e9, (now - stamp) / 1e6)
        self.pending[stamp] = now

    def on_output(self, serialized: bytes) -> None:
        now = self.get_clock().now().nanoseconds
        stamp = self._stamp(serialized)
        if stamp is None:
            return
        self.end_to_end.update(now / 1e9, (now - stamp) / 1e6)
        if self.pending.pop(stamp, None) is None:
            self.counts["unmatched"] += 1  # its input arrived before we started, or never reached us
        else:
            self.counts["answered"] += 1

    def _expire(self) -> None:
        horizon = self.get_clock().now().nanoseconds - int(self.params.answer_timeout * 1e9)
        while self.pending and next(iter(self.pending.values())) < horizon:
            self.pending.popitem(last=False)
            self.counts["dropped"] += 1

    def report(self) -> None:
        self._expire()
        cam, e2e = self.transport.summary(), self.end_to_end.summary()
        log = self.get_logger()
        if not cam.count and not e2e.count:
            log.info(f"waiting for frames on {self.image_sub.topic_name}")
        else:
            line = (f"{self.image_sub.topic_name} {cam.rate_hz:5.1f} fps, transport p50 {cam.p50_ms:.2f} ms "
                    f"p95 {cam.p95_ms:.2f} ms p99 {cam.p99_ms:.2f} ms")
            if e2e.count:
                answered = self.counts["answered"] + self.counts["dropped"]
                line += (f" | {self.output_sub.topic_name} {e2e.rate_hz:5.1f} fps, end-to-end p50 {e2e.p50_ms:.1f} ms "
                         f"p95 {e2e.p95_ms:.1f} ms p99 {e2e.p99_ms:.1f} ms | dropped {self.counts['dropped']}"
                         f"/{answered}")
            log.info(line)
        values = {**{f"input_{k}": f"{v:.3f}" for k, v in cam.as_dict().items()},
                  **{f"end_to_end_{k}": f"{v:.3f}" for k, v in e2e.as_dict().items()},
                  **{k: str(v) for k, v in self.counts.items()}}
        self.diag_pub.publish(diagnostic_array(self.get_clock().now(), diagnostic_status(
            f"{self.get_name()}: end to end", values, message="receiving" if cam.count or e2e.count else "no frames")))
        self.transport.reset()
        self.end_to_end.reset()


def main(args=None) -> int:
    return run_node(LatencyMonitor, args)


if __name__ == "__main__":
    raise SystemExit(main())
