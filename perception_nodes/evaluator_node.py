"""Online accuracy: pairs the node's outputs with ground truth by header stamp; mIoU and mAP.

Works with the synthetic camera (ground_truth/* topics) live, or during `ros2 bag play --clock`
with use_sim_time. Only frames for which all four messages arrived are scored; frames still
incomplete after ``pair_timeout`` seconds are counted as unpaired and reported, never silently lost.
Detections are scored as published, i.e. above the node's score_threshold, which makes mAP a
little lower than the offline evaluation that keeps every peak.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from perception_core.metrics.detection import DetectionMetric
from perception_core.metrics.segmentation import SegmentationMetric
from perception_core.types import DET_CLASSES, SEG_CLASSES
from perception_nodes.conversions import detections_from_msg, image_msg_to_class_mask, stamp_to_ns
from perception_nodes.params import declare_params, param
from perception_nodes.runner import run_node

SUBSCRIBE_QOS = QoSProfile(depth=30, reliability=ReliabilityPolicy.RELIABLE)
TOPICS = {"segmentation": Image, "detections": Detection2DArray,
          "ground_truth/segmentation": Image, "ground_truth/detections": Detection2DArray}


@dataclass(frozen=True)
class EvaluatorParams:
    report_period: float = param(5.0, "Seconds between printed metric reports.", range=(0.5, 600.0), live=True)
    pair_timeout: float = param(5.0, "A frame still missing a message after this many seconds is unpaired.",
                                range=(0.5, 600.0), live=True)


class Evaluator(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("evaluator", **node_options)
        self.params = declare_params(self, EvaluatorParams, on_change=self._apply_params)
        self.segmentation = SegmentationMetric(SEG_CLASSES)
        self.detection = DetectionMetric(DET_CLASSES)
        self.partial: dict[int, dict] = {}  # stamp -> {topic: message, "_since": monotonic time}
        self.counts = dict.fromkeys(("paired", "unpaired", "malformed"), 0)
        self.subs = [self.create_subscription(msg_type, topic, lambda msg, t=topic: self.on_message(t, msg),
                                              SUBSCRIBE_QOS) for topic, msg_type in TOPICS.items()]
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Wall-clock reports: with use_sim_time a sim-time timer would stop with the bag's clock and
        # never print the final metrics.
        self.timer = self.create_timer(self.params.report_period, self.report,
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _apply_params(self, new: EvaluatorParams) -> None:
        """Live parameters: the report period and the pairing timeout apply from now."""
        old, self.params = self.params, new
        if new.report_period != old.report_period:
            self.timer.timer_period_ns = int(new.report_period * 1e9)

    def on_message(self, topic: str, msg) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        record = self.partial.setdefault(stamp, {"_since": time.monotonic()})
        record[topic] = msg
        if len(record) == len(TOPICS) + 1:
            del self.partial[stamp]
            self.score(record)

    def score(self, record: dict) -> None:
        try:
            masks = [image_msg_to_class_mask(record[t]) for t in ("segmentation", "ground_truth/segmentation")]
            dets = [detections_from_msg(record[t], DET_CLASSES) for t in ("detections", "ground_truth/detections")]
        except ValueError as exc:
            self.counts["malformed"] += 1
            self.get_logger().warning(f"cannot score a frame: {exc}", throttle_duration_sec=5.0)
            return
        self.segmentation.update(masks[0], masks[1])
        self.detection.update(dets[0], dets[1])
        self.counts["paired"] += 1

    def results(self) -> dict[str, float]:
        seg, det = self.segmentation.compute(), self.detection.compute()
        return {"miou": seg.miou, "pixel_accuracy": seg.pixel_accuracy, "map50": det.map50,
                "map50_95": det.map50_95, **{f"iou_{k}": v for k, v in seg.per_class_iou().items()}}

    def report(self) -> None:
        horizon = time.monotonic() - self.params.pair_timeout
        for stamp in [s for s, r in self.partial.items() if r["_since"] < horizon]:
            del self.partial[stamp]
            self.counts["unpaired"] += 1
        if not self.counts["paired"]:
            self.get_logger().info(f"waiting for outputs and ground truth ({self.counts['unpaired']} unpaired)")
            return
        metrics = self.results()
        self.get_logger().info(
            f"{self.counts['paired']} frames: mIoU {metrics['miou']:.3f}, mAP50 {metrics['map50']:.3f}, "
            f"mAP50:95 {metrics['map50_95']:.3f} | unpaired {self.counts['unpaired']}")
        status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{self.get_name()}: accuracy",
                                  message=f"{self.counts['paired']} frames scored")
        status.values = [KeyValue(key=k, value=f"{v:.4f}") for k, v in metrics.items()]
        status.values += [KeyValue(key=k, value=str(v)) for k, v in self.counts.items()]
        self.diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))


def main(args=None) -> int:
    return run_node(Evaluator, args)


if __name__ == "__main__":
    raise SystemExit(main())
