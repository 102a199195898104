"""Folder datasets: images on disk with PNG masks, COCO JSON or YOLO txt labels, described by one YAML file.

The YAML has the shape Ultralytics and MMSegmentation users know (every key but the class names
is optional)::

    name: roads
    path: .                   # dataset root, relative to this YAML's folder
    train: images/train       # a folder of images (searched recursively), a .txt list of image
    val: images/val           #   paths relative to the root, or a list of these
    images: images            # the folder that label paths mirror (default: images)
    image_suffix: .jpg        # only files ending so, stripped to find labels (default: any image extension)
    ignore_label: 255         # mask value that carries no label
    segmentation:
      names: [road, sidewalk, car]      # class id = index (or a {id: name} mapping)
      colors: [[128, 64, 128], ...]     # optional, BGR
      format: masks           # masks: 8-bit PNG class-id masks | coco: polygons / RLE, rasterised
      masks: masks            # masks of images/<rel>/<stem><image_suffix> are masks/<rel>/<stem><mask_suffix>
      mask_suffix: .png       # e.g. _gtFine_labelIds.png with image_suffix _leftImg8bit.png (Cityscapes)
      label_map: {7: road, 8: sidewalk, 26: car}   # raw mask value -> class (name or id); others -> ignore
      require_all: false      # true: an image without a mask is an error (dataset check)
      annotations: {train: annotations/seg_train.json, val: annotations/seg_val.json}   # format coco
      background: road        # format coco: class of pixels no annotation covers (default: ignore)
    detection:
      names: [car, person]
      format: yolo            # yolo: labels/<rel>/<stem>.txt, "class cx cy w h" normalised | coco: COCO JSON
      labels: labels
      annotations: {train: annotations/det_train.json, val: annotations/det_val.json}   # format coco
      label_map: {3: car, 1: person}   # COCO category id / YOLO class index -> class; others dropped

A stock Ultralytics ``data.yaml`` (top-level ``names``, no task sections) reads as YOLO detection.

What an image without labels means: a missing mask, a missing YOLO label file or an image absent
from the COCO file leaves that sample unlabelled for that task (``class_mask``/``detections`` is
None, so it trains nothing there); an empty YOLO file, or a COCO image without annotations, is an
image with no objects. COCO ``iscrowd`` boxes are dropped from the ground truth (never negatives:
``crowd_boxes`` counts them per image); in a segmentation COCO file crowd regions paint their class.
COCO images are matched by ``file_name`` as a path under the split's folder, the images folder or
the root, else by bare file name. Box corners are clipped to the image, zero-area boxes dropped;
``dataset check`` reports both as errors. Images and labels are read on demand, one sample at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np
import yaml

from perception_core.datasets.source import TASKS, Sample
from perception_core.datasets.spec import IGNORE_LABEL, DatasetSpec
from perception_core.types import Detections

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
SEG_FORMATS = ("masks", "coco")
DET_FORMATS = ("yolo", "coco")


class DatasetError(ValueError):
    """The YAML or a label file cannot be read as described; the message names the file (and line)."""


@dataclass(frozen=True)
class TaskConfig:
    """One task's labels as the YAML describes them."""

    names: tuple[str, ...]
    format: str
    folder: str  # masks: mask folder, yolo: label folder (relative to the root)
    suffix: str  # the label file's suffix after the image's stem
    annotations: Mapping[str, str]  # coco: split -> JSON path relative to the root
    label_map: Optional[Mapping[int, int]]  # raw id -> class id (or the ignore label for masks)
    colors: Optional[tuple[tuple[int, int, int], ...]] = None
    require_all: bool = False
    background: Optional[int] = None  # coco segmentation: class of uncovered pixels (None: ignore)


@dataclass(frozen=True)
class DatasetConfig:
    yaml_path: Path
    yaml_sha256: str
    name: str
    root: Path
    images: Path  # absolute folder the label paths mirror
    image_suffix: Optional[str]
    splits: Mapping[str, tuple[str, ...]]  # split -> folders / list files / images, relative to the root
    ignore_label: int
    segmentation: Optional[TaskConfig]
    detection: Optional[TaskConfig]

    @property
    def spec(self) -> DatasetSpec:
        seg, det = self.segmentation, self.detection
        return DatasetSpec(seg.names if seg else (), det.names if det else (),
                           seg_colors_bgr=seg.colors if seg else None, ignore_label=self.ignore_label,
                           name=self.name)


