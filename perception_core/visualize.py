"""Pictures of predictions: the overlay topic, evaluation reports and the demo share this one drawer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import cv2
import numpy as np

from perception_core.types import Detections


def draw_overlay(image_bgr: np.ndarray, class_mask: Optional[np.ndarray], detections: Optional[Detections],
                 colors_bgr: Sequence[Sequence[int]], class_names: Sequence[str], alpha: float = 0.45) -> np.ndarray:
    """A new BGR image: class colours blended over the frame, then boxes labelled with class and score."""
    out = np.array(image_bgr, np.uint8, copy=True)
    if class_mask is not None:
        palette = np.zeros((256, 3), np.uint8)  # ids without a colour (an ignore label) blend with black
        palette[:len(colors_bgr)] = np.asarray(colors_bgr, np.uint8).reshape(-1, 3)
        out = cv2.addWeighted(out, 1.0 - alpha, palette[class_mask], alpha, 0.0)
    if detections is not None:
        for (x1, y1, x2, y2), class_id, score in zip(detections.xyxy.round().astype(int).tolist(),
                                                     detections.class_id.tolist(), detections.score.tolist(),
                                                     strict=True):
            cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 255), 2)
            cv2.putText(out, f"{class_names[class_id]} {score:.2f}", (x1, max(12, y1 - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1, cv2.LINE_AA)
    return out
