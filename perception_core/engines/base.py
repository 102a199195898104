"""The Engine protocol: what the pipeline needs from ONNX Runtime, TensorRT or anything else."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Engine(Protocol):
    """Runs one model on one batch; every engine passes test/test_engine_conformance.py."""

    name: str  # e.g. "onnxruntime:CPUExecutionProvider", "tensorrt:NVIDIA Orin"
    precision: str  # "fp32", "fp16" or "int8"
    input_spec: dict[str, tuple[tuple[int, ...], str]]  # input name -> (shape, dtype)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs by name -> outputs by name (class_map, boxes, scores, classes, as the model has)."""
        ...

    def warmup(self, runs: int = 3) -> None:
        """Run dummy inputs so first-call allocations stay out of timed frames."""
        ...
