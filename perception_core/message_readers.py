"""Readers of message-shaped objects: fields in, core types out, for rclpy and rosbags messages alike.

Both kinds of message expose the same field names, so one reader serves the node (rclpy) and the
bag tools (rosbags) without importing either. Building messages differs per library and stays
with each (perception_nodes.conversions, perception_core.evaluation.bags).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from perception_core.codec import EncodedImage, ImageDecodeError, raw_to_array
from perception_core.message_fields import NS_PER_S
from perception_core.types import Detections, validate_class_mask


def encoded_image(msg) -> EncodedImage:
    """Image or CompressedImage -> the pipeline's EncodedImage, zero-copy (``data`` is the message's buffer)."""
    if hasattr(msg, "format"):
        return EncodedImage(msg.data, compressed_format=msg.format or "<empty>")
    return EncodedImage(msg.data, msg.encoding, msg.width, msg.height, msg.step, bool(msg.is_bigendian))


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (exact): the key that pairs a frame with its ground truth."""
    return stamp.sec * NS_PER_S + stamp.nanosec


def class_mask(msg, num_classes: int, ignore_label: Optional[int] = None) -> np.ndarray:
    """Read-only (H, W) uint8 class mask viewed from a mono8 Image; ids below ``num_classes`` or ``ignore_label``."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise ImageDecodeError(f"a class mask must be mono8 (or 8UC1), got {msg.encoding!r}")
    mask = raw_to_array(msg.data, msg.encoding, msg.width, msg.height, msg.step, bool(msg.is_bigendian))
    labelled = mask if ignore_label is None else mask[mask != ignore_label].reshape(1, -1)
    validate_class_mask(labelled, num_classes)
    return mask


def detections(msg, class_names: Sequence[str]) -> Detections:
    """Detections from a Detection2DArray; each detection's best-scoring hypothesis names its class.

    Raises ValueError for a detection without hypotheses or a class name not in ``class_names``.
    Corners come back exactly as written by a writer that stores float64 centre and size.
    """
    class_index = {name: i for i, name in enumerate(class_names)}
    rows = []
    for k, det in enumerate(msg.detections):
        if not det.results:
            raise ValueError(f"detection {k} has no hypotheses (results is empty)")
        best = max(det.results, key=lambda result: result.hypothesis.score).hypothesis
        if best.class_id not in class_index:
            raise ValueError(f"detection {k} has unknown class name {best.class_id!r}; known: {list(class_names)}")
        center = det.bbox.center.position
        rows.append((center.x, center.y, det.bbox.size_x, det.bbox.size_y, class_index[best.class_id], best.score))
    if not rows:
        return Detections.empty()
    table = np.array(rows, np.float64)
    half = table[:, 2:4] * 0.5
    xyxy = np.concatenate([table[:, :2] - half, table[:, :2] + half], axis=1).astype(np.float32)
    return Detections(xyxy, table[:, 4].astype(np.int32), table[:, 5].astype(np.float32))
