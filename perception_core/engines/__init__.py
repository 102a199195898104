"""Inference engines behind one protocol (base.Engine): ONNX Runtime here, TensorRT on a Jetson/GPU."""

from __future__ import annotations

from perception_core.engines.base import Engine
from perception_core.model_spec import ModelSpec

ENGINES = ("onnxruntime", "tensorrt")


def load_engine(spec: ModelSpec, *, engine: str = "onnxruntime", threads: int = 2) -> Engine:
    """Build the named engine for a validated model; raises ValueError for an unknown engine."""
    if engine == "onnxruntime":
        from perception_core.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(spec.model_path, intra_op_threads=threads, precision=spec.precision)
    if engine == "tensorrt":
        from perception_core.engines.tensorrt_engine import TensorRTEngine

        try:
            return TensorRTEngine.from_onnx(spec.model_path, precision="int8" if spec.precision == "int8" else "fp16")
        except ImportError as exc:  # tensorrt / cuda-python come from JetPack, not from pip here
            raise ValueError(f"engine 'tensorrt' is not available here ({exc}); use engine 'onnxruntime'") from exc
    raise ValueError(f"unknown engine {engine!r}; must be one of: {', '.join(ENGINES)}")