def _names(raw: Any, where: str) -> tuple[str, ...]:
    """A list of names, or an Ultralytics-style {id: name} mapping with ids 0..n-1."""
    if isinstance(raw, Mapping):
        ids = sorted(int(k) for k in raw)
        if ids != list(range(len(ids))):
            raise DatasetError(f"{where}: names ids must be 0..{len(ids) - 1}, got {ids}")
        return tuple(str(raw[k]) for k in sorted(raw, key=int))
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise DatasetError(f"{where}: names must be a non-empty list of class names, got {raw!r}")
    return tuple(str(n) for n in raw)


def _label_map(raw: Any, names: tuple[str, ...], ignore_label: Optional[int], where: str) -> Optional[dict[int, int]]:
    """``{raw id: class name or id}`` -> ``{raw id: class id}``; ``ignore`` (masks only) -> the ignore label."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{where}: label_map must map raw ids to class names or ids, got {raw!r}")
    table = {}
    for key, value in raw.items():
        if ignore_label is not None and (value == "ignore" or value == ignore_label):
            table[int(key)] = ignore_label
        elif isinstance(value, str) and value in names:
            table[int(key)] = names.index(value)
        elif isinstance(value, int) and 0 <= value < len(names):
            table[int(key)] = value
        else:
            raise DatasetError(f"{where}: label_map {key}: {value!r} is not one of {list(names)}"
                               + (" or 'ignore'" if ignore_label is not None else ""))
    return table


def _task(raw: Mapping, task: str, yaml_path: Path, ignore_label: int) -> TaskConfig:
    where = f"{yaml_path} {task}"
    names = _names(raw.get("names"), where)
    formats = SEG_FORMATS if task == "segmentation" else DET_FORMATS
    fmt = raw.get("format", formats[0])
    if fmt not in formats:
        raise DatasetError(f"{where}: format must be one of {list(formats)}, got {fmt!r}")
    annotations = raw.get("annotations") or {}
    if fmt == "coco" and (not isinstance(annotations, Mapping) or not annotations):
        raise DatasetError(f"{where}: format coco needs annotations: {{split: file.json}}")
    colors = raw.get("colors")
    background = raw.get("background")
    if background is not None:
        if background not in names:
            raise DatasetError(f"{where}: background {background!r} is not one of {list(names)}")
        background = names.index(background)
    seg = task == "segmentation"
    return TaskConfig(
        names=names, format=fmt, folder=str(raw.get("masks" if seg else "labels", "masks" if seg else "labels")),
        suffix=str(raw.get("mask_suffix", ".png")) if seg else ".txt", annotations=dict(annotations),
        label_map=_label_map(raw.get("label_map"), names, ignore_label if seg else None, where),
        colors=None if colors is None else tuple(tuple(int(v) for v in c) for c in colors),
        require_all=bool(raw.get("require_all", False)), background=background)


def load_config(yaml_path: Union[str, Path]) -> DatasetConfig:
    """Parse and validate a dataset YAML (no image is read)."""
    yaml_path = Path(yaml_path).resolve()
    data = yaml_path.read_bytes()
    raw = yaml.safe_load(data)
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{yaml_path}: not a YAML mapping")
    root = (yaml_path.parent / str(raw.get("path", raw.get("root", ".")))).resolve()
    ignore_label = int(raw.get("ignore_label", IGNORE_LABEL))
    sections = {task: raw.get(task) for task in TASKS}
    if not any(sections.values()) and "names" in raw:  # an Ultralytics detection data.yaml
        sections["detection"] = {"names": raw["names"], "format": "yolo"}
    tasks = {task: _task(section, task, yaml_path, ignore_label) for task, section in sections.items() if section}
    if not tasks:
        raise DatasetError(f"{yaml_path}: needs a segmentation or detection section with class names")
    splits = {}
    for split in SPLITS:
        entry = raw.get(split)
        if entry is not None:
            splits[split] = tuple(str(e) for e in (entry if isinstance(entry, list) else [entry]))
    if not splits:
        raise DatasetError(f"{yaml_path}: names no split; give train: and/or val: image folders or lists")
    config = DatasetConfig(
        yaml_path=yaml_path, yaml_sha256=hashlib.sha256(data).hexdigest(),
        name=str(raw.get("name", yaml_path.parent.name)),
        root=root, images=Path(os.path.normpath(root / str(raw.get("images", "images")))),
        image_suffix=raw.get("image_suffix"), splits=splits, ignore_label=ignore_label,
        segmentation=tasks.get("segmentation"), detection=tasks.get("detection"))
    try:
        _ = config.spec  # validates names, colours and the ignore label together
    except ValueError as exc:
        raise DatasetError(f"{yaml_path}: {exc}") from exc
    return config


def _is_image(path: Path, suffix: Optional[str]) -> bool:
    return path.name.endswith(suffix) if suffix else path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(config: DatasetConfig, split: str) -> list[tuple[Path, Path]]:
    """(image path, folder it was listed from) of ``split``, in a fixed order (sorted within each folder)."""
    if split not in config.splits:
        raise DatasetError(f"{config.yaml_path} has no {split!r} split (it has {sorted(config.splits)})")
    found = []
    for entry in config.splits[split]:
        path = Path(os.path.normpath(config.root / entry))
        if path.is_dir():
            found += [(p, path) for p in sorted(path.rglob("*")) if p.is_file() and _is_image(p, config.image_suffix)]
        elif path.suffix == ".txt" and path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines()]
            found += [(Path(os.path.normpath(config.root / line)), config.root) for line in lines
                      if line and not line.startswith("#")]
        elif path.is_file():
            found.append((path, path.parent))
        else:
            raise DatasetError(f"{config.yaml_path}: {split} entry {entry!r} ({path}) does not exist")
    return found


def label_stem(config: DatasetConfig, image: Path) -> Path:
    """The image's path under the images folder without its suffix: label paths mirror it."""
    try:
        rel = image.relative_to(config.images)
    except ValueError:
        raise DatasetError(f"{image} is not under the images folder {config.images}; set images: in "
                           f"{config.yaml_path}") from None
    suffix = config.image_suffix if config.image_suffix and rel.name.endswith(config.image_suffix) else rel.suffix
    return rel.with_name(rel.name[:len(rel.name) - len(suffix)] if suffix else rel.name)


