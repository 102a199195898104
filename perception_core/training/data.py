"""Training data (framework-free): crops, flips and CenterNet targets over frames at the input scale.

The frames come from FrameSources letterboxed to the network's input (cached in memory, or read
from disk as they are drawn: perception_core.training.loader), so the network trains at exactly the
pixel scale it infers at.
"""

from __future__ import annotations

import numpy as np

MIN_OVERLAP = 0.7  # CenterNet: a centre shifted within the Gaussian still gives IoU >= 0.7 with the box
MIN_VISIBLE = 0.4  # a box cut by the crop is kept if this share of its area is left, else dropped
TASK_LABELS = {"seg": "segmentation", "det": "detection"}  # head -> the Sample task that trains it
BATCH_KEYS = ("image", "mask", "heatmap", "wh", "offset", "centers", "det_labelled", "seg_labelled")


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


def task_slots(task_ratio, batch_size):
    """{head: slots in a batch} from {head: ratio}: proportional, largest remainders first, at least one each."""
    ratio = {head: float(r) for head, r in task_ratio.items()}
    if any(r <= 0 for r in ratio.values()):
        raise ValueError(f"task ratios must be positive, got {task_ratio}")
    if batch_size < len(ratio):
        raise ValueError(f"a batch of {batch_size} cannot hold the {len(ratio)} tasks of {task_ratio}")
    exact = {head: batch_size * r / sum(ratio.values()) for head, r in ratio.items()}
    slots = {head: max(1, int(v)) for head, v in exact.items()}
    by_remainder = sorted(ratio, key=lambda head: slots[head] - exact[head])
    for head in by_remainder[:batch_size - sum(slots.values())]:
        slots[head] += 1
    while sum(slots.values()) > batch_size:  # the at-least-one rule overfilled: take from the largest
        slots[max(slots, key=slots.get)] -= 1
    return slots


class BatchSampler:
    """Deterministic batches: batch ``step`` depends only on (seed, step), so a resumed run sees the same data.

    ``frames`` is a FrameCache, or any frames at the input scale with ``len``, ``hw``, ``frame(i)`` and
    ``is_labelled(i, task)`` (perception_core.training.loader reads them from disk on demand).
    ``task_ratio`` ({"seg": 1, "det": 1}) fills the batch slots in that ratio, each drawn from the
    frames labelled for that task; None draws uniformly from all frames.
    ``draws(step)`` makes every random choice of a batch, ``sample(draw)`` builds one image's arrays
    (thread-safe: a loader runs it in workers), ``collate`` stacks them. ``det_labelled`` and
    ``seg_labelled`` (B,) mark the images that have each task's labels; the rest train no such task.
    """

    def __init__(self, frames, batch_size, crop_hw, num_det_classes, stride, seed=0, task_ratio=None):
        self.frames = frames
        self.batch_size = batch_size
        self.crop_hw = tuple(crop_hw)
        self.num_det_classes = num_det_classes
        self.seed = seed
        self.stride = stride
        self.full_hw = tuple(frames.hw)
        if self.crop_hw[0] > self.full_hw[0] or self.crop_hw[1] > self.full_hw[1]:
            raise ValueError(f"crop {self.crop_hw} larger than cached frames {self.full_hw}")
        self.pools = None
        if task_ratio is not None:
            self.pools = []
            for head, slots in task_slots(task_ratio, batch_size).items():
                pool = np.flatnonzero([frames.is_labelled(i, TASK_LABELS[head]) for i in range(len(frames))])
                if not len(pool):
                    raise ValueError(f"no frame is labelled for {TASK_LABELS[head]}: it cannot have a share of "
                                     f"the batch")
                self.pools.append((pool, slots))

    def draws(self, step):
        """[(frame index, crop y0, crop x0, flip)] of batch ``step``."""
        rng = np.random.default_rng([self.seed, step])
        if self.pools is None:
            indices = rng.integers(len(self.frames), size=self.batch_size)
        else:
            indices = np.concatenate([pool[rng.integers(len(pool), size=slots)] for pool, slots in self.pools])
        (full_h, full_w), (crop_h, crop_w) = self.full_hw, self.crop_hw
        return [(int(i), int(rng.integers(full_h - crop_h + 1)), int(rng.integers(full_w - crop_w + 1)),
                 bool(rng.integers(2))) for i in indices]

    def sample(self, draw):
        """One image's (image, mask, heatmap, wh, offset, centers, det_labelled, seg_labelled)."""
        i, y0, x0, flip = draw
        image, mask, boxes, classes = self.frames.frame(i)
        image, mask, boxes, classes = crop_and_flip(image, mask, boxes, classes, y0, x0, self.crop_hw, flip)
        heatmap, wh, offset, centers = centernet_targets(boxes, classes, self.crop_hw, self.num_det_classes,
                                                         self.stride)
        labelled = [np.float32(self.frames.is_labelled(i, task)) for task in ("detection", "segmentation")]
        return (image, mask, heatmap, wh, offset, centers, *labelled)

    @staticmethod
    def collate(samples):
        return {key: np.stack(values) for key, values in zip(BATCH_KEYS, zip(*samples))}

    def __call__(self, step):
        return self.collate([self.sample(draw) for draw in self.draws(step)])
