"""rosbag2 bags through the pure-Python ``rosbags`` library: simulator recordings and camera readers.

The core never imports rclpy, so messages here are rosbags' dataclasses, serialized to the same
CDR bytes rclpy produces (``ros2 bag play`` replays them, ``rclpy.serialization`` reads them).
vision_msgs is not in rosbags' Jazzy store: its types are registered from the installed .msg
files, which gives the same RIHS01 type hashes as rosidl.

Reading pairs every image message with the ground truth that carries the same header stamp,
so a bag recorded from the synthetic camera, from ``record_simulation`` or from a robot (no
ground truth at all) is read the same way; frames are never dropped on the way.
"""

from __future__ import annotations

import functools
import os
import posixpath
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from perception_core import message_readers as read
from perception_core.codec import EncodedImage, array_to_raw, encode_compressed, from_bgr
from perception_core.sim import VALIDATION_SEED, render_scene
from perception_core.sim.camera import pinhole_intrinsics
from perception_core.types import DET_CLASSES, SEG_CLASSES, Detections

NS_PER_S = 1_000_000_000
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
TRANSPORTS = ("raw", "compressed")
RECORD_ENCODINGS = ("bgr8", "rgb8", "bgra8", "mono8")
# The format compressed_image_transport writes, so image_transport decoders on the robot read it too.
JPEG_FORMAT = "bgr8; jpeg compressed bgr8"
# Ground truth topics relative to the camera namespace, as the synthetic camera publishes them.
TRUTH_TOPICS = {"mask": "ground_truth/segmentation", "detections": "ground_truth/detections"}


# --- types ---------------------------------------------------------------------------------------


def vision_msgs_msg_dir() -> Path:
    """The vision_msgs .msg folder: each AMENT_PREFIX_PATH prefix, then this Python's prefix, then the source tree."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates = [Path(prefix) / "share" / "vision_msgs" / "msg" for prefix in prefixes]
    candidates.append(Path(__file__).resolve().parents[2] / "tools" / "ros_interfaces" / "vision_msgs" / "msg")
    for folder in candidates:
        if any(folder.glob("*.msg")):
            return folder
    raise FileNotFoundError("no vision_msgs .msg files in " + ", ".join(str(c) for c in candidates))


@functools.lru_cache(maxsize=1)
def jazzy_typestore() -> Typestore:
    """rosbags' ROS 2 Jazzy types plus vision_msgs (built once per process)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for msg_file in sorted(vision_msgs_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(msg_file.read_text(), f"vision_msgs/msg/{msg_file.stem}"))
    store.register(types)
    return store


def _type(name: str):
    return jazzy_typestore().types[name]


# --- messages (rosbags dataclasses; field for field what perception_nodes.conversions builds) ------


def header(stamp_ns: int, frame_id: str):
    time_type, header_type = _type("builtin_interfaces/msg/Time"), _type("std_msgs/msg/Header")
    return header_type(stamp=time_type(sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S), frame_id=frame_id)


def stamp_ns(msg_header) -> int:
    """Header stamp in integer nanoseconds: the key that pairs a frame with its ground truth."""
    return msg_header.stamp.sec * NS_PER_S + msg_header.stamp.nanosec


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
    """The synthetic camera's CameraInfo (perception_core.sim.camera)."""
    optics = {k: np.asarray(v) for k, v in pinhole_intrinsics(width, height, horizontal_fov_deg).items()}
    roi = _type("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _type(CAMERA_INFO_TYPE)(
        header=msg_header, height=height, width=width, distortion_model="plumb_bob", **optics, binning_x=0,
        binning_y=0, roi=roi)


def detections_message(dets: Detections, msg_header, class_names: Sequence[str] = DET_CLASSES):
    """vision_msgs/Detection2DArray in pixels, one hypothesis per box with class_id = the class NAME.

    Same layout as perception_nodes.conversions.detections_to_msg (centre and size in float64 from
    the float32 corners; identity pose), so both sides of a bag replay compare equal.
    """
    if dets.class_id.size and (dets.class_id.min() < 0 or dets.class_id.max() >= len(class_names)):
        raise ValueError(f"class ids {sorted(set(dets.class_id.tolist()))} out of range for {len(class_names)} names")
    t = jazzy_typestore().types
    identity = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                          orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    xyxy = dets.xyxy.astype(np.float64)
    centers = ((xyxy[:, :2] + xyxy[:, 2:]) * 0.5).tolist()
    sizes = (xyxy[:, 2:] - xyxy[:, :2]).tolist()
    detections = []
    for (cx, cy), (width, height), class_id, score in zip(centers, sizes, dets.class_id.tolist(),
                                                          dets.score.tolist(), strict=True):
        hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=class_names[class_id], score=score),
            pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=identity, covariance=np.zeros(36)))
        center = t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=cx, y=cy), theta=0.0)
        detections.append(t["vision_msgs/msg/Detection2D"](
            header=msg_header, results=[hypothesis], bbox=t["vision_msgs/msg/BoundingBox2D"](
                center=center, size_x=width, size_y=height), id=""))
    return t[DETECTIONS_TYPE](header=msg_header, detections=detections)


