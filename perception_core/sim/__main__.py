"""Write sample PNGs (image | class mask | boxes) and report rendering speed.

    python -m perception_core.sim --out docs/sim --count 6 [--seed S --width W --height H]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from perception_core.sim.classes import SIM_SPEC
from perception_core.sim.render import LabeledFrame
from perception_core.sim.scene import TRAIN_SEED, render_scene
from perception_core.types import Detections
from perception_core.visualize import draw_overlay


def sample_panel(sample: LabeledFrame, scale: float = 1.0) -> np.ndarray:
    """Image, colour mask and boxed image side by side, ``scale`` times the frame size."""
    height, width = sample.class_mask.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(sample.frame.image, size, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(sample.class_mask, size, interpolation=cv2.INTER_NEAREST)
    truth = sample.detections
    boxes = Detections(truth.xyxy * np.float32(size[0] / width), truth.class_id, truth.score)
    colors, names = SIM_SPEC.seg_colors_bgr, SIM_SPEC.det_classes
    return np.hstack([image, draw_overlay(image, mask, None, colors, names, alpha=1.0),
                      draw_overlay(image, None, boxes, colors, names)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m perception_core.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/sim"))
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--seed", type=int, default=TRAIN_SEED)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--scale", type=float, default=0.75,
                        help="panel size relative to the frame (sensor noise makes full-size PNGs large)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    samples = [render_scene(args.seed, index, args.width, args.height) for index in range(args.count)]
    elapsed = time.perf_counter() - start
    for index, sample in enumerate(samples):
        path = args.out / f"sample_{args.seed}_{index:03d}.png"
        cv2.imwrite(str(path), sample_panel(sample, args.scale), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{path}: {len(sample.detections)} boxes")
    print(f"{args.count / elapsed:.1f} frames/s at {args.width}x{args.height} "
          f"({1000 * elapsed / args.count:.1f} ms/frame, rendering only)")


if __name__ == "__main__":
    main()
