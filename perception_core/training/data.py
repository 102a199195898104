"""Training data (framework-free): crops, flips and CenterNet targets over cached frames.

The frames come from a FrameSource, cached at the network's input scale (perception_core.datasets):
the network trains at exactly the pixel scale it infers at.
"""

from __future__ import annotations

import numpy as np

from perception_core.datasets.cache import FrameCache

MIN_OVERLAP = 0.7  # CenterNet: a centre shifted within the Gaussian still gives IoU >= 0.7 with the box
MIN_VISIBLE = 0.4  # a box cut by the crop is kept if this share of its area is left, else dropped


def gaussian_radius(h, w, min_overlap=MIN_OVERLAP):
    """CenterNet's radius: the largest centre shift that keeps IoU >= min_overlap with the true box."""
    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + np.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def centernet_targets(boxes, classes, image_hw, num_classes, stride):
    """Dense targets at ``image_hw // stride``: heatmap (h,w,C), wh and offset (h,w,2) in cells, centers (h,w,1)."""
    h, w = image_hw[0] // stride, image_hw[1] // stride
    heatmap = np.zeros((h, w, num_classes), np.float32)
    wh = np.zeros((h, w, 2), np.float32)
    offset = np.zeros((h, w, 2), np.float32)
    centers = np.zeros((h, w, 1), np.float32)
    for (x1, y1, x2, y2), cls in zip(np.asarray(boxes) / stride, classes):
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0 or bh <= 0:
            continue
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
        r = max(0, int(gaussian_radius(bh, bw)))
        sigma = (2 * r + 1) / 6
        ys, xs = np.arange(max(0, iy - r), min(h, iy + r + 1)), np.arange(max(0, ix - r), min(w, ix + r + 1))
        g = np.exp(-((ys[:, None] - iy) ** 2 + (xs[None, :] - ix) ** 2) / (2 * sigma * sigma))
        region = heatmap[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1, cls]
        np.maximum(region, g, out=region)
        wh[iy, ix] = bw, bh
        offset[iy, ix] = cx - ix, cy - iy
        centers[iy, ix] = 1.0
    return heatmap, wh, offset, centers


def crop_and_flip(image, mask, boxes, classes, y0, x0, crop_hw, flip, min_visible=MIN_VISIBLE):
    """Crop (y0,x0,crop_hw) and optionally mirror one frame; boxes clipped, mostly-cut-off ones dropped."""
    ch, cw = crop_hw
    image, mask = image[y0:y0 + ch, x0:x0 + cw], mask[y0:y0 + ch, x0:x0 + cw]
    shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
    clipped = np.clip(shifted, 0, np.array([cw, ch, cw, ch], np.float32))
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    keep = area(clipped) >= min_visible * np.maximum(area(shifted), 1e-6)
    keep &= (clipped[:, 2] - clipped[:, 0] >= 1) & (clipped[:, 3] - clipped[:, 1] >= 1)
    boxes, classes = clipped[keep], classes[keep]
    if flip:
        image, mask = image[:, ::-1], mask[:, ::-1]
        boxes = np.stack([cw - boxes[:, 2], boxes[:, 1], cw - boxes[:, 0], boxes[:, 3]], axis=1)
    return image, mask, boxes, classes


class BatchSampler:
    """Deterministic batches: batch ``step`` depends only on (seed, step), so a resumed run sees the same data.

    ``det_labelled`` (B,) marks the images that have detection labels; the rest train no detection.
    """

    def __init__(self, frames: FrameCache, batch_size, crop_hw, num_det_classes, stride, seed=0):
        self.frames = frames
        self.batch_size = batch_size
        self.crop_hw = tuple(crop_hw)
        self.num_det_classes = num_det_classes
        self.seed = seed
        self.stride = stride
        full_h, full_w = frames.images.shape[1:3]
        if self.crop_hw[0] > full_h or self.crop_hw[1] > full_w:
            raise ValueError(f"crop {self.crop_hw} larger than cached frames {(full_h, full_w)}")

    def __call__(self, step):
        rng = np.random.default_rng([self.seed, step])
        full_h, full_w = self.frames.images.shape[1:3]
        out = {k: [] for k in ("image", "mask", "heatmap", "wh", "offset", "centers", "det_labelled")}
        for i in rng.integers(len(self.frames), size=self.batch_size):
            boxes, classes = self.frames.frame_boxes(i)
            y0 = int(rng.integers(full_h - self.crop_hw[0] + 1))
            x0 = int(rng.integers(full_w - self.crop_hw[1] + 1))
            image, mask, boxes, classes = crop_and_flip(self.frames.images[i], self.frames.masks[i], boxes, classes,
                                                        y0, x0, self.crop_hw, bool(rng.integers(2)))
            heatmap, wh, offset, centers = centernet_targets(boxes, classes, self.crop_hw, self.num_det_classes,
                                                             self.stride)
            labelled = np.float32(self.frames.is_labelled(i, "detection"))
            for key, value in zip(out, (image, mask, heatmap, wh, offset, centers, labelled)):
                out[key].append(value)
        return {k: np.stack(v) for k, v in out.items()}