# --- writing -------------------------------------------------------------------------------------


def record_simulation(path: Union[str, Path], frames: int, rate: float = 30.0, width: int = 640, height: int = 480,
                      encoding: str = "bgr8", transport: str = "raw", storage: str = "mcap",
                      seed: int = VALIDATION_SEED, step_padding: int = 0, jpeg_quality: int = 90,
                      start_ns: Optional[int] = None, frame_id: str = "camera", progress: bool = True) -> Path:
    """Write simulator scenes 0..frames-1 of ``seed`` as a camera would record them; return the bag folder.

    Topics: ``/image`` (raw, in ``encoding`` with ``step_padding``) or ``/image/compressed`` (JPEG),
    ``/camera_info``, ``/ground_truth/segmentation`` (mono8 class ids) and ``/ground_truth/detections``
    (class names), all four with one header stamp per frame; the bag timestamps are those stamps,
    ``1/rate`` apart from ``start_ns`` (default: now).
    """
    if frames < 1 or rate <= 0:
        raise ValueError(f"need frames >= 1 and rate > 0, got {frames}, {rate}")
    if transport not in TRANSPORTS or storage not in STORAGES:
        raise ValueError(f"transport must be one of {TRANSPORTS} and storage one of {tuple(STORAGES)}, "
                         f"got {transport!r}, {storage!r}")
    if transport == "compressed" and encoding != "bgr8":
        raise ValueError(f"the compressed transport records JPEG from bgr8 frames; got encoding {encoding!r}")
    bgr_to_encoding(np.zeros((1, 1, 3), np.uint8), encoding)  # rejects an unknown encoding before the bag exists
    path = Path(path)
    store = jazzy_typestore()
    start_ns = time.time_ns() if start_ns is None else start_ns
    image_topic, image_type = ("/image", IMAGE_TYPE) if transport == "raw" else ("/image/compressed", COMPRESSED_TYPE)
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        image_conn, info_conn, mask_conn, dets_conn = (
            writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in (
                (image_topic, image_type), ("/camera_info", CAMERA_INFO_TYPE),
                ("/" + TRUTH_TOPICS["mask"], IMAGE_TYPE), ("/" + TRUTH_TOPICS["detections"], DETECTIONS_TYPE)))
        for index in tqdm(range(frames), desc=f"record {path.name}", unit="frame", disable=not progress):
            scene = render_scene(seed, index, width, height)
            stamp = start_ns + round(index * NS_PER_S / rate)
            msg_header = header(stamp, frame_id)
            if transport == "raw":
                image = image_message(bgr_to_encoding(scene.frame.image, encoding), encoding, msg_header, step_padding)
            else:
                image = compressed_image_message(scene.frame.image, msg_header, jpeg_quality)
            for conn, msg in ((image_conn, image), (info_conn, camera_info_message(width, height, msg_header)),
                              (mask_conn, image_message(scene.class_mask, "mono8", msg_header)),
                              (dets_conn, detections_message(scene.detections, msg_header))):
                writer.write(conn, stamp, store.serialize_cdr(msg, conn.msgtype))
    return path


def bag_size_bytes(path: Union[str, Path]) -> int:
    """Bytes on disk of a bag folder (data files and metadata)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# --- reading -------------------------------------------------------------------------------------


class BagFrame(NamedTuple):
    """One image message and the ground truth with its stamp (None where the bag has none for it)."""

    stamp_ns: int
    image: EncodedImage
    truth_mask: Optional[np.ndarray]
    truth_detections: Optional[Detections]


def find_image_topic(connections: Sequence[Connection]) -> str:
    """``/image``, else ``/image/compressed``, else the only camera topic that is not a mask or an overlay."""
    image_topics = sorted({c.topic for c in connections if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)})
    for preferred in ("/image", "/image/compressed"):
        if preferred in image_topics:
            return preferred
    cameras = [t for t in image_topics if not t.endswith(("segmentation", "overlay"))]
    if len(cameras) != 1:
        raise ValueError(f"cannot tell the camera topic among {image_topics or 'no image topics'}; name one")
    return cameras[0]


def camera_namespace(image_topic: str) -> str:
    """``/cam/image`` and ``/cam/image/compressed`` -> ``/cam``: where the camera's ground truth topics live."""
    topic = image_topic.removesuffix("/compressed")
    return posixpath.dirname(topic) or "/"


