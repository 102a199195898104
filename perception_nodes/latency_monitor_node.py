"""Watches image-carrying topics: frames/s and latency from header stamp to arrival.

The monitor subscribes with ``raw=True`` and reads only the header stamp from the serialized
CDR bytes, so watching a 1080p stream costs microseconds per frame and does not perturb the
pipeline it measures.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from perception_core.metrics.latency import LatencyWindow
from perception_nodes.params import declare_params, param
from perception_nodes.runner import run_node


def stamp_ns_from_cdr(serialized: bytes) -> int:
    """Header stamp (ns) of a serialized message whose first field is std_msgs/Header."""
    if len(serialized) < 12:
        raise ValueError(f"serialized message of {len(serialized)} bytes is too short for a header")
    endian = "<" if serialized[1] & 1 else ">"  # encapsulation id: CDR_LE = 0x0001, CDR_BE = 0x0000
    sec, nanosec = struct.unpack_from(endian + "iI", serialized, 4)
    return sec * 1_000_000_000 + nanosec


@dataclass(frozen=True)
class LatencyMonitorParams:
    transport: str = param("raw", "Watch 'image' (raw) or 'image/compressed'.", choices=("raw", "compressed"))
    report_period: float = param(1.0, "Seconds between printed summaries.", range=(0.1, 60.0))
    window: int = param(300, "Samples kept for the percentiles.", range=(10, 100000))


class LatencyMonitor(Node):
    def __init__(self) -> None:
        super().__init__("latency_monitor")
        self.params = declare_params(self, LatencyMonitorParams)
        msg_type, topic = (Image, "image") if self.params.transport == "raw" else (CompressedImage, "image/compressed")
        self.window = LatencyWindow(self.params.window)
        self.malformed = 0
        self.sub = self.create_subscription(msg_type, topic, self.on_frame, qos_profile_sensor_data, raw=True)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = self.create_timer(self.params.report_period, self.report)

    def on_frame(self, serialized: bytes) -> None:
        arrival_ns = self.get_clock().now().nanoseconds
        try:
            stamp_ns = stamp_ns_from_cdr(serialized)
        except ValueError as exc:
            self.malformed += 1
            self.get_logger().warning(f"unreadable message: {exc}", throttle_duration_sec=5.0)
            return
        self.window.update(time.monotonic(), (arrival_ns - stamp_ns) / 1e6)

    def report(self) -> None:
        s = self.window.summary()
        if not s.count:
            self.get_logger().info(f"waiting for frames on {self.sub.topic_name}")
        else:
            self.get_logger().info(
                f"{self.sub.topic_name}: {s.rate_hz:5.1f} fps | transport latency p50 {s.p50_ms:.2f} ms, "
                f"p95 {s.p95_ms:.2f} ms, p99 {s.p99_ms:.2f} ms | received {self.window.total}")
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{self.get_name()}: {self.sub.topic_name}",
                                  message="receiving" if s.count else "no frames")
        status.values = [KeyValue(key=k, value=f"{v:.3f}") for k, v in s.as_dict().items()]
        status.values.append(KeyValue(key="received", value=str(self.window.total)))
        status.values.append(KeyValue(key="malformed", value=str(self.malformed)))
        self.diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))
        self.window.reset()


def main(args=None) -> int:
    return run_node(LatencyMonitor, args)


if __name__ == "__main__":
    raise SystemExit(main())
