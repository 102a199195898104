"""DatasetSpec: the one description of a label set (class names, colours, ignore label).

A segmentation class id is its index in ``seg_classes``, a detection class id its index in
``det_classes``; the two lists are independent (a detection class need not be a segmentation
class). ``ignore_label`` marks mask pixels that carry no label (letterbox padding, unlabelled
regions): they count for no class and no loss. A model's sidecar stores the spec it was trained on.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

IGNORE_LABEL = 255


def distinct_colors_bgr(count: int) -> tuple[tuple[int, int, int], ...]:
    """``count`` well-separated BGR colours (golden-ratio hues), for label sets that bring none."""
    colors = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
        colors.append((int(b * 255), int(g * 255), int(r * 255)))
    return tuple(colors)


@dataclass(frozen=True)
class DatasetSpec:
    seg_classes: tuple[str, ...]
    det_classes: tuple[str, ...]
    seg_colors_bgr: Optional[tuple[tuple[int, int, int], ...]] = None  # None: distinct_colors_bgr
    ignore_label: int = IGNORE_LABEL
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "seg_classes", tuple(str(c) for c in self.seg_classes))
        object.__setattr__(self, "det_classes", tuple(str(c) for c in self.det_classes))
        colors = self.seg_colors_bgr if self.seg_colors_bgr is not None else distinct_colors_bgr(len(self.seg_classes))
        object.__setattr__(self, "seg_colors_bgr", tuple(tuple(int(v) for v in c) for c in colors))
        for kind, names in (("segmentation", self.seg_classes), ("detection", self.det_classes)):
            if len(set(names)) != len(names) or any(not n for n in names):
                raise ValueError(f"{kind} class names must be unique and non-empty, got {list(names)}")
        if not self.seg_classes and not self.det_classes:
            raise ValueError("a dataset spec needs segmentation classes, detection classes or both")
        if len(self.seg_classes) > 255:
            raise ValueError(f"{len(self.seg_classes)} segmentation classes do not fit a uint8 mask")
        if len(self.seg_colors_bgr) != len(self.seg_classes) or any(
                len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.seg_colors_bgr):
            raise ValueError("seg_colors_bgr needs one BGR triple (0-255) per segmentation class")
        if not len(self.seg_classes) <= self.ignore_label <= 255:
            raise ValueError(f"ignore_label {self.ignore_label} must be in [{len(self.seg_classes)}, 255]")

    @property
    def num_seg_classes(self) -> int:
        return len(self.seg_classes)

    @property
    def num_det_classes(self) -> int:
        return len(self.det_classes)

    def to_dict(self) -> dict[str, Any]:
        """The sidecar fields that carry this spec (model.json)."""
        return {"dataset": self.name, "seg_classes": list(self.seg_classes), "det_classes": list(self.det_classes),
                "seg_colors_bgr": [list(c) for c in self.seg_colors_bgr], "ignore_label": self.ignore_label}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DatasetSpec:
        return cls(seg_classes=tuple(raw.get("seg_classes", ())), det_classes=tuple(raw.get("det_classes", ())),
                   seg_colors_bgr=raw.get("seg_colors_bgr"), ignore_label=int(raw.get("ignore_label", IGNORE_LABEL)),
                   name=str(raw.get("dataset", "")))

    def relabeled(self, seg_classes: Sequence[str], det_classes: Sequence[str], name: str = "") -> DatasetSpec:
        """A spec over other class names with this one's ignore label (colours chosen afresh)."""
        return DatasetSpec(tuple(seg_classes), tuple(det_classes), ignore_label=self.ignore_label,
                           name=name or f"{self.name}-relabeled")