class ImageBag:
    """A bag's camera frames, each paired by header stamp with ``ground_truth/*`` of the camera's namespace.

    Use as a context manager; :meth:`frames` yields one :class:`BagFrame` per image message, in bag
    order. Ground truth may come before or after its image; truth more than ``pairing_window_s``
    of bag time away from its image (or none) leaves that frame's truth at None. Images are never
    dropped: reading ends with an error if the number yielded differs from the bag's count.
    """

    def __init__(self, path: Union[str, Path], image_topic: Optional[str] = None,
                 det_classes: Sequence[str] = DET_CLASSES, num_seg_classes: int = len(SEG_CLASSES),
                 pairing_window_s: float = 1.0) -> None:
        self.path = Path(path)
        self.det_classes = tuple(det_classes)
        self.num_seg_classes = num_seg_classes
        self.pairing_window_ns = round(pairing_window_s * NS_PER_S)
        self._reader = Reader(self.path)
        self._reader.open()
        try:
            self._select_topics(image_topic)
        except ValueError:
            self.close()
            raise

    def _select_topics(self, image_topic: Optional[str]) -> None:
        self.connections: list[Connection] = list(self._reader.connections)
        self.image_topic = image_topic or find_image_topic(self.connections)
        image_conns = [c for c in self.connections if c.topic == self.image_topic]
        if not image_conns or any(c.msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE) for c in image_conns):
            raise ValueError(f"{self.image_topic} is not an Image or CompressedImage topic of {self.path}; topics: "
                             f"{sorted({(c.topic, c.msgtype) for c in self.connections})}")
        self.image_type = image_conns[0].msgtype
        self.image_count = sum(c.msgcount for c in image_conns)
        namespace = camera_namespace(self.image_topic)
        expected = {"mask": IMAGE_TYPE, "detections": DETECTIONS_TYPE}
        self.truth_topics = {kind: posixpath.join(namespace, topic) for kind, topic in TRUTH_TOPICS.items()
                             if any(c.topic == posixpath.join(namespace, topic) and c.msgtype == expected[kind]
                                    for c in self.connections)}
        self._kind = {c.id: "image" for c in image_conns}
        self._kind.update({c.id: kind for kind, topic in self.truth_topics.items()
                           for c in self.connections if c.topic == topic})

    @property
    def storage(self) -> str:
        """mcap or sqlite3, from the data files' suffixes."""
        files = [self.path] if self.path.is_file() else list(self.path.iterdir())
        return "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"

    @property
    def duration_s(self) -> float:
        return self._reader.duration / NS_PER_S

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> ImageBag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def frames(self) -> Iterator[BagFrame]:
        yielded = 0
        for frame in self._paired_frames():
            yielded += 1
            yield frame
        if yielded != self.image_count:
            raise RuntimeError(f"read {yielded} of the {self.image_count} messages on {self.image_topic} "
                               f"in {self.path}")

    def _paired_frames(self) -> Iterator[BagFrame]:
        store = jazzy_typestore()
        wanted = [c for c in self.connections if c.id in self._kind]
        frames: dict[int, dict] = {}  # stamp -> {"seen": bag time of the image, "image": msg, kind: msg}, image order
        early_truth: dict[int, dict] = {}  # stamp -> {"seen": bag time, kind: msg}: truth ahead of its image
        for conn, bag_time, raw in self._reader.messages(connections=wanted):
            kind = self._kind[conn.id]
            msg = store.deserialize_cdr(raw, conn.msgtype)
            stamp = stamp_ns(msg.header)
            if kind == "image":
                if stamp in frames:  # a second image with that stamp (e.g. an unstamped camera): the first is done
                    yield from self._release(frames, until_stamp=stamp)
                frames[stamp] = {**early_truth.pop(stamp, {}), "seen": bag_time, "image": msg}
            elif stamp in frames and kind not in frames[stamp]:
                frames[stamp][kind] = msg
            else:
                early_truth.setdefault(stamp, {"seen": bag_time})[kind] = msg
            yield from self._release(frames, now=bag_time)
            for old in [s for s, entry in early_truth.items() if bag_time - entry["seen"] > self.pairing_window_ns]:
                del early_truth[old]
        yield from self._release(frames, until_stamp=next(reversed(frames), None))

    def _release(self, frames: dict[int, dict], now: Optional[int] = None,
                 until_stamp: Optional[int] = None) -> Iterator[BagFrame]:
        """Yield the oldest frames in order while complete, waited for too long, or at or before ``until_stamp``."""
        forced = until_stamp is not None
        while frames:
            stamp, entry = next(iter(frames.items()))
            complete = all(kind in entry for kind in self.truth_topics)
            expired = now is not None and now - entry["seen"] > self.pairing_window_ns
            if not (forced or complete or expired):
                return
            del frames[stamp]
            yield self._frame(stamp, entry)
            if stamp == until_stamp:
                return

    def _frame(self, stamp: int, entry: dict) -> BagFrame:
        try:
            mask = read.class_mask(entry["mask"], self.num_seg_classes) if "mask" in entry else None
            dets = read.detections(entry["detections"], self.det_classes) if "detections" in entry else None
        except ValueError as exc:
            raise ValueError(f"ground truth at stamp {stamp} in {self.path}: {exc}") from exc
        return BagFrame(stamp, read.encoded_image(entry["image"]), mask, dets)
