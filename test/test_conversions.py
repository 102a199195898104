"""perception_nodes.conversions on real rclpy message objects (no ROS graph needed)."""

import re

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.clock import Clock, ClockType
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, ObjectHypothesisWithPose

from perception_core.codec import HOST_IS_BIGENDIAN, ImageDecodeError
from perception_core.types import Detections
from perception_nodes.conversions import (
    array_to_image_msg,
    bgr_to_compressed_msg,
    class_mask_to_image_msg,
    compressed_msg_to_bgr,
    compressed_msg_to_frame,
    copy_header,
    detections_from_msg,
    detections_to_msg,
    diagnostic_array,
    diagnostic_status,
    image_msg_to_array,
    image_msg_to_bgr,
    image_msg_to_class_mask,
    image_msg_to_frame,
    label_info_msg,
    ns_to_stamp,
    stamp_ns_from_cdr,
    stamp_text,
    stamp_to_ns,
)

# A label set of this test's own: conversions know no class list.
SEG_CLASSES = ("floor", "wall", "shelf", "pallet", "door", "forklift", "worker")
DET_CLASSES = ("pallet", "forklift", "worker")

H, W = 6, 5
SHAPES = {  # encoding -> (channels, dtype)
    "bgr8": (3, np.uint8), "rgb8": (3, np.uint8), "bgra8": (4, np.uint8), "rgba8": (4, np.uint8),
    "mono8": (1, np.uint8), "8UC1": (1, np.uint8), "8UC3": (3, np.uint8),
    "mono16": (1, np.uint16), "16UC1": (1, np.uint16),
}


