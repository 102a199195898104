"""``python -m perception_core record``: simulator sequences as rosbag2 bags that ``ros2 bag play`` replays.

The bag holds what the synthetic camera publishes (image, camera_info and ground truth with one
stamp per frame), so the same bag serves the offline evaluation and a replay through the nodes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from tqdm import tqdm

from perception_core.datasets.bag import (
    COMPRESSED_TYPE,
    DETECTIONS_TYPE,
    IMAGE_TYPE,
    NS_PER_S,
    TRUTH_TOPICS,
    bag_size_bytes,
    jazzy_typestore,
)
from perception_core.evaluation.bags import (
    CAMERA_INFO_TYPE,
    RECORD_ENCODINGS,
    bgr_to_encoding,
    camera_info_message,
    compressed_image_message,
    detections_message,
    header,
    image_message,
)
from perception_core.sim import VALIDATION_SEED, render_scene
from perception_core.sim.classes import SIM_SPEC

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
TRANSPORTS = ("raw", "compressed")


def record_simulation(path: Union[str, Path], frames: int, rate: float = 30.0, width: int = 640, height: int = 480,
                      encoding: str = "bgr8", transport: str = "raw", storage: str = "mcap",
                      seed: int = VALIDATION_SEED, step_padding: int = 0, jpeg_quality: int = 90,
                      start_ns: Optional[int] = None, frame_id: str = "camera", progress: bool = True) -> Path:
    """Write simulator scenes 0..frames-1 of ``seed`` as a camera would record them; return the bag folder.

    Topics: ``/image`` (raw, in ``encoding`` with ``step_padding``) or ``/image/compressed`` (JPEG),
    ``/camera_info``, ``/ground_truth/segmentation`` (mono8 class ids) and ``/ground_truth/detections``
    (class names), all four with one header stamp per frame; the bag timestamps are those stamps,
    ``1/rate`` apart from ``start_ns`` (default: now).
    """
    if frames < 1 or rate <= 0:
        raise ValueError(f"need frames >= 1 and rate > 0, got {frames}, {rate}")
    if transport not in TRANSPORTS or storage not in STORAGES:
        raise ValueError(f"transport must be one of {TRANSPORTS} and storage one of {tuple(STORAGES)}, "
                         f"got {transport!r}, {storage!r}")
    if transport == "compressed" and encoding != "bgr8":
        raise ValueError(f"the compressed transport records JPEG from bgr8 frames; got encoding {encoding!r}")
    bgr_to_encoding(np.zeros((1, 1, 3), np.uint8), encoding)  # rejects an unknown encoding before the bag exists
    path = Path(path)
    store = jazzy_typestore()
    start_ns = time.time_ns() if start_ns is None else start_ns
    image_topic, image_type = ("/image", IMAGE_TYPE) if transport == "raw" else ("/image/compressed", COMPRESSED_TYPE)
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        image_conn, info_conn, mask_conn, dets_conn = (
            writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in (
                (image_topic, image_type), ("/camera_info", CAMERA_INFO_TYPE),
                ("/" + TRUTH_TOPICS["mask"], IMAGE_TYPE), ("/" + TRUTH_TOPICS["detections"], DETECTIONS_TYPE)))
        for index in tqdm(range(frames), desc=f"record {path.name}", unit="frame", disable=not progress):
            scene = render_scene(seed, index, width, height)
            stamp = start_ns + round(index * NS_PER_S / rate)
            msg_header = header(stamp, frame_id)
            if transport == "raw":
                image = image_message(bgr_to_encoding(scene.frame.image, encoding), encoding, msg_header, step_padding)
            else:
                image = compressed_image_message(scene.frame.image, msg_header, jpeg_quality)
            for conn, msg in ((image_conn, image), (info_conn, camera_info_message(width, height, msg_header)),
                              (mask_conn, image_message(scene.class_mask, "mono8", msg_header)),
                              (dets_conn, detections_message(scene.detections, msg_header, SIM_SPEC.det_classes))):
                writer.write(conn, stamp, store.serialize_cdr(msg, conn.msgtype))
    return path


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
