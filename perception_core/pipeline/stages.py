"""The per-frame stages as pure functions on numpy data (inputs are never modified).

decode -> preprocess -> infer -> postprocess_seg -> postprocess_det. Decoding of the network's
outputs (argmax, peak finding, top-K) already happened inside the graph, so post-processing
here is only undoing the letterbox and thresholding: no per-pixel or per-box Python loops.
"""

from __future__ import annotations

import numpy as np

from perception_core.codec import decode_image
from perception_core.engines.base import Engine
from perception_core.pipeline.letterbox import LetterboxTransform, letterbox, unletterbox_boxes, unletterbox_mask
from perception_core.types import Detections

decode = decode_image


def preprocess(bgr: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, LetterboxTransform]:
    """(H, W, 3) uint8 BGR camera image -> (1, h, w, 3) uint8 model batch and its letterbox transform.

    Normalisation is inside the graph, so the batch stays uint8 (4x less memory traffic than float).
    """
    resized, transform = letterbox(bgr, input_hw)
    return resized[None], transform


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
