"""Message fields computed once for rclpy and rosbags messages (the two builders are compared in test_bags)."""

import math

import pytest

from perception_core.message_fields import detection_fields, pinhole_camera_info_fields, stamp_parts
from perception_core.types import Detections


@pytest.mark.parametrize("ns,parts", [(0, (0, 0)), (999_999_999, (0, 999_999_999)), (1_000_000_000, (1, 0)),
                                      (1_700_000_000_123_456_789, (1_700_000_000, 123_456_789))])
def test_stamp_parts(ns, parts):
    assert stamp_parts(ns) == parts


def test_detection_fields_are_float64_centres_and_sizes_of_the_float32_corners():
    dets = Detections.from_lists([[10.5, 20.25, 30.75, 40.0]], [1], [0.875])
    (f,) = detection_fields(dets, ("a", "b"))
    assert (f.center_x, f.center_y, f.size_x, f.size_y, f.class_name, f.score) == (20.625, 30.125, 20.25, 19.75,
                                                                                   "b", 0.875)
    assert f.center_x - f.size_x / 2 == 10.5  # the reader recovers the corner exactly
    with pytest.raises(ValueError, match=r"class ids \[2\] out of range for 2 class names"):
        detection_fields(Detections.from_lists([[0, 0, 1, 1]], [2]), ("a", "b"))


def test_pinhole_camera_info_fields():
    fields = pinhole_camera_info_fields(640, 480, 90.0)
    assert (fields["width"], fields["height"], fields["distortion_model"]) == (640, 480, "plumb_bob")
    assert fields["k"][0] == pytest.approx(320.0 / math.tan(math.pi / 4)) and fields["k"][2] == 319.5
    assert len(fields["d"]) == 5 and len(fields["r"]) == 9 and len(fields["p"]) == 12
    with pytest.raises(ValueError, match="horizontal_fov_deg"):
        pinhole_camera_info_fields(640, 480, 180.0)
