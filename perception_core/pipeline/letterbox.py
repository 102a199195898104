"""Letterbox: fit a camera frame into the model input without changing its aspect ratio.

Training data and the inference pipeline both go through :func:`letterbox`, so the network sees
objects at exactly the pixel scale it was trained on; the inverse functions map its outputs back
to camera pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114
"""Grey image padding (the YOLO convention): neutral for a network normalised to [-1, 1]."""


@dataclass(frozen=True)
class LetterboxTransform:
    """Source (camera) -> destination (model) mapping: ``dst = src * scale + (pad_x, pad_y)``."""

    scale: float
    pad_x: int
    pad_y: int
    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]

    @property
    def resized_hw(self) -> tuple[int, int]:
        """Size of the image content inside the padded output."""
        return round(self.src_hw[0] * self.scale), round(self.src_hw[1] * self.scale)


def letterbox_transform(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> LetterboxTransform:
    """The transform :func:`letterbox` applies to an image of ``src_hw``, without touching pixels."""
    scale = min(dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1])
    new_h, new_w = round(src_hw[0] * scale), round(src_hw[1] * scale)
    return LetterboxTransform(scale, (dst_hw[1] - new_w) // 2, (dst_hw[0] - new_h) // 2,
                              (int(src_hw[0]), int(src_hw[1])), (int(dst_hw[0]), int(dst_hw[1])))


def letterbox(image: np.ndarray, out_hw: tuple[int, int], *, pad_value: int = PAD_VALUE,
              interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, LetterboxTransform]:
    """Resize ``image`` (H,W[,C]) keeping its aspect ratio and pad it centred to ``out_hw``.

    Masks go through the same function with ``interpolation=cv2.INTER_NEAREST`` and an ignore
    ``pad_value``. The input is never modified.
    """
    t = letterbox_transform(image.shape[:2], out_hw)
    new_h, new_w = t.resized_hw
    resized = image if (new_h, new_w) == image.shape[:2] else cv2.resize(
        image, (new_w, new_h), interpolation=interpolation)
    out = np.full((out_hw[0], out_hw[1]) + image.shape[2:], pad_value, image.dtype)
    out[t.pad_y:t.pad_y + new_h, t.pad_x:t.pad_x + new_w] = resized
    return out, t


def letterbox_boxes(xyxy: np.ndarray, t: LetterboxTransform) -> np.ndarray:
    """(N,4) xyxy camera pixels -> model-input pixels (a new float32 array)."""
    offset = np.array([t.pad_x, t.pad_y, t.pad_x, t.pad_y], np.float32)
    return (np.asarray(xyxy, np.float32) * np.float32(t.scale) + offset).astype(np.float32)


def unletterbox_boxes(xyxy: np.ndarray, t: LetterboxTransform) -> np.ndarray:
    """(N,4) xyxy model-input pixels -> camera pixels, clipped to the camera frame (new float32 array)."""
    offset = np.array([t.pad_x, t.pad_y, t.pad_x, t.pad_y], np.float32)
    out = (np.asarray(xyxy, np.float32) - offset) / np.float32(t.scale)
    h, w = t.src_hw
    return np.clip(out, 0, np.array([w, h, w, h], np.float32)).astype(np.float32)


def unletterbox_mask(mask: np.ndarray, t: LetterboxTransform) -> np.ndarray:
    """(H,W) class map at model input -> camera resolution: crop the padding, nearest resize."""
    new_h, new_w = t.resized_hw
    content = mask[t.pad_y:t.pad_y + new_h, t.pad_x:t.pad_x + new_w]
    h, w = t.src_hw
    if content.shape[:2] == (h, w):
        return content.copy()
    return cv2.resize(content, (w, h), interpolation=cv2.INTER_NEAREST)
