"""Online accuracy: pairs the node's outputs with ground truth by header stamp; mIoU and mAP.

Works with the synthetic camera (ground_truth/* topics) live, or during `ros2 bag play --clock`
with use_sim_time. Only frames for which all four messages arrived are scored; frames still
incomplete after ``pair_timeout`` seconds are counted as unpaired and reported, never silently lost.
Detections are scored as published, i.e. above the node's score_threshold, which makes mAP a
little lower than the offline evaluation that keeps every peak.

Classes come from the model, never from a built-in list (perception_core.metrics.online): with
``model`` empty, the segmentation classes are those of the LabelInfo the perception node latches
(frames wait, counted as "held", until it arrives) and detections are matched by class name;
``model`` naming a model or its sidecar takes both class lists from that sidecar instead (for
bags whose predictions were recorded without LabelInfo).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from perception_core.metrics.online import PARTS, OnlineAccuracy
from perception_core.model_spec import ModelSpec
from perception_nodes.conversions import diagnostic_array, diagnostic_status
from perception_nodes.params import declare_params, param
from perception_nodes.runner import run_node

SUBSCRIBE_QOS = QoSProfile(depth=30, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
TYPES = {"segmentation": Image, "detections": Detection2DArray, "ground_truth/segmentation": Image,
         "ground_truth/detections": Detection2DArray}


@dataclass(frozen=True)
class EvaluatorParams:
    report_period: float = param(5.0, "Seconds between printed metric reports.", range=(0.5, 600.0), live=True)
    pair_timeout: float = param(5.0, "A frame still missing a message after this many seconds is unpaired.",
                                range=(0.5, 600.0), live=True)
    model: str = param("", "Model (or its .json sidecar) whose classes to score; empty = the classes of the "
                       "perception node's segmentation/label_info, detections matched by class name.")


class Evaluator(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("evaluator", **node_options)
        self.params = p = declare_params(self, EvaluatorParams, on_change=self._apply_params)
        spec = ModelSpec.load(p.model, verify_sha256=False) if p.model else None
        self.accuracy = OnlineAccuracy(p.pair_timeout, spec and spec.seg_classes, spec and spec.det_classes)
        self.subs = [self.create_subscription(TYPES[part], part, lambda msg, t=part: self.accuracy.add(t, msg),
                                              SUBSCRIBE_QOS) for part in PARTS]
        if spec is None:
            self.subs.append(self.create_subscription(LabelInfo, "segmentation/label_info", self.on_label_info,
                                                      LATCHED_QOS))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Wall-clock reports: with use_sim_time a sim-time timer would stop with the bag's clock and
        # never print the final metrics.
        self.timer = self.create_timer(p.report_period, self.report, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _apply_params(self, new: EvaluatorParams) -> None:
        """Live parameters: the report period and the pairing timeout apply from now."""
        old, self.params = self.params, new
        self.accuracy.pair_timeout_s = new.pair_timeout
        if new.report_period != old.report_period:
            self.timer.timer_period_ns = int(new.report_period * 1e9)

    def on_label_info(self, msg: LabelInfo) -> None:
        names = [c.class_name for c in sorted(msg.class_map, key=lambda c: c.class_id)]
        if [c.class_id for c in sorted(msg.class_map, key=lambda c: c.class_id)] != list(range(len(names))):
            self.get_logger().error(f"label_info class ids are not 0..{len(names) - 1}; frames stay held")
        elif self.accuracy.set_seg_classes(names):
            self.get_logger().info(f"scoring {len(names)} segmentation classes from label_info: {', '.join(names)}")

    def report(self) -> None:
        self.accuracy.expire(time.monotonic())
        counts = self.accuracy.counts
        metrics = self.accuracy.results()
        if not metrics:
            waiting = "class names (label_info)" if self.accuracy.seg_classes is None else "outputs and ground truth"
            self.get_logger().info(f"waiting for {waiting} ({counts['held']} held, {counts['unpaired']} unpaired, "
                                   f"{counts['malformed']} malformed)")
            if counts["malformed"]:
                self.get_logger().warning(f"last malformed frame: {self.accuracy.last_error}")
            return
        self.get_logger().info(
            f"{counts['paired']} frames: mIoU {metrics['miou']:.3f}, mAP50 {metrics['map50']:.3f}, "
            f"mAP50:95 {metrics['map50_95']:.3f} | unpaired {counts['unpaired']}, malformed {counts['malformed']}")
        values = {**{k: f"{v:.4f}" for k, v in metrics.items()}, **{k: str(v) for k, v in counts.items()}}
        self.diag_pub.publish(diagnostic_array(self.get_clock().now(), diagnostic_status(
            f"{self.get_name()}: accuracy", values, message=f"{counts['paired']} frames scored")))


def main(args=None) -> int:
    return run_node(Evaluator, args)


if __name__ == "__main__":
    raise SystemExit(main())
