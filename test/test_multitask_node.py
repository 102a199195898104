"""The multitask node in-process: outputs, header copy, empty detections, lazy overlay, drops."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from graph_utils import spin_until
from model_fixtures import make_geometry_model
from perception_core.types import SEG_CLASSES
from perception_nodes.conversions import array_to_image_msg, image_msg_to_class_mask, ns_to_stamp
from perception_nodes.multitask_node import MultitaskNode

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def geometry_model(tmp_path_factory):
    return str(make_geometry_model(tmp_path_factory.mktemp("geometry")))


class Harness:
    """The node under test plus a peer node that feeds it frames and records what it publishes."""

    def __init__(self, model: str, **params) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        overrides = [Parameter("model", value=model)] + [Parameter(k, value=v) for k, v in params.items()]
        self.node = MultitaskNode(context=self.context, parameter_overrides=overrides)
        self.peer = rclpy.create_node("peer", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.received = {"segmentation": [], "detections": [], "label_info": [], "overlay": []}
        self.image_pub = self.peer.create_publisher(Image, "image", qos_profile_sensor_data)
        self.subscribe(Image, "segmentation")
        self.subscribe(Detection2DArray, "detections")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.peer.create_subscription(LabelInfo, "segmentation/label_info",
                                      self.received["label_info"].append, latched)

    def subscribe(self, msg_type, topic):
        return self.peer.create_subscription(msg_type, topic, self.received[topic].append, 10)

    def send(self, image: np.ndarray, stamp_ns: int, frame_id: str = "front_camera") -> None:
        spin_until(self.executor, lambda: self.image_pub.get_subscription_count() > 0, timeout=10)
        self.image_pub.publish(array_to_image_msg(image, "bgr8", Header(stamp=ns_to_stamp(stamp_ns),
                                                                        frame_id=frame_id)))

    def wait_for(self, topic: str, count: int, timeout: float = 15.0) -> bool:
        return spin_until(self.executor, lambda: len(self.received[topic]) >= count, timeout)

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
    mask = image_msg_to_class_mask(seg)
    assert mask.shape == (480, 640) and mask[100, 200] == 1 and mask[300, 500] == 0
    det = dets.detections[0]
    assert det.results[0].hypothesis.class_id == "person"
    assert (det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x) == (60.0, 60.0, 80.0)


def test_label_info_is_latched(harness):
    assert harness.wait_for("label_info", 1)
    classes = harness.received["label_info"][0].class_map
    assert [(c.class_id, c.class_name) for c in classes] == list(enumerate(SEG_CLASSES))


@pytest.mark.parametrize("harness", [{"score_threshold": 0.95}], indirect=True)
def test_empty_detections_are_still_published(harness):
    harness.send(red_square_frame(), 1)
    assert harness.wait_for("detections", 1)
    assert harness.received["detections"][0].detections == []


def test_overlay_is_drawn_only_while_subscribed(harness):
    harness.send(red_square_frame(), 1)
    assert harness.wait_for("segmentation", 1)
    assert harness.node.counts["overlays"] == 0
    harness.subscribe(Image, "overlay")
    spin_until(harness.executor, lambda: harness.node.streams[0].overlay_pub.get_subscription_count() > 0, 10)
    harness.send(red_square_frame(), 2)
    assert harness.wait_for("overlay", 1)
    overlay = harness.received["overlay"][0]
    assert (overlay.encoding, overlay.width, overlay.height) == ("bgr8", 640, 480)
    assert harness.node.counts["overlays"] == 1


def test_overload_keeps_the_newest_frame_and_counts_drops(harness):
    """Frames parked faster than the worker runs replace each other; every replaced one is a drop."""
    node = harness.node
    with node._wake:  # hold the worker off while frames arrive, as a slow engine would
        for stamp in range(1, 6):
            node.on_image(node.streams[0], array_to_image_msg(red_square_frame(), "bgr8",
                                                              Header(stamp=ns_to_stamp(stamp), frame_id="cam")))
    assert harness.wait_for("detections", 1)
    assert spin_until(harness.executor, lambda: node.counts["processed"] >= 1, 5)
    assert node.counts["dropped"] == 4
    stamp = harness.received["detections"][-1].header.stamp
    assert stamp.nanosec == 5  # the newest frame won


def test_one_engine_serves_several_cameras_fairly(geometry_model):
    """Two cameras, one node: outputs under each namespace, and a frame parked on each gets served."""
    h = Harness(geometry_model, cameras=["front", "rear"])
    try:
        got = {"front": [], "rear": []}
        for cam in got:
            h.peer.create_subscription(Detection2DArray, f"{cam}/detections", got[cam].append, 10)
        node = h.node
        with node._wake:  # park one frame per camera while the worker is held off
            for stream, stamp in zip(node.streams, (1, 2)):
                node.on_image(stream, array_to_image_msg(red_square_frame(), "bgr8",
                                                         Header(stamp=ns_to_stamp(stamp), frame_id=stream.name)))
        assert spin_until(h.executor, lambda: got["front"] and got["rear"], 15)
        assert got["front"][0].header.frame_id == "front" and got["rear"][0].header.frame_id == "rear"
        assert node.counts["dropped"] == 0 and node.counts["processed"] == 2
        assert [s.sub.topic_name for s in node.streams] == ["/front/image", "/rear/image"]
    finally:
        h.close()


def test_bundled_model_in_process():
    """The default configuration (no parameters: the bundled multitask model) on a simulator frame and a blank one."""
    from pathlib import Path

    from perception_core.sim import VALIDATION_SEED, render_scene
    from perception_core.types import DET_CLASSES

    bundled = Path(__file__).resolve().parents[1] / "models" / "multitask.onnx"
    h = Harness(str(bundled))
    try:
        scene = render_scene(VALIDATION_SEED, 3)
        h.send(scene.frame.image, 42, "front_camera")
        assert h.wait_for("detections", 1)  # one at a time: the node keeps only the newest frame
        h.send(np.full((480, 640, 3), 127, np.uint8), 43, "front_camera")  # nothing to detect
        assert h.wait_for("detections", 2) and h.wait_for("segmentation", 2)
        by_stamp = {m.header.stamp.nanosec: m for m in h.received["detections"]}
        assert {d.results[0].hypothesis.class_id for d in by_stamp[42].detections} <= set(DET_CLASSES)
        assert len(by_stamp[42].detections) >= 1 and by_stamp[43].detections == []
        seg = next(m for m in h.received["segmentation"] if m.header.stamp.nanosec == 42)
        mask = image_msg_to_class_mask(seg)
        assert seg.header.frame_id == "front_camera" and mask.shape == (480, 640)
        assert np.mean(mask == scene.class_mask) > 0.8
    finally:
        h.close()
