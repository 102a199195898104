"""The per-frame stages as pure functions on numpy data (inputs are never modified).

decode -> preprocess -> infer -> postprocess_seg -> postprocess_det. Decoding of the network's
outputs (argmax, peak finding, top-K) already happened inside the graph, so post-processing
here is only undoing the letterbox and thresholding: no per-pixel or per-box Python loops.
"""

from __future__ import annotations

import cv2
import numpy as np

from perception_core.codec import decode_image
from perception_core.engines.base import Engine
from perception_core.pipeline.letterbox import (
    PAD_VALUE,
    LetterboxTransform,
    letterbox_transform,
    unletterbox_boxes,
    unletterbox_mask,
)
from perception_core.types import Detections

decode = decode_image


def preprocess(bgr: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, LetterboxTransform]:
    """(H, W, 3) uint8 BGR camera image -> (1, h, w, 3) uint8 model batch and its letterbox transform.

    Normalisation is inside the graph, so the batch stays uint8 (4x less memory traffic than float).
    """
    batch = np.empty((1, *input_hw, 3), np.uint8)
    return batch, preprocess_into(bgr, batch)


def preprocess_into(bgr: np.ndarray, batch: np.ndarray) -> LetterboxTransform:
    """:func:`preprocess` into a caller-owned (1, h, w, 3) uint8 ``batch``, overwritten whole; bit-exact with
    :func:`~perception_core.pipeline.letterbox.letterbox`.

    The frame is resized straight into the batch and only the padding bands are filled: no per-frame
    allocation, and at 640x480 -> 512x384 (no padding) one pass over the pixels instead of three
    (resize, fill, copy), which matters on a core whose caches inference has just evicted.
    """
    t = letterbox_transform(bgr.shape[:2], batch.shape[1:3])
    (new_h, new_w), out = t.resized_hw, batch[0]
    out[:t.pad_y] = PAD_VALUE
    out[t.pad_y + new_h:] = PAD_VALUE
    out[t.pad_y:t.pad_y + new_h, :t.pad_x] = PAD_VALUE
    out[t.pad_y:t.pad_y + new_h, t.pad_x + new_w:] = PAD_VALUE
    content = out[t.pad_y:t.pad_y + new_h, t.pad_x:t.pad_x + new_w]
    resized = bgr if (new_h, new_w) == bgr.shape[:2] else cv2.resize(
        bgr, (new_w, new_h), dst=content, interpolation=cv2.INTER_LINEAR)
    if resized is not content:  # same size, or an OpenCV build that allocated its own dst
        np.copyto(content, resized)
    return t


def infer(engine: Engine, input_name: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Run the engine on one batch; outputs by name."""
    return engine.infer({input_name: batch})


def postprocess_seg(class_map: np.ndarray, transform: LetterboxTransform) -> np.ndarray:
    """(h, w) uint8 class map at model input -> (H, W) at camera resolution (padding cropped, nearest)."""
    return unletterbox_mask(class_map, transform)


def postprocess_det(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, transform: LetterboxTransform,
                    score_threshold: float, max_detections: int) -> Detections:
    """Top-K outputs (K,4) xyxy model pixels, (K,) scores, (K,) ids -> Detections in camera pixels.

    Keeps scores >= ``score_threshold``, at most ``max_detections`` of the best; boxes are clipped to
    the camera frame and boxes that vanish after clipping (wholly in the padding) are dropped.
    """
    keep = np.flatnonzero(scores >= score_threshold)
    xyxy = unletterbox_boxes(boxes[keep], transform)
    visible = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    keep, xyxy = keep[visible], xyxy[visible]
    best = np.argsort(-scores[keep], kind="stable")[:max_detections]
    return Detections(xyxy[best], classes[keep[best]].astype(np.int32), scores[keep[best]].astype(np.float32))
