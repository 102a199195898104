"""``dataset check``: what a folder dataset holds and what is wrong with it, before anything trains on it.

Every image of every split is read with the readers training uses (so "readable here" means
"trainable"), and every label file is checked against its image and the class table. Each
problem names its file (and line, for YOLO; annotation id, for COCO). Errors make the dataset
unusable as described (``train`` refuses it); warnings are worth a look but train fine (images
without labels for a task, label values a label_map reads as ignore, crowd boxes left out).
Object size is ``sqrt(w * h)`` in pixels of the image as stored.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
from tqdm import tqdm

from perception_core.datasets.folder import (
    DatasetConfig,
    DatasetError,
    FolderSource,
    clean_boxes,
    label_path,
    load_config,
    parse_yolo,
    read_image,
    read_mask,
)
from perception_core.datasets.source import TASKS
from perception_core.datasets.spec import DatasetSpec

SMALL_OBJECT_PX = 16  # objects smaller than this (sqrt of box area) are hard at a stride-8 head
BOX_TOLERANCE_PX = 0.5  # a box corner this far outside the image is rounding, not an error
EXAMPLES = 5  # files listed per kind of warning that is about many files


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" or "warning"
    kind: str  # e.g. "unreadable-image", "mask-size", "mask-values", "box-outside", "box-degenerate"
    file: str
    message: str
    line: Optional[int] = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{self.severity.upper()} [{self.kind}] {where}: {self.message}"


@dataclass
class SplitStats:
    """What one split holds. Class lists follow the spec's order."""

    images: int = 0
    labelled: Counter = field(default_factory=Counter)  # task -> images labelled for it
    unlabelled_examples: dict = field(default_factory=dict)  # task -> first few image files without its labels
    image_sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    seg_pixels: Counter = field(default_factory=Counter)  # class id -> pixels
    seg_images: Counter = field(default_factory=Counter)  # class id -> images showing it
    ignore_pixels: int = 0
    boxes: Counter = field(default_factory=Counter)  # class id -> boxes
    box_images: Counter = field(default_factory=Counter)  # class id -> images with such a box
    box_sizes: list = field(default_factory=list)  # sqrt(w * h) px of every box
    crowd_boxes: int = 0

    def small_share(self) -> Optional[float]:
        """Share of boxes under SMALL_OBJECT_PX (None without boxes)."""
        return float(np.mean(np.asarray(self.box_sizes) < SMALL_OBJECT_PX)) if self.box_sizes else None


@dataclass
class CheckReport:
    yaml_path: Path
    spec: Optional[DatasetSpec]  # None: the YAML itself could not be read
    splits: dict[str, SplitStats]
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def text(self, max_problems: int = 50) -> str:
        """Per split and class, sizes, then the problems (the first ``max_problems`` of each severity)."""
        spec = self.spec
        lines = [f"dataset {self.yaml_path}: " + ("unreadable" if spec is None else
                 f"{spec.num_seg_classes} segmentation / {spec.num_det_classes} detection classes, ignore label "
                 f"{spec.ignore_label}")]
        for name, s in self.splits.items():
            labelled = ", ".join(f"{task} {s.labelled[task]}" for task, classes in
                                 zip(TASKS, (spec.seg_classes, spec.det_classes)) if classes)
            lines.append(f"split {name}: {s.images} images; labelled for {labelled}")
            for task, examples in s.unlabelled_examples.items():
                lines.append(f"  {s.images - s.labelled[task]} images without {task} labels, e.g. "
                             + ", ".join(examples))
            sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in s.image_sizes.most_common(5))
            lines.append(f"  image sizes: {sizes or '-'}" + (" ..." if len(s.image_sizes) > 5 else ""))
            total = sum(s.seg_pixels.values()) + s.ignore_pixels
            for c, cls in enumerate(spec.seg_classes):
                share = 100 * s.seg_pixels[c] / max(total, 1)
                lines.append(f"  seg {cls:<20} {s.seg_images[c]:>7} images {share:6.2f} % of pixels")
            if spec.seg_classes:
                lines.append(f"  seg {'(ignore)':<20} {100 * s.ignore_pixels / max(total, 1):22.2f} % of pixels")
            for c, cls in enumerate(spec.det_classes):
                lines.append(f"  det {cls:<20} {s.box_images[c]:>7} images {s.boxes[c]:>8} boxes")
            if s.box_sizes:
                sizes = np.asarray(s.box_sizes)
                lines.append(f"  object size sqrt(w*h): median {np.median(sizes):.1f} px, p10 "
                             f"{np.percentile(sizes, 10):.1f}, p90 {np.percentile(sizes, 90):.1f}; "
                             f"{100 * s.small_share():.1f} % under {SMALL_OBJECT_PX} px")
            if s.crowd_boxes:
                lines.append(f"  {s.crowd_boxes} COCO crowd boxes left out of the ground truth")
        for severity, problems in (("errors", self.errors), ("warnings", self.warnings)):
            lines.append(f"{len(problems)} {severity}")
            lines += [f"  {p}" for p in problems[:max_problems]]
            if len(problems) > max_problems:
                lines.append(f"  ... {len(problems) - max_problems} more")
        return "\n".join(lines)


