"""Training and evaluation data (framework-free): cached simulator frames, crops, flips, CenterNet targets.

Frames are rendered at camera resolution and go through the pipeline's own ``letterbox`` so the
network trains at exactly the pixel scale it infers at. Rendering costs ~50 ms a frame, so a split
is rendered once (multiprocessing, progress bar) into .npy memmaps under .cache/.
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from perception_core.pipeline.letterbox import letterbox, letterbox_boxes

CACHE_ROOT = Path(__file__).resolve().parents[2] / ".cache"
CAMERA_HW = (480, 640)
IGNORE_LABEL = 255  # letterbox padding in training masks: no class, no loss


def _render(job):
    """One labelled frame, letterboxed to ``out_hw`` (None: camera resolution). Runs in a worker."""
    from perception_core.sim import render_scene

    seed, index, out_hw = job
    lf = render_scene(seed, index, width=CAMERA_HW[1], height=CAMERA_HW[0])
    image, mask, boxes = lf.frame.image, lf.class_mask, lf.detections.xyxy
    if out_hw is not None:
        image, t = letterbox(image, out_hw)
        mask, _ = letterbox(mask, out_hw, pad_value=IGNORE_LABEL, interpolation=cv2.INTER_NEAREST)
        boxes = letterbox_boxes(boxes, t)
    return image, mask, boxes, lf.detections.class_id


@dataclass
class FrameCache:
    """N frames as parallel arrays; boxes are ragged: frame i owns rows offsets[i]:offsets[i+1]."""

    images: np.ndarray  # (N,H,W,3) uint8 BGR
    masks: np.ndarray  # (N,H,W) uint8 class ids (IGNORE_LABEL in letterbox padding)
    boxes: np.ndarray  # (M,4) float32 xyxy pixels
    classes: np.ndarray  # (M,) int32 DET_CLASSES ids
    offsets: np.ndarray  # (N+1,) int64

    def __len__(self):
        return len(self.images)

    def frame_boxes(self, i):
        return self.boxes[self.offsets[i]:self.offsets[i + 1]], self.classes[self.offsets[i]:self.offsets[i + 1]]


def cache_dir(seed, count, out_hw=None):
    size = "camera" if out_hw is None else f"{out_hw[0]}x{out_hw[1]}"
    return CACHE_ROOT / f"frames_s{seed}_n{count}_{size}"


def load_frames(seed, count, out_hw=None, workers=2):
    """The first ``count`` frames of split (seed, out_hw): from any cache holding at least that many, else rendered.

    Frame i depends only on (seed, i), so the prefix of a larger cache is the same data.
    """
    size = cache_dir(seed, count, out_hw).name.rsplit("_", 1)[1]
    held = [p for p in CACHE_ROOT.glob(f"frames_s{seed}_n*_{size}") if (p / "meta.json").exists()]
    held = sorted((int(p.name.split("_n")[1].split("_")[0]), p) for p in held)
    path = next((p for n, p in held if n >= count), None)
    if path is None:
        path = cache_dir(seed, count, out_hw)
        _build(path, seed, count, out_hw, workers)
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r")[:count] for name in ("images", "masks")}
    offsets = np.load(path / "offsets.npy")[:count + 1]
    boxes = np.load(path / "boxes.npy")[:offsets[-1]]
    classes = np.load(path / "classes.npy")[:offsets[-1]]
    return FrameCache(**arrays, boxes=boxes, classes=classes, offsets=offsets)


def _build(path, seed, count, out_hw, workers):
    path.mkdir(parents=True, exist_ok=True)
    hw = CAMERA_HW if out_hw is None else tuple(out_hw)
    images = np.lib.format.open_memmap(path / "images.npy", "w+", np.uint8, (count, hw[0], hw[1], 3))
    masks = np.lib.format.open_memmap(path / "masks.npy", "w+", np.uint8, (count, hw[0], hw[1]))
    boxes, classes, offsets = [], [], [0]
    jobs = [(seed, i, out_hw) for i in range(count)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.imap(_render, jobs, chunksize=8)
        for i, (image, mask, b, c) in enumerate(tqdm(results, total=count, desc=f"render {path.name}")):
            images[i], masks[i] = image, mask
            boxes.append(np.asarray(b, np.float32).reshape(-1, 4))
            classes.append(np.asarray(c, np.int32))
            offsets.append(offsets[-1] + len(b))
    images.flush()
    masks.flush()
    np.save(path / "boxes.npy", np.concatenate(boxes))
    np.save(path / "classes.npy", np.concatenate(classes))
    np.save(path / "offsets.npy", np.asarray(offsets, np.int64))
    (path / "meta.json").write_text(json.dumps({"seed": seed, "count": count, "hw": list(hw)}))


def gaussian_radius(h, w, min_overlap=0.7):
    """CenterNet's radius: the largest centre shift that keeps IoU >= min_overlap with the true box."""
    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + np.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def centernet_targets(boxes, classes, image_hw, num_classes, stride=8):
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


def crop_and_flip(image, mask, boxes, classes, y0, x0, crop_hw, flip, min_visible=0.4):
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
    """Deterministic batches: batch ``step`` depends only on (seed, step), so a resumed run sees the same data."""

    def __init__(self, frames: FrameCache, batch_size, crop_hw, num_det_classes, seed=0, stride=8):
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
        out = {k: [] for k in ("image", "mask", "heatmap", "wh", "offset", "centers")}
        for i in rng.integers(len(self.frames), size=self.batch_size):
            boxes, classes = self.frames.frame_boxes(i)
            y0 = int(rng.integers(full_h - self.crop_hw[0] + 1))
            x0 = int(rng.integers(full_w - self.crop_hw[1] + 1))
            image, mask, boxes, classes = crop_and_flip(self.frames.images[i], self.frames.masks[i], boxes, classes,
                                                        y0, x0, self.crop_hw, bool(rng.integers(2)))
            heatmap, wh, offset, centers = centernet_targets(boxes, classes, self.crop_hw, self.num_det_classes,
                                                             self.stride)
            for key, value in zip(out, (image, mask, heatmap, wh, offset, centers)):
                out[key].append(value)
        return {k: np.stack(v) for k, v in out.items()}