def header(sec: int = 1_700_000_000, nanosec: int = 123_456_789, frame_id: str = "camera_optical") -> Header:
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def sample(encoding: str, height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    channels, dtype = SHAPES[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype, endpoint=True)


def raw_image_msg(array: np.ndarray, encoding: str, pad: int, bigendian: bool) -> Image:
    """An Image as a foreign driver might send it: padded rows, either byte order; built without the module."""
    typed = array.astype(array.dtype.newbyteorder(">" if bigendian else "<"))
    rows = typed.view(np.uint8).reshape(array.shape[0], -1)
    raw = np.zeros((array.shape[0], rows.shape[1] + pad), np.uint8)
    raw[:, : rows.shape[1]] = rows
    msg = Image(header=header(), height=array.shape[0], width=array.shape[1], encoding=encoding,
                is_bigendian=int(bigendian), step=raw.shape[1])
    msg.data.frombytes(raw.tobytes())
    return msg


def assert_copied_header(copy: Header, original: Header) -> None:
    assert copy == original
    assert copy is not original and copy.stamp is not original.stamp


@pytest.mark.parametrize("encoding", sorted(SHAPES))
def test_image_round_trip(encoding):
    array, source = sample(encoding), header()
    before = array.copy()
    msg = array_to_image_msg(array, encoding, source)
    assert (msg.height, msg.width, msg.encoding) == (H, W, encoding)
    assert msg.step == W * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    assert msg.is_bigendian == int(HOST_IS_BIGENDIAN) and len(msg.data) == msg.step * H
    assert_copied_header(msg.header, source)
    np.testing.assert_array_equal(image_msg_to_array(msg), array)
    np.testing.assert_array_equal(array, before)


def test_message_owns_its_pixels():
    array = sample("bgr8")
    msg = array_to_image_msg(array, "bgr8", header())
    array[:] = 0
    assert np.frombuffer(msg.data, np.uint8).any(), "the message must not alias the caller's array"


@pytest.mark.parametrize("encoding", ["bgr8", "mono8", "rgba8", "mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 6])
def test_foreign_images_decode(encoding, bigendian, pad):
    array = sample(encoding)
    msg = raw_image_msg(array, encoding, pad, bigendian)
    np.testing.assert_array_equal(image_msg_to_array(msg), array)


@pytest.mark.parametrize("encoding", ["bgr8", "mono8"])
def test_decoding_a_message_is_zero_copy(encoding):
    msg = raw_image_msg(sample(encoding), encoding, pad=4, bigendian=False)
    view = image_msg_to_array(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    assert not view.flags.writeable


def test_strided_array_becomes_packed_rows():
    array = sample("bgr8", width=2 * W)[:, ::2]
    msg = array_to_image_msg(array, "bgr8", header())
    assert msg.step == 3 * W
    np.testing.assert_array_equal(image_msg_to_array(msg), array)


def test_image_msg_to_bgr():
    rgb = sample("rgb8")
    np.testing.assert_array_equal(image_msg_to_bgr(array_to_image_msg(rgb, "rgb8", header())), rgb[..., ::-1])
    msg = raw_image_msg(sample("bgr8"), "bgr8", pad=2, bigendian=False)
    assert np.shares_memory(image_msg_to_bgr(msg), np.frombuffer(msg.data, np.uint8)), "bgr8 needs no copy"


def test_image_msg_to_frame():
    bgr = sample("bgr8")
    frame = image_msg_to_frame(array_to_image_msg(bgr, "bgr8", header(sec=3, nanosec=5, frame_id="cam")))
    assert (frame.stamp_ns, frame.frame_id) == (3_000_000_005, "cam")
    np.testing.assert_array_equal(frame.image, bgr)


@pytest.mark.parametrize(("fields", "message"), [
    (dict(encoding="yuv422"), "unsupported encoding 'yuv422'"),
    (dict(step=10), "step 10 < width*bytes_per_pixel 15 for bgr8 5x6"),
    (dict(height=H + 1), "data has 90 bytes < step*height 105 for bgr8 5x7"),
    (dict(width=0), "width is 0"),
])
def test_malformed_image_msg(fields, message):
    msg = array_to_image_msg(sample("bgr8"), "bgr8", header())
    for name, value in fields.items():
        setattr(msg, name, value)
    with pytest.raises(ImageDecodeError, match=re.escape(message)):
        image_msg_to_bgr(msg)


def test_png_message_round_trip():
    bgr, source = sample("bgr8", 16, 24), header()
    msg = bgr_to_compressed_msg(bgr, source, "png")
    assert msg.format == "bgr8; png compressed bgr8"
    assert_copied_header(msg.header, source)
    np.testing.assert_array_equal(compressed_msg_to_bgr(msg), bgr)


def test_jpeg_message_round_trip():
    y, x = np.mgrid[0:32, 0:48]
    bgr = np.stack([x * 5, y * 7, x + y], -1).astype(np.uint8)
    msg = bgr_to_compressed_msg(bgr, header(), "jpeg", quality=95)
    assert msg.format == "bgr8; jpeg compressed bgr8"
    frame = compressed_msg_to_frame(msg)
    assert frame.stamp_ns == stamp_to_ns(msg.header.stamp)
    assert np.abs(frame.image.astype(int) - bgr).mean() < 2.0


def test_corrupt_compressed_msg():
    msg = CompressedImage(header=header(), format="jpeg")
    msg.data.frombytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageDecodeError, match="cannot decode 20 bytes as jpeg"):
        compressed_msg_to_bgr(msg)
    with pytest.raises(ImageDecodeError, match=re.escape("empty compressed jpeg data")):
        compressed_msg_to_bgr(CompressedImage(format="jpeg"))


def test_class_mask_round_trip():
    mask = np.random.default_rng(1).integers(0, len(SEG_CLASSES), (H, W), np.uint8)
    source = header()
    msg = class_mask_to_image_msg(mask, source, len(SEG_CLASSES))
    assert (msg.encoding, msg.step) == ("mono8", W)
    assert_copied_header(msg.header, source)
    np.testing.assert_array_equal(image_msg_to_class_mask(msg, len(SEG_CLASSES)), mask)


def test_class_mask_checks():
    with pytest.raises(ValueError, match="holds id 7, only 7 classes exist"):
        class_mask_to_image_msg(np.full((H, W), 7, np.uint8), header(), 7)
    assert class_mask_to_image_msg(np.full((H, W), 7, np.uint8), header(), 12).height == H  # a 12-class model's
    with pytest.raises(ImageDecodeError, match="a class mask must be mono8"):
        image_msg_to_class_mask(array_to_image_msg(sample("bgr8"), "bgr8", header()), 7)
    wide = array_to_image_msg(np.full((H, W), 9, np.uint8), "mono8", header())
    with pytest.raises(ValueError, match="holds id 9"):
        image_msg_to_class_mask(wide, 7)
    assert image_msg_to_class_mask(wide, num_classes=10).max() == 9


def sample_detections(n: int, seed: int = 2) -> Detections:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 640, (n, 2))
    sizes = rng.uniform(0.25, 200, (n, 2))
    xyxy = np.concatenate([corners, corners + sizes], axis=1).astype(np.float32)
    return Detections(xyxy, rng.integers(0, len(DET_CLASSES), n).astype(np.int32), rng.random(n).astype(np.float32))


@pytest.mark.parametrize("n", [0, 1, 17])
def test_detections_round_trip(n):
    dets, source = sample_detections(n), header()
    msg = detections_to_msg(dets, source, DET_CLASSES)
    assert isinstance(msg, Detection2DArray) and len(msg.detections) == n
    assert_copied_header(msg.header, source)
    for det, xyxy, class_id, score in zip(msg.detections, dets.xyxy, dets.class_id, dets.score, strict=True):
        assert_copied_header(det.header, source)
        assert len(det.results) == 1
        assert det.results[0].hypothesis.class_id == DET_CLASSES[class_id]
        assert det.results[0].hypothesis.score == pytest.approx(score)
        center = det.bbox.center.position
        assert (center.x, center.y) == pytest.approx(((xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2))
        assert (det.bbox.size_x, det.bbox.size_y) == pytest.approx((xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]))
    assert detections_from_msg(msg, DET_CLASSES) == dets


def test_detections_from_msg_picks_the_best_hypothesis():
    msg = detections_to_msg(sample_detections(1), header(), DET_CLASSES)
    better = ObjectHypothesisWithPose()
    better.hypothesis.class_id, better.hypothesis.score = "worker", 0.999
    msg.detections[0].results.insert(0, better)
    dets = detections_from_msg(msg, DET_CLASSES)
    assert dets.class_id.tolist() == [DET_CLASSES.index("worker")]
    assert dets.score.tolist() == [pytest.approx(0.999)]


def test_detections_errors():
    msg = detections_to_msg(sample_detections(2), header(), DET_CLASSES)
    msg.detections[1].results[0].hypothesis.class_id = "dog"
    with pytest.raises(ValueError, match="detection 1 has unknown class name 'dog'; known: \\['pallet'"):
        detections_from_msg(msg, DET_CLASSES)
    msg.detections[1].results = []
    with pytest.raises(ValueError, match="detection 1 has no hypotheses"):
        detections_from_msg(msg, DET_CLASSES)
    with pytest.raises(ValueError, match=re.escape("class ids [2] out of range for 2 class names")):
        detections_to_msg(Detections.from_lists([[0, 0, 1, 1]], [2]), header(), DET_CLASSES[:2])


def test_label_info():
    source = header()
    msg = label_info_msg(SEG_CLASSES, source, 0.35)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == list(enumerate(SEG_CLASSES))
    assert msg.threshold == pytest.approx(0.35)
    assert_copied_header(msg.header, source)


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789])
def test_stamp_round_trip(ns):
    stamp = ns_to_stamp(ns)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert stamp_to_ns(stamp) == ns


