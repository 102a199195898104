"""rosbag2 bags as a FrameSource: camera images plus the ground truth topics a bag may carry (rosbags, never rclpy).

Every image message becomes one Sample, in bag order, its payload left encoded so that the
evaluation times the decode and counts a corrupt frame instead of losing it. Ground truth
(``ground_truth/segmentation``, ``ground_truth/detections`` in the camera's namespace) is paired
with its image by header stamp, whether it comes before or after it. A bag does not say its
classes: the spec it is read with (the model's, when evaluating one) validates the masks and maps
detection class names to ids; truth that does not fit is counted in ``truth_errors``, not fatal.
vision_msgs is not in rosbags' Jazzy store: its types come from the installed .msg files, which
gives the same RIHS01 type hashes as rosidl.
"""

from __future__ import annotations

import functools
import os
import posixpath
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional, Union

from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from perception_core import message_readers as read
from perception_core.datasets.source import Sample
from perception_core.datasets.spec import DatasetSpec
from perception_core.resources import SOURCE_ROOT

NS_PER_S = read.NS_PER_S
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
# Ground truth topics relative to the camera namespace, as the synthetic camera publishes them.
TRUTH_TOPICS = {"mask": "ground_truth/segmentation", "detections": "ground_truth/detections"}


def vision_msgs_msg_dir() -> Path:
    """The vision_msgs .msg folder: each AMENT_PREFIX_PATH prefix, then this Python's prefix, then the source tree."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates = [Path(prefix) / "share" / "vision_msgs" / "msg" for prefix in prefixes]
    candidates.append(SOURCE_ROOT / "tools" / "ros_interfaces" / "vision_msgs" / "msg")
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


def bag_size_bytes(path: Union[str, Path]) -> int:
    """Bytes on disk of a bag: a folder's data files and metadata, or a single .mcap/.db3 file."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


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


class BagSource:
    """The camera frames of a bag, each with the ground truth of its stamp that ``spec`` can label.

    Truth more than ``pairing_window_s`` of bag time away from its image (or none) leaves that
    sample unlabelled for the task. A spec without segmentation (detection) classes does not read
    the mask (detection) topic. Iterating raises if the number of samples differs from the bag's
    image count: no frame is lost on the way.
    """

    def __init__(self, path: Union[str, Path], spec: DatasetSpec, image_topic: Optional[str] = None,
                 pairing_window_s: float = 1.0) -> None:
        self.path = Path(path)
        self.spec = spec
        self.pairing_window_ns = round(pairing_window_s * NS_PER_S)
        self.truth_errors: list[dict] = []  # {"key", "stamp_ns", "error"} of the last pass
        with Reader(self.path) as reader:
            self._select_topics(list(reader.connections), image_topic)
            self.duration_s = reader.duration / NS_PER_S
        self.name = f"{self.path.name} ({self.image_topic})"

    def _select_topics(self, connections: list[Connection], image_topic: Optional[str]) -> None:
        self.connections = connections
        self.image_topic = image_topic or find_image_topic(connections)
        image_conns = [c for c in connections if c.topic == self.image_topic]
        if not image_conns or any(c.msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE) for c in image_conns):
            raise ValueError(f"{self.image_topic} is not an Image or CompressedImage topic of {self.path}; topics: "
                             f"{sorted({(c.topic, c.msgtype) for c in connections})}")
        self.image_type = image_conns[0].msgtype
        self.image_count = sum(c.msgcount for c in image_conns)
        namespace = camera_namespace(self.image_topic)
        expected = {"mask": IMAGE_TYPE, "detections": DETECTIONS_TYPE}
        labelled = {"mask": self.spec.num_seg_classes, "detections": self.spec.num_det_classes}
        self.truth_topics = {kind: posixpath.join(namespace, topic) for kind, topic in TRUTH_TOPICS.items()
                             if labelled[kind] and any(c.topic == posixpath.join(namespace, topic)
                                                       and c.msgtype == expected[kind] for c in connections)}
        self._kind = {c.id: "image" for c in image_conns}
        self._kind.update({c.id: kind for kind, topic in self.truth_topics.items()
                           for c in connections if c.topic == topic})

    @property
    def storage(self) -> str:
        """mcap or sqlite3, from the data files' suffixes."""
        files = [self.path] if self.path.is_file() else list(self.path.iterdir())
        return "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"

    @property
    def info(self) -> dict:
        """What a report says about the bag."""
        return {"path": str(self.path), "storage": self.storage, "size_bytes": bag_size_bytes(self.path),
                "duration_s": self.duration_s, "image_topic": self.image_topic, "image_type": self.image_type,
                "ground_truth_topics": dict(self.truth_topics),
                "topics": {c.topic: {"type": c.msgtype, "messages": c.msgcount} for c in self.connections}}

    def __len__(self) -> int:
        return self.image_count

    def __iter__(self) -> Iterator[Sample]:
        self.truth_errors = []
        yielded = 0
        with Reader(self.path) as reader:
            for stamp, entry in self._paired_frames(reader):
                yield self._sample(yielded, stamp, entry)
                yielded += 1
        if yielded != self.image_count:
            raise RuntimeError(f"read {yielded} of the {self.image_count} messages on {self.image_topic} "
                               f"in {self.path}")

    def _paired_frames(self, reader: Reader) -> Iterator[tuple[int, dict]]:
        store = jazzy_typestore()
        wanted = [c for c in self.connections if c.id in self._kind]
        frames: dict[int, dict] = {}  # stamp -> {"seen": bag time of the image, "image": msg, kind: msg}, image order
        early_truth: dict[int, dict] = {}  # stamp -> {"seen": bag time, kind: msg}: truth ahead of its image
        for conn, bag_time, raw in reader.messages(connections=wanted):
            kind = self._kind[conn.id]
            msg = store.deserialize_cdr(raw, conn.msgtype)
            stamp = read.stamp_ns(msg.header.stamp)
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
                 until_stamp: Optional[int] = None) -> Iterator[tuple[int, dict]]:
        """Yield the oldest frames in order while complete, waited for too long, or at or before ``until_stamp``."""
        forced = until_stamp is not None
        while frames:
            stamp, entry = next(iter(frames.items()))
            complete = all(kind in entry for kind in self.truth_topics)
            expired = now is not None and now - entry["seen"] > self.pairing_window_ns
            if not (forced or complete or expired):
                return
            del frames[stamp]
            yield stamp, entry
            if stamp == until_stamp:
                return

    def _sample(self, index: int, stamp: int, entry: dict) -> Sample:
        key = f"{self.path.name}/{index}"
        truth = {"mask": None, "detections": None}
        readers = {"mask": lambda msg: read.class_mask(msg, self.spec.num_seg_classes, self.spec.ignore_label),
                   "detections": lambda msg: read.detections(msg, self.spec.det_classes)}
        for kind in truth:
            if kind in entry:
                try:
                    truth[kind] = readers[kind](entry[kind])
                except ValueError as exc:
                    self.truth_errors.append({"key": key, "stamp_ns": stamp, "error": f"{TRUTH_TOPICS[kind]}: {exc}"})
        return Sample(read.encoded_image(entry["image"]), key, truth["mask"], truth["detections"], stamp)
