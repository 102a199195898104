"""Write frames of any FrameSource as a folder dataset (``dataset export-sim`` writes the simulator's).

Layout under ``out``, two splits (``train`` and ``val``), frames named by index::

    dataset.yaml
    images/{train,val}/000000.png           # lossless: read back, the pixels are the source's
    masks/{train,val}/000000.png            # formats masks and yolo: 8-bit class-id masks
    labels/{train,val}/000000.txt           # format yolo: "class cx cy w h", normalised
    annotations/{detection,segmentation}_{train,val}.json   # format coco: boxes; masks as RLE per class

Formats: ``masks`` holds segmentation only; ``yolo`` detection as YOLO txt (segmentation, if asked
for, as PNG masks); ``coco`` both as COCO JSON (one RLE "stuff" annotation per class present).
Reading the dataset back with :func:`open_dataset` gives exactly the source's frames, masks and
boxes: YOLO and COCO numbers are written with Python's shortest round-trip repr of the float64
value, so boxes come back bit-exact in float32.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from perception_core.codec import decode_image
from perception_core.datasets.cache import CachedSource, FrameCache
from perception_core.datasets.source import FrameSource, Sample
from perception_core.datasets.spec import DatasetSpec

FORMATS = ("coco", "yolo", "masks")
TASK_NAMES = {"seg": "segmentation", "det": "detection"}
DEFAULT_TASKS = {"coco": ("seg", "det"), "yolo": ("seg", "det"), "masks": ("seg",)}


def _yolo_line(box: np.ndarray, cls: int, width: int, height: int) -> str:
    x1, y1, x2, y2 = (float(v) for v in box)
    values = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
    return " ".join([str(int(cls)), *(repr(v) for v in values)])


class _CocoFile:
    """One COCO annotation file being filled image by image."""

    def __init__(self, names: Iterable[str]) -> None:
        self.data = {"images": [], "annotations": [],
                     "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}

    def add_image(self, file_name: str, width: int, height: int) -> int:
        image_id = len(self.data["images"]) + 1
        self.data["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        return image_id

    def add(self, image_id: int, class_id: int, bbox: list[float], area: float, segmentation=None) -> None:
        ann = {"id": len(self.data["annotations"]) + 1, "image_id": image_id, "category_id": int(class_id) + 1,
               "bbox": bbox, "area": area, "iscrowd": 0}
        if segmentation is not None:
            ann["segmentation"] = segmentation
        self.data["annotations"].append(ann)

    def add_mask(self, image_id: int, mask: np.ndarray, num_classes: int) -> None:
        """One RLE annotation per class present (ignore pixels stay uncovered)."""
        from pycocotools import mask as mask_utils

        for cls in range(num_classes):
            binary = np.asfortranarray((mask == cls).astype(np.uint8))
            if not binary.any():
                continue
            rle = mask_utils.encode(binary)
            self.add(image_id, cls, [float(v) for v in mask_utils.toBbox(rle)], float(mask_utils.area(rle)),
                     {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data))


def _write_split(out: Path, split: str, samples: Iterable[Sample], total: int, spec: DatasetSpec, fmt: str,
                 tasks: tuple[str, ...]) -> None:
    coco = {task: _CocoFile(spec.seg_classes if task == "seg" else spec.det_classes)
            for task in tasks if fmt == "coco"}
    for index, sample in enumerate(tqdm(samples, total=total, desc=f"export {split}", unit="frame")):
        image = sample.image if isinstance(sample.image, np.ndarray) else decode_image(sample.image)
        height, width = image.shape[:2]
        name = f"{index:06d}"
        image_path = out / "images" / split / f"{name}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image_path), image)
        ids = {task: c.add_image(f"{name}.png", width, height) for task, c in coco.items()}
        if "seg" in tasks and sample.class_mask is not None:
            if fmt == "coco":
                coco["seg"].add_mask(ids["seg"], sample.class_mask, spec.num_seg_classes)
            else:
                mask_path = out / "masks" / split / f"{name}.png"
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(mask_path), sample.class_mask)
        if "det" in tasks and sample.detections is not None:
            dets = sample.detections
            if fmt == "coco":
                for box, cls in zip(dets.xyxy.astype(np.float64), dets.class_id):
                    w, h = float(box[2] - box[0]), float(box[3] - box[1])
                    coco["det"].add(ids["det"], int(cls), [float(box[0]), float(box[1]), w, h], w * h)
            else:
                label = out / "labels" / split / f"{name}.txt"
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text("".join(_yolo_line(b, c, width, height) + "\n"
                                         for b, c in zip(dets.xyxy, dets.class_id)))
    for task, c in coco.items():
        c.write(out / "annotations" / f"{TASK_NAMES[task]}_{split}.json")


def dataset_yaml(spec: DatasetSpec, fmt: str, tasks: tuple[str, ...], splits: Iterable[str], name: str) -> dict:
    """The dataset.yaml that describes what :func:`write_dataset` wrote."""
    splits = list(splits)
    description = {"name": name, "path": ".", **{split: f"images/{split}" for split in splits},
                   "images": "images", "ignore_label": spec.ignore_label}
    if "seg" in tasks:
        seg = {"names": list(spec.seg_classes), "colors": [list(c) for c in spec.seg_colors_bgr]}
        seg.update({"format": "coco", "annotations": {s: f"annotations/segmentation_{s}.json" for s in splits}}
                   if fmt == "coco" else {"format": "masks", "masks": "masks", "mask_suffix": ".png"})
        description["segmentation"] = seg
    if "det" in tasks:
        det = {"names": list(spec.det_classes)}
        det.update({"format": "coco", "annotations": {s: f"annotations/detection_{s}.json" for s in splits}}
                   if fmt == "coco" else {"format": "yolo", "labels": "labels"})
        description["detection"] = det
    return description


def parse_tasks(fmt: str, tasks: Optional[Union[str, Iterable[str]]]) -> tuple[str, ...]:
    """``"seg,det"`` -> ("seg", "det"), checked against what ``fmt`` can hold; None: the format's default."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if tasks is None:
        return DEFAULT_TASKS[fmt]
    chosen = tuple(t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip())
    if not chosen or any(t not in TASK_NAMES for t in chosen):
        raise ValueError(f"tasks must be a comma-separated subset of {list(TASK_NAMES)}, got {tasks!r}")
    if fmt == "masks" and "det" in chosen:
        raise ValueError("format masks holds no boxes: use --format coco or yolo for detection")
    return tuple(t for t in TASK_NAMES if t in chosen)