def _check_segmentation(source: FolderSource, index: int, shape: tuple[int, int], stats: SplitStats,
                        problems: list[Problem]) -> None:
    config, image = source.config, str(source.images[index][0])
    seg = config.segmentation
    ignore = config.ignore_label
    if seg.format == "masks":
        path = source.mask_paths[index]
        if path is None:
            expected = label_path(config, seg, source.images[index][0])
            if seg.require_all:
                problems.append(Problem("error", "missing-mask", image, f"no mask at {expected} (require_all)"))
            return
        try:
            raw = read_mask(path)
        except DatasetError as exc:
            problems.append(Problem("error", "unreadable-mask", str(path), str(exc).removeprefix(f"{path}: ")))
            return
        if source.seg_lut is None:
            bad = np.unique(raw[(raw >= len(seg.names)) & (raw != ignore)])
            if bad.size:
                problems.append(Problem("error", "mask-values", str(path),
                                        f"values {bad.tolist()} are neither one of the {len(seg.names)} classes "
                                        f"nor the ignore label {ignore}"))
                return
            mask = raw
        else:
            unlisted = np.setdiff1d(np.unique(raw), list(seg.label_map))
            unlisted = unlisted[unlisted != ignore]
            if unlisted.size:
                problems.append(Problem("warning", "mask-unmapped", str(path),
                                        f"values {unlisted.tolist()} are not in label_map: read as ignore"))
            mask = source.seg_lut[raw]
        where = str(path)
    else:
        coco = source.coco["segmentation"]
        try:
            mask = source.class_mask(index)
        except Exception as exc:  # noqa: BLE001 -- pycocotools raises anything on a malformed polygon
            problems.append(Problem("error", "coco-segmentation", str(coco.path), f"{image}: {exc}"))
            return
        if mask is None:
            return
        where = f"{coco.path} ({Path(image).name})"
    if mask.shape != shape:
        problems.append(Problem("error", "mask-size", where, f"mask {mask.shape[1]}x{mask.shape[0]} does not "
                                f"match the image {image} ({shape[1]}x{shape[0]})"))
        return
    values, counts = np.unique(mask, return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist()):
        if value == ignore:
            stats.ignore_pixels += count
        else:
            stats.seg_pixels[value] += count
            stats.seg_images[value] += 1


