"""The synthetic camera in its own process, a subscriber here: frames and ground truth cross intact."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from graph_utils import spin_until
from perception_core.sim import render_scene
from perception_core.sim.classes import SIM_SPEC
from perception_nodes.conversions import (
    compressed_msg_to_bgr,
    detections_from_msg,
    image_msg_to_array,
    image_msg_to_bgr,
    stamp_to_ns,
)
from perception_nodes.processes import NodeProcess

pytestmark = pytest.mark.ros
SEED = 7
LOOP = 4


@pytest.mark.parametrize("width,height", [(640, 480), (1920, 1080)], ids=["640x480", "1080p"])
def test_frames_and_ground_truth_cross_processes(ros_peer, width, height, record_property):
    node, executor = ros_peer
    images, infos, gt = {}, set(), {}
    latencies_ms = []

    def on_image(msg):
        latencies_ms.append((time.time_ns() - stamp_to_ns(msg.header.stamp)) / 1e6)
        images[stamp_to_ns(msg.header.stamp)] = image_msg_to_array(msg)

    node.create_subscription(Image, "image", on_image, qos_profile_sensor_data)
    node.create_subscription(CameraInfo, "camera_info", lambda m: infos.add(stamp_to_ns(m.header.stamp)),
                             qos_profile_sensor_data)
    node.create_subscription(Detection2DArray, "ground_truth/detections",
                             lambda m: gt.__setitem__(stamp_to_ns(m.header.stamp), m), QoSProfile(depth=10))
    camera = NodeProcess("perception_nodes.synthetic_camera_node", f"width:={width}", f"height:={height}",
                         "rate:=30.0", f"loop_frames:={LOOP}", f"seed:={SEED}")
    with camera:
        assert spin_until(executor, lambda: len(images) >= 3, timeout=90), "no frames arrived"
        images.clear(), infos.clear(), latencies_ms.clear()
        started = time.monotonic()
        spin_until(executor, lambda: time.monotonic() - started > 4.0, timeout=5.0)
        window_s = time.monotonic() - started
        received, sent = set(images), set(infos)
    assert camera.poll() == 0, camera.output

    # Frames published while the subscriber was listening (camera_info is tiny and always arrives).
    assert received, "no frames arrived in the measurement window"
    sent_in_window = {s for s in sent if min(received) <= s <= max(received)}
    delivered = len(received & sent_in_window) / len(sent_in_window)
    fps = len(sent) / window_s
    median_ms = float(np.median(latencies_ms))
    record_property("delivery", delivered)
    record_property("median_latency_ms", median_ms)
    print(f"\n{width}x{height}: delivered {delivered:.1%} of {len(sent_in_window)} frames, "
          f"{fps:.1f} fps, median transport latency {median_ms:.1f} ms")
    assert fps > 10, f"camera published only {fps:.1f} frames/s"
    assert delivered >= 0.95

    scenes = [render_scene(SEED, i, width, height) for i in range(LOOP)]
    checked = 0
    for stamp in gt.keys() & images.keys():
        index = next((i for i, s in enumerate(scenes) if np.array_equal(images[stamp], s.frame.image)), None)
        assert index is not None, "a received frame matches no rendered scene"
        dets = detections_from_msg(gt[stamp], SIM_SPEC.det_classes)  # the camera films the simulator
        expected = scenes[index].detections
        assert np.allclose(dets.xyxy, expected.xyxy, atol=1e-3), "ground truth boxes changed in transit"
        assert np.array_equal(dets.class_id, expected.class_id)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("transport,encoding", [("compressed", "bgr8"), ("raw", "rgb8"), ("raw", "mono8")])
def test_encodings_and_compressed_transport(ros_peer, transport, encoding):
    """Frames in every camera format decode back to the rendered scene (JPEG within its loss)."""
    node, executor = ros_peer
    frames = []
    if transport == "raw":
        node.create_subscription(Image, "image", lambda m: frames.append(image_msg_to_bgr(m)), qos_profile_sensor_data)
    else:
        node.create_subscription(CompressedImage, "image/compressed",
                                 lambda m: frames.append(compressed_msg_to_bgr(m)), qos_profile_sensor_data)
    with NodeProcess("perception_nodes.synthetic_camera_node", f"transport:={transport}",
                     f"encoding:={encoding}", "loop_frames:=1", f"seed:={SEED}", "width:=320", "height:=240"):
        assert spin_until(executor, lambda: len(frames) >= 2, timeout=60), "no frames arrived"
    expected = render_scene(SEED, 0, 320, 240).frame.image
    if encoding == "mono8":
        expected = cv2.cvtColor(cv2.cvtColor(expected, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    error = np.abs(frames[-1].astype(np.int16) - expected).mean()
    assert error < (6.0 if transport == "compressed" else 1e-9), f"mean abs error {error:.2f}"
