"""Datasets as one layer: a label set (DatasetSpec) and frames that carry it (FrameSource).

Everything that trains, evaluates or profiles reads frames through a FrameSource and learns the
classes from its spec; a model's sidecar carries the spec it was trained on, so the node, the
evaluator and the reports name classes the same way. Importing this package loads no source:
reading a bag never imports the simulator's renderer.
"""

from perception_core.datasets.source import TASKS, ChainedSource, FrameSource, Sample
from perception_core.datasets.spec import DatasetSpec

__all__ = ["TASKS", "ChainedSource", "DatasetSpec", "FrameSource", "Sample"]