def _check_boxes(xyxy: np.ndarray, classes: np.ndarray, shape: tuple[int, int], where: str, lines: list,
                 stats: SplitStats, problems: list[Problem]) -> None:
    """Boxes outside the image or with no area are errors; the rest count per class and size."""
    height, width = shape
    for box, line in zip(xyxy, lines):
        x1, y1, x2, y2 = box
        line_no, label = line if isinstance(line, tuple) else (line, "box")
        if not (x2 > x1 and y2 > y1):
            problems.append(Problem("error", "box-degenerate", where, f"{label} {np.round(box, 2).tolist()} has no "
                                    "area", line_no))
        elif (min(x1, y1) < -BOX_TOLERANCE_PX or x2 > width + BOX_TOLERANCE_PX
              or y2 > height + BOX_TOLERANCE_PX):
            problems.append(Problem("error", "box-outside", where, f"{label} {np.round(box, 2).tolist()} is outside "
                                    f"the {width}x{height} image", line_no))
    dets = clean_boxes(xyxy, classes, width, height)
    wh = dets.xyxy[:, 2:] - dets.xyxy[:, :2]
    stats.box_sizes += np.sqrt(wh[:, 0] * wh[:, 1]).tolist()
    stats.boxes.update(dets.class_id.tolist())
    stats.box_images.update(set(dets.class_id.tolist()))


def _check_detection(source: FolderSource, index: int, shape: tuple[int, int], stats: SplitStats,
                     problems: list[Problem]) -> None:
    det = source.config.detection
    image = str(source.images[index][0])
    if det.format == "yolo":
        path = source.yolo_paths[index]
        if path is None:
            return
        labels = parse_yolo(path, shape[1], shape[0], len(det.names), det.label_map)
        problems += [Problem("error", "yolo-syntax", str(path), p.message, p.line) for p in labels.problems]
        problems += [Problem("warning", "yolo-unmapped", str(path), p.message, p.line) for p in labels.unmapped]
        _check_boxes(labels.xyxy, labels.classes, shape, str(path), labels.lines.tolist(), stats, problems)
        return
    coco = source.coco["detection"]
    anns = coco.annotations(index)
    if anns is None:
        return
    img = coco.coco.imgs[coco.by_image[index]]
    if (img.get("height"), img.get("width")) != shape:
        problems.append(Problem("error", "coco-image-size", str(coco.path), f"image {img['file_name']} is "
                                f"{img.get('width')}x{img.get('height')} in the file but {image} is "
                                f"{shape[1]}x{shape[0]}"))
    kept = [a for a in anns if not a.get("iscrowd", 0) and a["category_id"] in coco.category_to_class]
    stats.crowd_boxes += sum(1 for a in anns if a.get("iscrowd", 0))
    xyxy = np.asarray([a["bbox"] for a in kept], np.float64).reshape(-1, 4)
    xyxy[:, 2:] += xyxy[:, :2]
    classes = np.asarray([coco.category_to_class[a["category_id"]] for a in kept], np.int32)
    labels = [(None, f"annotation {a['id']} ({img['file_name']})") for a in kept]
    _check_boxes(xyxy, classes, shape, str(coco.path), labels, stats, problems)


def check_image(source: FolderSource, index: int) -> tuple[SplitStats, list[Problem]]:
    """Stats and problems of one image and its labels."""
    stats, problems = SplitStats(images=1), []
    image_path = source.images[index][0]
    try:
        shape = read_image(image_path).shape[:2]
    except DatasetError:
        problems.append(Problem("error", "unreadable-image", str(image_path), "cannot be read as an image"))
        return stats, problems
    stats.image_sizes[(shape[1], shape[0])] += 1
    for task in TASKS:
        if source.labelled(index, task):
            stats.labelled[task] += 1
        elif (source.config.segmentation if task == "segmentation" else source.config.detection) is not None:
            stats.unlabelled_examples[task] = [str(image_path)]
    if source.config.segmentation is not None:
        _check_segmentation(source, index, shape, stats, problems)
    if source.config.detection is not None:
        _check_detection(source, index, shape, stats, problems)
    return stats, problems


