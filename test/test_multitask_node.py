"""The multitask node in-process, seen from outside: outputs, header copy, empty detections, lazy overlay,
newest frame wins, several cameras, and outputs identical to the Pipeline's on the same frames.

The scheduler itself (mailboxes, drops, round robin, shutdown) is tested without ROS in test_scheduling.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from graph_utils import spin_until
from perception_core.model_spec import ModelSpec
from perception_core.pipeline.pipeline import Pipeline
from perception_core.resources import package_file
from perception_nodes.conversions import (
    array_to_image_msg,
    detections_from_msg,
    image_msg_to_class_mask,
    ns_to_stamp,
    stamp_to_ns,
)
from perception_nodes.multitask_node import MultitaskNode

pytestmark = pytest.mark.ros
STATUS = "/multitask_perception: pipeline"



class Harness:
    """The node under test plus a peer node that feeds it frames and records what it publishes."""

    def __init__(self, model: str, image_qos=qos_profile_sensor_data, **params) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        overrides = [Parameter("model", value=str(model)), Parameter("diagnostics_period", value=0.2)]
        self.node = MultitaskNode(context=self.context, parameter_overrides=overrides + [
            Parameter(k, value=v) for k, v in params.items()])
        self.peer = rclpy.create_node("peer", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.received = {"segmentation": [], "detections": [], "label_info": [], "overlay": []}
        self.status: dict[str, str] = {}
        self.image_pub = self.peer.create_publisher(Image, "image", image_qos)
        self.subscribe(Image, "segmentation")
        self.subscribe(Detection2DArray, "detections")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.peer.create_subscription(LabelInfo, "segmentation/label_info",
                                      self.received["label_info"].append, latched)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == STATUS:
                self.status = {kv.key: kv.value for kv in status.values}

    def subscribe(self, msg_type, topic):
        return self.peer.create_subscription(msg_type, topic, self.received[topic].append, 50)

    def send(self, image: np.ndarray, stamp_ns: int, frame_id: str = "front_camera", publisher=None) -> None:
        publisher = publisher or self.image_pub
        spin_until(self.executor, lambda: publisher.get_subscription_count() > 0, timeout=10)
        publisher.publish(array_to_image_msg(image, "bgr8", Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)))

    def wait_for(self, topic: str, count: int, timeout: float = 15.0) -> bool:
        return spin_until(self.executor, lambda: len(self.received[topic]) >= count, timeout)

    def counter(self, key: str) -> int:
        return int(self.status.get(key, -1))

    def wait_for_counters(self, timeout: float = 10.0, **at_least) -> bool:
        """Until a /diagnostics report shows every counter at least at the given value."""
        return spin_until(self.executor, lambda: all(self.counter(k) >= v for k, v in at_least.items()), timeout)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def harness(geometry_model, request):
    h = Harness(geometry_model, **getattr(request, "param", {}))
    yield h
    h.close()


def red_square_frame() -> np.ndarray:
    image = np.zeros((480, 640, 3), np.uint8)
    image[40:200, 100:300, 2] = 255
    return image


def test_outputs_carry_the_input_header_and_camera_resolution(harness):
    stamp = 1_700_000_000_123_456_789
    harness.send(red_square_frame(), stamp)
    assert harness.wait_for("segmentation", 1) and harness.wait_for("detections", 1)
    seg, dets = harness.received["segmentation"][0], harness.received["detections"][0]
    for header in (seg.header, dets.header, dets.detections[0].header):
        assert header.frame_id == "front_camera"
        assert header.stamp.sec * 10**9 + header.stamp.nanosec == stamp
    mask = image_msg_to_class_mask(seg, 2)
    assert mask.shape == (480, 640) and mask[100, 200] == 1 and mask[300, 500] == 0
    det = dets.detections[0]
    assert det.results[0].hypothesis.class_id == ModelSpec.load(harness.node.params.model).det_classes[0]
    assert (det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x) == (60.0, 60.0, 80.0)


def test_label_info_is_latched_with_the_models_classes(harness, geometry_model):
    assert harness.wait_for("label_info", 1)
    classes = harness.received["label_info"][0].class_map
    assert [(c.class_id, c.class_name) for c in classes] == list(enumerate(ModelSpec.load(geometry_model).seg_classes))


@pytest.mark.parametrize("harness", [{"score_threshold": 0.95}], indirect=True)
def test_empty_detections_are_still_published(harness):
    harness.send(red_square_frame(), 1)
    assert harness.wait_for("detections", 1)
    assert harness.received["detections"][0].detections == []


def test_overlay_is_drawn_only_while_subscribed(harness):
    harness.send(red_square_frame(), 1)
    assert harness.wait_for("segmentation", 1) and harness.wait_for_counters(processed=1)
    assert harness.counter("overlays") == 0
    harness.subscribe(Image, "overlay")
    stamp = 2
    while not harness.received["overlay"] and stamp < 50:  # until the node has seen the subscription
        harness.send(red_square_frame(), stamp)
        harness.wait_for("overlay", 1, timeout=0.5)
        stamp += 1
    overlay = harness.received["overlay"][0]
    assert (overlay.encoding, overlay.width, overlay.height) == ("bgr8", 640, 480)
    assert harness.wait_for_counters(overlays=1)
    assert harness.counter("overlays") <= harness.counter("processed") - 1  # never for the first frame


@pytest.mark.parametrize("harness", [{"reliability": "reliable", "depth": 50}], indirect=True)
def test_a_burst_ends_with_the_newest_frame_answered_and_every_frame_accounted_for(harness):
    """Frames the worker never got to are drops (counted); the last one is never dropped."""
    burst = 30
    harness.image_pub = harness.peer.create_publisher(Image, "image", QoSProfile(depth=burst))
    for stamp in range(1, burst + 1):
        harness.send(red_square_frame(), stamp)
    answered = lambda: {stamp_to_ns(m.header.stamp) for m in harness.received["detections"]}  # noqa: E731
    assert spin_until(harness.executor, lambda: burst in answered(), timeout=20)
    assert harness.wait_for_counters(received=burst)
    assert spin_until(harness.executor, lambda: harness.counter("processed") + harness.counter("dropped") == burst,
                      timeout=10), harness.status
    assert harness.counter("processed") == len(answered())


def test_one_engine_serves_several_cameras(geometry_model):
    """Two cameras, one node: outputs under each namespace, per-camera counters in /diagnostics."""
    h = Harness(geometry_model, cameras=["front", "rear"])
    try:
        got = {"front": [], "rear": []}
        for cam in got:
            h.peer.create_subscription(Detection2DArray, f"{cam}/detections", got[cam].append, 10)
        for stamp, cam in enumerate(got, start=1):
            h.send(red_square_frame(), stamp, frame_id=cam,
                   publisher=h.peer.create_publisher(Image, f"{cam}/image", qos_profile_sensor_data))
        assert spin_until(h.executor, lambda: got["front"] and got["rear"], 15)
        assert got["front"][0].header.frame_id == "front" and got["rear"][0].header.frame_id == "rear"
        assert h.wait_for_counters(front_processed=1, rear_processed=1, processed=2)
        assert h.counter("dropped") == 0 and h.counter("front_dropped") == 0
        assert h.peer.count_subscribers("/front/image") == h.peer.count_subscribers("/rear/image") == 1
        assert h.peer.count_subscribers("/image") == 0
    finally:
        h.close()


def test_the_node_publishes_exactly_what_the_pipeline_computes():
    """The default configuration (the bundled model) on simulator frames and a blank one: masks and
    detections equal, bit for bit, a Pipeline run directly on the same frames."""
    from perception_core.sim import VALIDATION_SEED, render_scene

    bundled = str(package_file("models", "multitask.onnx"))
    pipeline = Pipeline.from_model_files([bundled])
    frames = [render_scene(VALIDATION_SEED, i).frame.image for i in range(4)] + [np.full((480, 640, 3), 127, np.uint8)]
    h = Harness(bundled)
    try:
        for stamp, image in enumerate(frames, start=1):
            h.send(image, stamp)  # one at a time: the node keeps only the newest frame
            assert h.wait_for("detections", stamp) and h.wait_for("segmentation", stamp)
        for stamp, image in enumerate(frames, start=1):
            expected = pipeline.run_bgr(image)
            seg = next(m for m in h.received["segmentation"] if stamp_to_ns(m.header.stamp) == stamp)
            dets = next(m for m in h.received["detections"] if stamp_to_ns(m.header.stamp) == stamp)
            assert np.array_equal(image_msg_to_class_mask(seg, len(pipeline.seg_classes)), expected.class_mask)
            assert detections_from_msg(dets, pipeline.det_classes) == expected.detections
        assert len(h.received["detections"][0].detections) >= 1 and h.received["detections"][-1].detections == []
    finally:
        h.close()
