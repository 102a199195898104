"""A FrameSource whose class ids are mapped into another label set through lookup tables.

For datasets that are another source's frames under other names: merged, split or renumbered
classes. ``seg_map[old] = new`` and ``det_map[old] = new``; the ignore label stays the ignore
label, and a table entry equal to the new spec's ignore label drops that class's pixels from the
labels. Detections mapped to ``DROP`` are removed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Optional

import numpy as np

from perception_core.datasets.source import FrameSource, Sample
from perception_core.datasets.spec import DatasetSpec

DROP = -1  # a det_map entry that removes the detection


class RelabeledSource:
    """``source``'s samples with class ids mapped into ``spec`` (a table per task; None: that task unlabelled)."""

    def __init__(self, source: FrameSource, spec: DatasetSpec, seg_map: Optional[Sequence[int]],
                 det_map: Optional[Sequence[int]], name: str = "") -> None:
        self.source = source
        self.spec = spec
        self.name = name or f"{source.name} relabeled as {spec.name or 'a new label set'}"
        self.seg_lut = None if seg_map is None else self._seg_lut(seg_map, source.spec, spec)
        self.det_lut = None if det_map is None else self._det_lut(det_map, source.spec, spec)

    @staticmethod
    def _seg_lut(seg_map: Sequence[int], old: DatasetSpec, new: DatasetSpec) -> np.ndarray:
        if len(seg_map) != old.num_seg_classes:
            raise ValueError(f"seg_map needs one entry per class of {old.name or 'the source'} "
                             f"({old.num_seg_classes}), got {len(seg_map)}")
        if any(not (0 <= v < new.num_seg_classes or v == new.ignore_label) for v in seg_map):
            raise ValueError(f"seg_map entries must be class ids of {new.num_seg_classes} classes or the ignore "
                             f"label {new.ignore_label}, got {list(seg_map)}")
        lut = np.full(256, new.ignore_label, np.uint8)  # anything that was not a class stays unlabelled
        lut[:len(seg_map)] = seg_map
        return lut

    @staticmethod
    def _det_lut(det_map: Sequence[int], old: DatasetSpec, new: DatasetSpec) -> np.ndarray:
        if len(det_map) != old.num_det_classes:
            raise ValueError(f"det_map needs one entry per detection class of {old.name or 'the source'} "
                             f"({old.num_det_classes}), got {len(det_map)}")
        if any(not (0 <= v < new.num_det_classes or v == DROP) for v in det_map):
            raise ValueError(f"det_map entries must be detection class ids of {new.num_det_classes} classes or "
                             f"DROP ({DROP}), got {list(det_map)}")
        return np.asarray(det_map, np.int32)

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[Sample]:
        for sample in self.source:
            mask = sample.class_mask
            if mask is not None and self.seg_lut is not None:
                mask = self.seg_lut[mask]
            elif self.seg_lut is None:
                mask = None
            dets = sample.detections
            if dets is not None and self.det_lut is not None:
                ids = self.det_lut[dets.class_id]
                dets = replace(dets[ids != DROP], class_id=ids[ids != DROP])
            elif self.det_lut is None:
                dets = None
            yield replace(sample, class_mask=mask, detections=dets)
