"""ONNX Runtime engine: one session, explicit thread count and execution providers, outputs looked up by name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import onnxruntime as ort

# Short names a launch file can use; full ONNX Runtime names (e.g. "OpenVINOExecutionProvider") work too.
PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider"}
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def provider_names(providers: Optional[Sequence[str]] = None) -> list[str]:
    """Short or full provider names -> ONNX Runtime names in priority order, duplicates dropped; default CPU only."""
    names = [PROVIDER_ALIASES.get(p.strip().lower(), p.strip()) for p in providers or () if p.strip()]
    return list(dict.fromkeys(names)) or list(DEFAULT_PROVIDERS)


def resolve_providers(providers: Optional[Sequence[str]] = None) -> list[str]:
    """:func:`provider_names`, checked against this onnxruntime build.

    Raises ValueError naming each provider the build lacks and the ones it has, so a CPU-only wheel
    asked for CUDA fails at start-up instead of running on the CPU unnoticed.
    """
    names = provider_names(providers)
    available = ort.get_available_providers()
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"ONNX Runtime execution provider(s) {', '.join(missing)} not available in this onnxruntime "
                         f"build (available: {', '.join(available)}; short names: "
                         f"{', '.join(f'{k}={v}' for k, v in PROVIDER_ALIASES.items())}); CUDA and TensorRT need "
                         "onnxruntime-gpu or a Jetson build of ONNX Runtime")
    return names


def provider_options(name: str, cache_dir: Path) -> dict[str, str]:
    """TensorRT's provider builds an engine per model at session start (minutes on a Jetson): cache it."""
    if name != "TensorrtExecutionProvider":
        return {}
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir)}


class OnnxRuntimeEngine:
    """Runs an ONNX model: ``infer({"image": uint8 NHWC}) -> {output name: array}``.

    Spinning is off: two spinning sessions on a 2-core machine took 42 ms instead of 18.
    ``name`` carries the first provider the session actually registered, not the first one asked
    for: ONNX Runtime drops a provider whose libraries fail to load (CUDA without cuDNN, say) with
    only a log line and runs on the CPU.
    """

    def __init__(self, model_path: Union[str, Path], *, intra_op_threads: int = 2,
                 providers: Optional[Sequence[str]] = None, precision: str = "fp32") -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"ONNX model {self.model_path} not found")
        from perception_core.engines.tensorrt_engine import DEFAULT_CACHE_DIR

        names = resolve_providers(providers)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.model_path), options, providers=names,
                                            provider_options=[provider_options(n, DEFAULT_CACHE_DIR / "onnxruntime")
                                                              for n in names])
        self.name = f"onnxruntime:{self.session.get_providers()[0]}"
        self.precision = precision
        self.input_spec = {i.name: (tuple(i.shape), i.type) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs)))

    def warmup(self, runs: int = 3) -> None:
        """Run zeros through the model so first-call allocation does not land in a timed frame."""
        feeds = {name: np.zeros(shape, np.uint8 if "uint8" in dtype else np.float32)
                 for name, (shape, dtype) in self.input_spec.items()}
        for _ in range(runs):
            self.infer(feeds)
