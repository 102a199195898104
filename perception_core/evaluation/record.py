"""``python -m perception_core record``: simulator sequences as rosbag2 bags that ``ros2 bag play`` replays.

The bag holds what the synthetic camera publishes (image, camera_info and ground truth with one
stamp per frame), so the same bag serves the offline evaluation and a replay through the nodes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Optional

from perception_core.evaluation.bags import (
    RECORD_ENCODINGS,
    STORAGES,
    TRANSPORTS,
    bag_size_bytes,
    record_simulation,
)
from perception_core.sim import VALIDATION_SEED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m perception_core record",
                                     description="Record simulator frames with ground truth to a rosbag2 bag.")
    parser.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--storage", choices=tuple(STORAGES), default="mcap")
    parser.add_argument("--transport", choices=TRANSPORTS, default="raw",
                        help="raw: /image; compressed: /image/compressed (JPEG)")
    parser.add_argument("--encoding", choices=RECORD_ENCODINGS, default="bgr8", help="raw image encoding")
    parser.add_argument("--step-padding", type=int, default=0, help="extra bytes at the end of every image row")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second of bag time")
    parser.add_argument("--seed", type=int, default=VALIDATION_SEED, help="default: the held-out validation split")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    path = record_simulation(args.out, args.frames, rate=args.rate, width=args.width, height=args.height,
                             encoding=args.encoding, transport=args.transport, storage=args.storage, seed=args.seed,
                             step_padding=args.step_padding, jpeg_quality=args.jpeg_quality)
    seconds = time.perf_counter() - started
    print(f"wrote {args.frames} frames to {path} ({args.storage}, {bag_size_bytes(path) / 2**20:.1f} MiB) "
          f"in {seconds:.1f} s ({args.frames / seconds:.1f} frames/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