def _merge(total: SplitStats, part: SplitStats) -> None:
    total.images += part.images
    for name in ("labelled", "image_sizes", "seg_pixels", "seg_images", "boxes", "box_images"):
        getattr(total, name).update(getattr(part, name))
    for task, examples in part.unlabelled_examples.items():
        held = total.unlabelled_examples.setdefault(task, [])
        held += examples[:EXAMPLES - len(held)]
    total.ignore_pixels += part.ignore_pixels
    total.box_sizes += part.box_sizes
    total.crowd_boxes += part.crowd_boxes


_WORKER_SOURCE: Optional[FolderSource] = None


def _worker_check(index: int) -> tuple[SplitStats, list[Problem]]:
    return check_image(_WORKER_SOURCE, index)


def _file_problems(source: FolderSource) -> list[Problem]:
    """Problems of whole annotation files: COCO images with no file in the split, unknown image ids and categories."""
    problems = []
    for task, coco in source.coco.items():
        for name in coco.unmatched_images():
            problems.append(Problem("error", "coco-missing-image", str(coco.path),
                                    f"annotates {name}, which is not an image of the {source.split} split"))
        for ann in coco.coco.dataset.get("annotations", []):
            if ann.get("image_id") not in coco.coco.imgs:
                problems.append(Problem("error", "coco-unknown-image", str(coco.path),
                                        f"annotation {ann.get('id')} names image id {ann.get('image_id')}, "
                                        "which the file does not list"))
        for cat_id, cat in coco.coco.cats.items():
            if cat_id not in coco.category_to_class:
                problems.append(Problem("warning", "coco-category", str(coco.path),
                                        f"category {cat_id} {cat.get('name')!r} is not one of the {task} classes: "
                                        "its annotations are left out"))
    return problems


def _orphan_labels(config: DatasetConfig, sources: list[FolderSource]) -> list[Problem]:
    """Mask or YOLO label files that no image of any split points to (a misnamed file, a missing image)."""
    problems = []
    for task, cfg in (("segmentation", config.segmentation), ("detection", config.detection)):
        if cfg is None or cfg.format == "coco":
            continue
        used = {p for s in sources for p in (s.mask_paths if task == "segmentation" else s.yolo_paths) if p}
        folder = config.root / cfg.folder
        present = {p for p in folder.rglob(f"*{cfg.suffix}") if p.is_file()} if folder.is_dir() else set()
        for path in sorted(present - used):
            problems.append(Problem("warning", "orphan-label", str(path), f"no image of any split has this {task} "
                                    "label"))
    return problems


def check_dataset(yaml_path: Union[str, Path], workers: int = 1, progress: bool = False) -> CheckReport:
    """Read every image and label of every split of the dataset ``yaml_path`` describes; see the module docstring.

    A YAML or split that cannot be opened at all is reported as one error, not raised.
    """
    global _WORKER_SOURCE
    yaml_path = Path(yaml_path)
    try:
        config = load_config(yaml_path)
    except (DatasetError, OSError) as exc:
        return CheckReport(yaml_path, None, {}, [Problem("error", "yaml", str(yaml_path), str(exc))])
    splits, problems, sources = {}, [], []
    for split in config.splits:
        try:
            source = FolderSource(config, split)
        except (DatasetError, OSError) as exc:
            problems.append(Problem("error", "split", str(yaml_path), f"split {split}: {exc}"))
            continue
        sources.append(source)
        problems += _file_problems(source)
        stats = splits[split] = SplitStats()
        indices = range(len(source))
        if workers > 1 and len(source) > 1:
            _WORKER_SOURCE = source
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = list(tqdm(pool.imap(_worker_check, indices, chunksize=16), total=len(source),
                                    desc=f"check {split}", disable=not progress))
            _WORKER_SOURCE = None
        else:
            results = (check_image(source, i) for i in tqdm(indices, desc=f"check {split}", disable=not progress))
        for part, found in results:
            _merge(stats, part)
            problems += found
    problems += _orphan_labels(config, sources)
    return CheckReport(config.yaml_path, config.spec, splits, problems)
