"""The evaluator node in-process with a model whose classes are not the simulator's (12 + 5 classes):
classes from the latched LabelInfo (frames before it are held, not mis-scored) or from a sidecar."""

from __future__ import annotations

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from test_online_accuracy import SEG, frame
from vision_msgs.msg import Detection2DArray, LabelInfo

from graph_utils import spin_until
from model_fixtures import make_geometry_model
from perception_core.model_spec import ModelSpec
from perception_nodes.conversions import label_info_msg
from perception_nodes.evaluator_node import Evaluator

pytestmark = pytest.mark.ros
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Graph:
    def __init__(self, **params) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Evaluator(context=self.context, parameter_overrides=[
            Parameter("report_period", value=0.5), *(Parameter(k, value=v) for k, v in params.items())])
        self.peer = rclpy.create_node("peer", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        for n in (self.node, self.peer):
            self.executor.add_node(n)
        self.status: dict[str, str] = {}
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)
        qos = QoSProfile(depth=30, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {part: self.peer.create_publisher(msg_type, part, qos) for part, msg_type in (
            ("segmentation", Image), ("detections", Detection2DArray), ("ground_truth/segmentation", Image),
            ("ground_truth/detections", Detection2DArray))}

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "evaluator: accuracy":
                self.status = {kv.key: kv.value for kv in status.values}

    def publish_frames(self, stamps) -> None:
        assert spin_until(self.executor, lambda: all(p.get_subscription_count() for p in self.pubs.values()), 10)
        for stamp in stamps:
            for part, msg in frame(stamp, seed=stamp).items():
                if part in self.pubs:
                    self.pubs[part].publish(msg)
            self.executor.spin_once(timeout_sec=0.01)

    def latch_label_info(self, names) -> None:
        self.peer.create_publisher(LabelInfo, "segmentation/label_info", LATCHED).publish(
            label_info_msg(names, Header(), 0.3))

    def wait_for(self, key: str, value: int, timeout: float = 20.0) -> bool:
        return spin_until(self.executor, lambda: int(self.status.get(key, -1)) >= value, timeout)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.try_shutdown(context=self.context)


def test_frames_before_label_info_are_held_then_scored_with_none_malformed():
    graph = Graph()
    try:
        graph.publish_frames(range(1, 6))
        assert spin_until(graph.executor, lambda: graph.node.accuracy.counts["held"] == 5, 10)
        assert graph.status == {}  # nothing scored, nothing reported as accuracy
        graph.latch_label_info(SEG)
        assert graph.wait_for("paired", 5), graph.status
        graph.publish_frames(range(6, 9))
        assert graph.wait_for("paired", 8), graph.status
        assert graph.status["malformed"] == "0" and graph.status["held"] == "0"
        assert {f"iou_{name}" for name in SEG} <= set(graph.status) and float(graph.status["map50"]) > 0.5
    finally:
        graph.close()


def test_a_model_parameter_takes_the_classes_from_its_sidecar(tmp_path):
    model = make_geometry_model(tmp_path)
    graph = Graph(model=str(model))
    try:
        assert graph.node.accuracy.seg_classes == ModelSpec.load(model).seg_classes
        assert graph.node.accuracy.detection.class_names == ModelSpec.load(model).det_classes
    finally:
        graph.close()