def label_path(config: DatasetConfig, task: TaskConfig, image: Path) -> Path:
    stem = label_stem(config, image)
    return config.root / task.folder / stem.with_name(stem.name + task.suffix)


def lookup_table(label_map: Optional[Mapping[int, int]], ignore_label: int) -> Optional[np.ndarray]:
    """Raw mask value -> class id as a 256-entry table; unlisted values become the ignore label."""
    if label_map is None:
        return None
    lut = np.full(256, ignore_label, np.uint8)
    for raw, cls in label_map.items():
        if not 0 <= raw <= 255:
            raise DatasetError(f"label_map key {raw} is not an 8-bit mask value")
        lut[raw] = cls
    return lut


def read_mask(path: Path) -> np.ndarray:
    """An 8-bit single-channel PNG (greyscale or palette: the palette index is the id) as (H, W) uint8."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise DatasetError(f"{path}: mask must be an 8-bit single-channel PNG (greyscale or palette), "
                                   f"got mode {im.mode}")
            return np.asarray(im, np.uint8)
    except (OSError, SyntaxError) as exc:
        raise DatasetError(f"{path}: unreadable mask ({exc})") from exc


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: unreadable image")
    return image


@dataclass(frozen=True)
class BoxProblem:
    line: Optional[int]  # YOLO: 1-based line; COCO: None
    message: str


@dataclass(frozen=True)
class YoloLabels:
    xyxy: np.ndarray  # (N, 4) float64 pixels, unclipped
    classes: np.ndarray  # (N,) int32 class ids
    lines: np.ndarray  # (N,) 1-based line of each box
    problems: list[BoxProblem]  # lines that do not parse or whose class id is out of range: errors
    unmapped: list[BoxProblem]  # lines whose class label_map leaves out: dropped on purpose


def parse_yolo(path: Path, width: int, height: int, num_classes: int,
               label_map: Optional[Mapping[int, int]]) -> YoloLabels:
    """A YOLO label file ("class cx cy w h", normalised) -> pixel boxes of a ``width`` x ``height`` image."""
    boxes, classes, lines, problems, unmapped = [], [], [], [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            raw_class, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:5])
            if len(fields) != 5:
                raise ValueError
        except ValueError:
            problems.append(BoxProblem(number, f"expected 'class cx cy w h', got {line.strip()!r}"))
            continue
        if label_map is not None and raw_class not in label_map:
            unmapped.append(BoxProblem(number, f"class {raw_class} is not in label_map: box dropped"))
            continue
        cls = raw_class if label_map is None else label_map[raw_class]
        if not 0 <= cls < num_classes:
            problems.append(BoxProblem(number, f"class {raw_class} is not one of the {num_classes} classes"))
            continue
        boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
        classes.append(cls)
        lines.append(number)
    return YoloLabels(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int32),
                      np.asarray(lines, np.int64), problems, unmapped)


def clean_boxes(xyxy: np.ndarray, classes: np.ndarray, width: int, height: int) -> Detections:
    """Ground truth from raw boxes: corners clipped to the image, zero-area boxes dropped."""
    clipped = np.clip(xyxy, 0, [width, height, width, height]).astype(np.float32)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return Detections.from_lists(clipped[keep], classes[keep])


@dataclass
class CocoIndex:
    """One COCO file, read with pycocotools, indexed by the split's image paths."""

    path: Path
    coco: Any  # pycocotools.coco.COCO
    category_to_class: dict[int, int]  # unmapped categories are left out
    by_image: list[Optional[int]] = field(default_factory=list)  # image index -> COCO image id (None: not in file)

    @classmethod
    def load(cls, path: Path, task: TaskConfig) -> CocoIndex:
        from pycocotools.coco import COCO

        if not path.is_file():
            raise DatasetError(f"{path}: COCO annotation file does not exist")
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                coco = COCO(str(path))
            except (ValueError, KeyError, TypeError, AssertionError) as exc:
                raise DatasetError(f"{path}: not a COCO annotation file ({exc})") from exc
        if task.label_map is not None:
            mapping = {cat: task.label_map[cat] for cat in coco.cats if cat in task.label_map}
        else:
            mapping = {cat: task.names.index(c["name"]) for cat, c in coco.cats.items() if c["name"] in task.names}
        return cls(path, coco, mapping)

    def match(self, images: Sequence[tuple[Path, Path]], config: DatasetConfig) -> None:
        """Pair each image with its COCO entry by file_name (see the module docstring)."""
        by_name = {Path(img["file_name"]).as_posix(): img_id for img_id, img in self.coco.imgs.items()}
        by_base: dict[str, list[int]] = {}
        for img_id, img in self.coco.imgs.items():
            by_base.setdefault(Path(img["file_name"]).name, []).append(img_id)
        self.by_image = []
        for image, folder in images:
            found = None
            for base in (folder, config.images, config.root):
                with contextlib.suppress(ValueError):
                    found = by_name.get(image.relative_to(base).as_posix())
                if found is not None:
                    break
            if found is None and len(by_base.get(image.name, ())) == 1:
                found = by_base[image.name][0]
            self.by_image.append(found)

    def annotations(self, index: int) -> Optional[list[dict]]:
        img_id = self.by_image[index]
        return None if img_id is None else self.coco.imgToAnns.get(img_id, [])

    def unmatched_images(self) -> list[str]:
        matched = set(self.by_image)
        return [img["file_name"] for img_id, img in self.coco.imgs.items() if img_id not in matched]

    def boxes(self, index: int) -> Optional[tuple[np.ndarray, np.ndarray, int]]:
        """xyxy pixel boxes (float64, unclipped), class ids and the number of crowd boxes left out."""
        anns = self.annotations(index)
        if anns is None:
            return None
        kept = [a for a in anns if not a.get("iscrowd", 0) and a["category_id"] in self.category_to_class]
        xyxy = np.asarray([a["bbox"] for a in kept], np.float64).reshape(-1, 4)
        xyxy[:, 2:] += xyxy[:, :2]
        classes = np.asarray([self.category_to_class[a["category_id"]] for a in kept], np.int32)
        return xyxy, classes, sum(1 for a in anns if a.get("iscrowd", 0))

    def mask(self, index: int, fill: int) -> Optional[np.ndarray]:
        """The image's annotations painted as class ids (largest first, so small ones stay on top)."""
        anns = self.annotations(index)
        if anns is None:
            return None
        img = self.coco.imgs[self.by_image[index]]
        mask = np.full((img["height"], img["width"]), fill, np.uint8)
        for ann in sorted((a for a in anns if a["category_id"] in self.category_to_class and a.get("segmentation")),
                          key=lambda a: -a.get("area", 0)):
            mask[self.coco.annToMask(ann) > 0] = self.category_to_class[ann["category_id"]]
        return mask