def test_stamp_read_from_serialized_bytes_without_deserializing():
    from rclpy.serialization import serialize_message

    for ns in (0, 1_700_000_000_123_456_789):
        msg = detections_to_msg(sample_detections(3), Header(stamp=ns_to_stamp(ns)), DET_CLASSES)
        assert stamp_ns_from_cdr(serialize_message(msg)) == ns
    assert stamp_text(ns_to_stamp(1_000_000_005)) == "1.000000005"
    with pytest.raises(ValueError, match="too short"):
        stamp_ns_from_cdr(b"\x00\x01\x00\x00")


def test_diagnostics_messages_from_core_values():
    status = diagnostic_status("node: pipeline", {"received": "3", "fps_in": "1.50"}, "warn", "1 dropped", "ort")
    assert (status.level, status.name, status.message, status.hardware_id) == (
        DiagnosticStatus.WARN, "node: pipeline", "1 dropped", "ort")
    assert [(kv.key, kv.value) for kv in status.values] == [("received", "3"), ("fps_in", "1.50")]
    array = diagnostic_array(Clock(clock_type=ClockType.ROS_TIME).now(), status)
    assert array.status == [status] and array.header.stamp.sec > 0


def test_copy_header_is_independent():
    source = header()
    copy = copy_header(source)
    source.stamp.sec, source.frame_id = 1, "other"
    assert (copy.stamp.sec, copy.frame_id) == (1_700_000_000, "camera_optical")


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8", "mono8", "mono16"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_matches_cv_bridge(encoding, bigendian):
    cv_bridge = pytest.importorskip(
        "cv_bridge", reason="ROS 2 cv_bridge is not pip-installable; this runs where a ROS distro provides it")
    bridge = cv_bridge.CvBridge()
    array = sample(encoding)
    msg = raw_image_msg(array, encoding, pad=4, bigendian=bigendian)
    np.testing.assert_array_equal(image_msg_to_array(msg), bridge.imgmsg_to_cv2(msg, "passthrough"))
    np.testing.assert_array_equal(image_msg_to_bgr(msg), bridge.imgmsg_to_cv2(msg, "bgr8"))
    theirs = bridge.cv2_to_imgmsg(array, encoding)
    ours = array_to_image_msg(array, encoding, header())
    assert (ours.step, ours.is_bigendian, bytes(ours.data)) == (theirs.step, theirs.is_bigendian, bytes(theirs.data))