def write_dataset(out: Union[str, Path], splits: Mapping[str, FrameSource], fmt: str,
                  tasks: Optional[Union[str, Iterable[str]]] = None, name: str = "") -> Path:
    """Write each split's frames with the labels of ``tasks`` in ``fmt``; returns the dataset.yaml's path."""
    tasks = parse_tasks(fmt, tasks)
    out = Path(out)
    if (out / "dataset.yaml").exists():
        raise FileExistsError(f"{out / 'dataset.yaml'} exists: choose an empty folder")
    spec = next(iter(splits.values())).spec
    for split, source in splits.items():
        _write_split(out, split, iter(source), len(source), spec, fmt, tasks)
    description = dataset_yaml(spec, fmt, tasks, splits, name or spec.name or out.name)
    path = out / "dataset.yaml"
    path.write_text(yaml.safe_dump(description, sort_keys=False))
    return path


def frames_of(source: FrameSource, start: int) -> FrameSource:
    """``source`` without its first ``start`` frames (a source backed by a FrameCache keeps it as memmaps)."""
    frames: FrameCache = source.frames
    if start == 0:
        return source
    sliced = FrameCache(frames.images[start:], frames.masks[start:], frames.boxes, frames.classes,
                        frames.offsets[start:], None if frames.labelled is None else frames.labelled[start:])
    return CachedSource(sliced, source.spec, f"{source.name} from frame {start}")


def export_sim(out: Union[str, Path], frames: int, fmt: str, seed: Optional[int] = None,
               tasks: Optional[Union[str, Iterable[str]]] = None, val_frames: Optional[int] = None,
               start: int = 0) -> Path:
    """Simulator frames ``start``..``start+frames`` as the train split, the first ``val_frames`` (default
    ``frames // 4``, at least 1; 0: none) of its held-out validation split as val.

    ``seed`` renders the training frames with another simulator seed (never the validation one).
    """
    from perception_core.datasets.simulator import SPLITS, SimulatorSource, simulator_frames

    if frames < 1 or start < 0:
        raise ValueError(f"need frames >= 1 and start >= 0, got {frames} and {start}")
    if seed is not None and seed == SPLITS["validation"]:
        raise ValueError(f"seed {seed} is the simulator's validation split: training frames must not be it")
    if seed is None:
        train = SimulatorSource("train", start + frames)
    else:
        train = CachedSource(simulator_frames(seed, start + frames), SimulatorSource.spec,
                             f"simulator seed {seed} ({start + frames} frames)")
    splits = {"train": frames_of(train, start)}
    val_frames = max(1, frames // 4) if val_frames is None else val_frames
    if val_frames:
        splits["val"] = SimulatorSource("validation", val_frames)
    return write_dataset(out, splits, fmt, tasks, name=f"simulator-{fmt}")
