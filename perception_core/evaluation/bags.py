"""rosbag2 messages built with the pure-Python ``rosbags`` library, for recording bags.

The core never imports rclpy, so messages here are rosbags' dataclasses, serialized to the same
CDR bytes rclpy produces (``ros2 bag play`` replays them, ``rclpy.serialization`` reads them).
Reading bags is perception_core.datasets.bag.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from perception_core.codec import array_to_raw, encode_compressed, from_bgr
from perception_core.datasets.bag import COMPRESSED_TYPE, DETECTIONS_TYPE, IMAGE_TYPE, jazzy_typestore
from perception_core.message_fields import detection_fields, pinhole_camera_info_fields, stamp_parts
from perception_core.types import Detections

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
RECORD_ENCODINGS = ("bgr8", "rgb8", "bgra8", "mono8")
# The format compressed_image_transport writes, so image_transport decoders on the robot read it too.
JPEG_FORMAT = "bgr8; jpeg compressed bgr8"


def _type(name: str):
    return jazzy_typestore().types[name]


# --- messages (rosbags dataclasses; field for field what perception_nodes.conversions builds) ------


def header(stamp_ns: int, frame_id: str):
    sec, nanosec = stamp_parts(stamp_ns)
    time_type, header_type = _type("builtin_interfaces/msg/Time"), _type("std_msgs/msg/Header")
    return header_type(stamp=time_type(sec=sec, nanosec=nanosec), frame_id=frame_id)


def bgr_to_encoding(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """A BGR frame as a camera with ``encoding`` would deliver it (bgr8 is returned as is)."""
    if encoding not in RECORD_ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}; supported: {', '.join(RECORD_ENCODINGS)}")
    return from_bgr(bgr, encoding)


def image_message(array: np.ndarray, encoding: str, msg_header, step_padding: int = 0):
    """sensor_msgs/Image from an array in ``encoding``; ``step_padding`` zero bytes end every row."""
    if step_padding < 0:
        raise ValueError(f"step_padding must be >= 0, got {step_padding}")
    packed, row_bytes = array_to_raw(array, encoding)
    rows = np.frombuffer(packed, np.uint8).reshape(array.shape[0], row_bytes)
    if step_padding:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], step_padding), np.uint8)], axis=1)
    return _type(IMAGE_TYPE)(header=msg_header, height=array.shape[0], width=array.shape[1], encoding=encoding,
                             is_bigendian=int(sys.byteorder == "big"), step=row_bytes + step_padding,
                             data=rows.reshape(-1))


def compressed_image_message(bgr: np.ndarray, msg_header, quality: int = 90):
    """sensor_msgs/CompressedImage (JPEG) with compressed_image_transport's format string."""
    data = np.frombuffer(encode_compressed(bgr, "jpeg", quality), np.uint8)
    return _type(COMPRESSED_TYPE)(header=msg_header, format=JPEG_FORMAT, data=data)


def camera_info_message(width: int, height: int, msg_header, horizontal_fov_deg: float = 90.0):
    """The synthetic camera's CameraInfo (message_fields' pinhole), arrays as rosbags stores them."""
    fields = {k: np.asarray(v) if isinstance(v, list) else v
              for k, v in pinhole_camera_info_fields(width, height, horizontal_fov_deg).items()}
    roi = _type("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _type(CAMERA_INFO_TYPE)(header=msg_header, **fields, binning_x=0, binning_y=0, roi=roi)


def detections_message(dets: Detections, msg_header, class_names: Sequence[str]):
    """vision_msgs/Detection2DArray in pixels, one hypothesis per box with class_id = the class NAME.

    Filled from message_fields.detection_fields, as perception_nodes.conversions.detections_to_msg is
    (identity pose), so both sides of a bag replay compare equal.
    """
    t = jazzy_typestore().types
    identity = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                          orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    detections = []
    for f in detection_fields(dets, class_names):
        hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=f.class_name, score=f.score),
            pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=identity, covariance=np.zeros(36)))
        center = t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=f.center_x, y=f.center_y),
                                             theta=0.0)
        detections.append(t["vision_msgs/msg/Detection2D"](
            header=msg_header, results=[hypothesis], bbox=t["vision_msgs/msg/BoundingBox2D"](
                center=center, size_x=f.size_x, size_y=f.size_y), id=""))
    return t[DETECTIONS_TYPE](header=msg_header, detections=detections)