class FolderSource:
    """One split of a folder dataset as a FrameSource with random access: ``source[i]`` reads image i and its labels."""

    def __init__(self, config: DatasetConfig, split: str = "train") -> None:
        self.config = config
        self.split = split
        self.spec = config.spec
        self.yaml_path = config.yaml_path
        self.yaml_sha256 = config.yaml_sha256
        self.images = list_images(config, split)
        self.seg_lut = None
        self.mask_paths: list[Optional[Path]] = []
        self.yolo_paths: list[Optional[Path]] = []
        self.coco: dict[str, CocoIndex] = {}
        seg, det = config.segmentation, config.detection
        for task, cfg in (("segmentation", seg), ("detection", det)):
            if cfg is not None and cfg.format == "coco":
                if split not in cfg.annotations:
                    raise DatasetError(f"{config.yaml_path}: {task} annotations name no file for split {split!r}")
                self.coco[task] = CocoIndex.load(config.root / cfg.annotations[split], cfg)
                self.coco[task].match(self.images, config)
        if seg is not None and seg.format == "masks":
            self.seg_lut = lookup_table(seg.label_map, config.ignore_label)
            paths = (label_path(config, seg, image) for image, _ in self.images)
            self.mask_paths = [p if p.is_file() else None for p in paths]
        if det is not None and det.format == "yolo":
            paths = (label_path(config, det, image) for image, _ in self.images)
            self.yolo_paths = [p if p.is_file() else None for p in paths]
        self.counts = {"images": len(self.images), **{task: sum(self.labelled(i, task) for i in range(len(self)))
                                                      for task in TASKS}}
        self.name = f"{config.name} {split} ({len(self.images)} images)"

    def labelled(self, index: int, task: str) -> bool:
        """Whether image ``index`` has labels for ``task`` (known without reading them)."""
        cfg = self.config.segmentation if task == "segmentation" else self.config.detection
        if cfg is None:
            return False
        if cfg.format == "coco":
            return self.coco[task].by_image[index] is not None
        paths = self.mask_paths if task == "segmentation" else self.yolo_paths
        return paths[index] is not None

    @property
    def info(self) -> dict:
        """What a report or a sidecar says about this split."""
        return {"name": self.name, "yaml": str(self.yaml_path), "yaml_sha256": self.yaml_sha256,
                "split": self.split, "counts": dict(self.counts)}

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def key(self, index: int) -> str:
        image, folder = self.images[index]
        return f"{self.config.name}/{self.split}/{image.relative_to(folder).as_posix()}"

    def class_mask(self, index: int) -> Optional[np.ndarray]:
        """Mask ``index`` in class ids (mapped through the table; the ignore label kept), or None if unlabelled."""
        seg = self.config.segmentation
        if seg is None:
            return None
        if seg.format == "coco":
            fill = self.config.ignore_label if seg.background is None else seg.background
            return self.coco["segmentation"].mask(index, fill)
        if self.mask_paths[index] is None:
            return None
        mask = read_mask(self.mask_paths[index])
        return mask if self.seg_lut is None else self.seg_lut[mask]

    def detections(self, index: int, width: int, height: int) -> tuple[Optional[Detections], int]:
        """Boxes of image ``index`` (``width`` x ``height``) in pixels, or None if unlabelled; and its crowd boxes."""
        det = self.config.detection
        if det is None:
            return None, 0
        if det.format == "coco":
            raw = self.coco["detection"].boxes(index)
            if raw is None:
                return None, 0
            xyxy, classes, crowd = raw
        else:
            path = self.yolo_paths[index]
            if path is None:
                return None, 0
            labels = parse_yolo(path, width, height, len(det.names), det.label_map)
            if labels.problems:
                raise DatasetError(f"{path}:{labels.problems[0].line}: {labels.problems[0].message}")
            xyxy, classes, crowd = labels.xyxy, labels.classes, 0
        return clean_boxes(xyxy, classes, width, height), crowd

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name} has {len(self)} images, asked for {index}")
        index %= len(self)
        image = read_image(self.images[index][0])
        height, width = image.shape[:2]
        mask = self.class_mask(index)
        if mask is not None and mask.shape != (height, width):
            raise DatasetError(f"{self.images[index][0]}: mask {mask.shape[1]}x{mask.shape[0]} does not match "
                               f"the image's {width}x{height}")
        detections, _ = self.detections(index, width, height)
        return Sample(image, self.key(index), mask, detections)


def open_dataset(yaml_path: Union[str, Path], split: str = "train") -> FolderSource:
    """``split`` of the dataset that ``yaml_path`` describes, as a FrameSource (images read on demand)."""
    return FolderSource(load_config(yaml_path), split)
