"""Sample and FrameSource: labelled or unlabelled frames, whatever they were read from.

A sample is one camera frame at camera resolution with the ground truth it has: a class mask,
detections, both or neither (``tasks`` says which). Sources that keep the camera's payload (bags)
hand it over encoded, so decoding is timed by the pipeline and a corrupt frame is reported as a
decode error rather than lost.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Optional, Protocol, Union, runtime_checkable

import numpy as np

from perception_core.codec import EncodedImage
from perception_core.datasets.spec import DatasetSpec
from perception_core.types import Detections, validate_class_mask

TASKS = ("segmentation", "detection")


@dataclass(frozen=True)
class Sample:
    image: Union[np.ndarray, EncodedImage]  # (H, W, 3) uint8 BGR, or the camera's encoded payload
    key: str  # stable across runs: "<source>/<index>" or the header stamp
    class_mask: Optional[np.ndarray] = None  # (H, W) uint8 class ids, ignore_label where unlabelled
    detections: Optional[Detections] = None  # pixels of the camera image
    stamp_ns: int = 0

    @property
    def tasks(self) -> frozenset[str]:
        """The tasks this sample is labelled for."""
        return frozenset(t for t, truth in zip(TASKS, (self.class_mask, self.detections)) if truth is not None)

    def validated(self, spec: DatasetSpec) -> Sample:
        """Check the labels against ``spec``: mask ids below its class count (or the ignore label), box classes."""
        if self.class_mask is not None:
            labelled = self.class_mask[self.class_mask != spec.ignore_label]
            validate_class_mask(labelled.reshape(1, -1), spec.num_seg_classes)
            if isinstance(self.image, np.ndarray) and self.class_mask.shape != self.image.shape[:2]:
                raise ValueError(f"{self.key}: mask {self.class_mask.shape} does not match image "
                                 f"{self.image.shape[:2]}")
        if self.detections is not None and len(self.detections):
            bad = self.detections.class_id[(self.detections.class_id < 0)
                                           | (self.detections.class_id >= spec.num_det_classes)]
            if bad.size:
                raise ValueError(f"{self.key}: detection class ids {sorted(set(bad.tolist()))} out of range for "
                                 f"{spec.num_det_classes} classes")
        return self


@runtime_checkable
class FrameSource(Protocol):
    """Frames in a fixed order with the label set they are annotated in."""

    spec: DatasetSpec
    name: str

    def __len__(self) -> int:
        ...

    def __iter__(self) -> Iterator[Sample]:
        ...


class ChainedSource:
    """The frames of several sources labelled in one spec, one source after another: one pass over many bags.

    ``truth_errors`` gathers those of the sources that count them (bags).
    """

    def __init__(self, sources: Sequence[FrameSource], name: Optional[str] = None) -> None:
        if not sources:
            raise ValueError("no sources to chain")
        specs = {source.spec for source in sources}
        if len(specs) != 1:
            raise ValueError(f"the sources are labelled in different specs: {sorted(s.name for s in specs)}")
        self.sources = list(sources)
        self.spec = sources[0].spec
        self.name = name or " + ".join(source.name for source in sources)

    @property
    def truth_errors(self) -> list[dict]:
        return [error for source in self.sources for error in getattr(source, "truth_errors", ())]

    def __len__(self) -> int:
        return sum(len(source) for source in self.sources)

    def __iter__(self) -> Iterator[Sample]:
        for source in self.sources:
            yield from source
