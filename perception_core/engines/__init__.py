"""Inference engines behind one protocol (base.Engine): ONNX Runtime (CPU, or its CUDA/TensorRT execution
providers), LiteRT for ``.tflite`` files (CPU boards, Coral Edge TPU), TensorRT on a Jetson/GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from perception_core.engines.base import Engine
from perception_core.model_spec import ModelSpec

ENGINES = ("onnxruntime", "tensorrt", "litert")


def load_engine(spec: ModelSpec, *, engine: str = "onnxruntime", threads: int = 2,
                providers: Optional[Sequence[str]] = None, delegate: Optional[str] = None) -> Engine:
    """Build the named engine for a validated model.

    The model file picks the CPU runtime: a ``.tflite`` file runs on LiteRT under the default engine
    too, since ONNX Runtime cannot read it. ``providers`` (ONNX Runtime execution providers, e.g.
    ``["cuda", "cpu"]``; see onnxruntime_engine.resolve_providers) and ``delegate`` (a LiteRT delegate
    library, e.g. ``libedgetpu.so.1``) belong to their engine. Raises ValueError for an unknown engine,
    a file the engine cannot read, an option another engine owns, or a provider/delegate missing here.
    """
    from perception_core.engines.onnxruntime_engine import DEFAULT_PROVIDERS, provider_names

    tflite = spec.model_path.suffix == ".tflite"
    if tflite and engine == "onnxruntime":
        engine = "litert"
    if engine in ENGINES and tflite != (engine == "litert"):
        raise ValueError(f"engine {engine!r} cannot run {spec.model_path.name}: .tflite files run on engine 'litert', "
                         "ONNX files on 'onnxruntime' or 'tensorrt'")
    if engine != "onnxruntime" and provider_names(providers) != list(DEFAULT_PROVIDERS):
        raise ValueError(f"execution providers {list(providers or ())} are for engine 'onnxruntime', not {engine!r}")
    if engine != "litert" and delegate:
        raise ValueError(f"a delegate ({delegate}) is for engine 'litert' (.tflite models), not {engine!r}")
    if engine == "litert":
        from perception_core.engines.litert_engine import LiteRTEngine

        return LiteRTEngine(spec.model_path, outputs=list(spec.outputs), threads=threads, delegate=delegate,
                            precision=spec.precision)
    if engine == "onnxruntime":
        from perception_core.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(spec.model_path, intra_op_threads=threads, providers=providers,
                                 precision=spec.precision)
    if engine == "tensorrt":
        from perception_core.engines.tensorrt_engine import TensorRTEngine, TensorRTError

        # cached_plan refuses the CPU INT8 form and TensorRT older than 8.6 with a ValueError of its own.
        try:
            return TensorRTEngine.from_onnx(spec.model_path, precision="int8" if spec.precision == "int8" else "fp16")
        except ImportError as exc:  # tensorrt and libcudart come from JetPack, not from pip
            raise ValueError(f"engine 'tensorrt' is not available here ({exc}); use engine 'onnxruntime'") from exc
        except TensorRTError as exc:  # CUDA, build or plan failures on this machine: one line, not a traceback
            raise ValueError(f"engine 'tensorrt' failed: {exc}") from exc
    raise ValueError(f"unknown engine {engine!r}; must be one of: {', '.join(ENGINES)}")
