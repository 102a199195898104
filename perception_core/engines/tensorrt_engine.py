"""TensorRT engine (Jetson / NVIDIA GPU): ONNX -> cached serialized plan -> execute_async_v3.

Written against the TensorRT 10 Python API and cuda-python; TensorRT cannot be installed on the
development machines, so this module is exercised only where ``tensorrt`` imports (the engine
conformance test skips elsewhere, saying why).

Plans are cached under a key of ONNX sha256 + TensorRT version + GPU name + precision, because a
plan is only valid for the exact TensorRT build and GPU that produced it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Optional, Union

import numpy as np

from perception_core.model_spec import file_sha256

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "multitask_perception" / "engines"


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:  # older cuda-python
        from cuda import cudart
    return cudart


def _check(result):
    """cuda-python returns (err, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA call failed with error {err}")
    return values[0] if len(values) == 1 else values


def gpu_name(device: int = 0) -> str:
    props = _check(_cudart().cudaGetDeviceProperties(device))
    return props.name.decode() if isinstance(props.name, bytes) else str(props.name)


def plan_cache_path(onnx_path: Union[str, Path], precision: str, cache_dir: Union[str, Path] = DEFAULT_CACHE_DIR,
                    trt_version: Optional[str] = None, device_name: Optional[str] = None) -> Path:
    """Where the plan for this (model, TensorRT, GPU, precision) lives."""
    import tensorrt as trt

    key = "|".join([file_sha256(onnx_path), trt_version or trt.__version__, device_name or gpu_name(), precision])
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return Path(cache_dir) / f"{Path(onnx_path).stem}_{precision}_{digest}.plan"


def build_plan(onnx_path: Union[str, Path], precision: str = "fp16", workspace_mib: int = 1024,
               show_progress: bool = True) -> bytes:
    """Parse the ONNX model and build a serialized plan. INT8 expects a QDQ (explicitly quantized) model."""
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers left in float (the heatmap head) run in fp16
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if show_progress:
        config.progress_monitor = _ProgressMonitor(trt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build a {precision} plan from {onnx_path}")
    return bytes(plan)


def _ProgressMonitor(trt):  # noqa: N802 - builds a subclass of a class only importable with TensorRT
    class ProgressMonitor(trt.IProgressMonitor):
        """Prints each build phase with its step count, so a minutes-long build shows it is alive."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.steps[phase_name] = num_steps
            print(f"[build-engine] {phase_name} ({num_steps} steps)", file=sys.stderr, flush=True)

        def step_complete(self, phase_name, step):
            print(f"[build-engine]   {phase_name}: {step + 1}/{self.steps.get(phase_name, '?')}",
                  file=sys.stderr, flush=True)
            return True  # keep building

        def phase_finish(self, phase_name):
            self.steps.pop(phase_name, None)

    return ProgressMonitor()


def cached_plan(onnx_path: Union[str, Path], precision: str = "fp16",
                cache_dir: Union[str, Path] = DEFAULT_CACHE_DIR) -> Path:
    """The cached plan for this model, building (and caching) it on a miss."""
    path = plan_cache_path(onnx_path, precision, cache_dir)
    if not path.is_file():
        print(f"[build-engine] building {precision} plan for {onnx_path} -> {path}", file=sys.stderr, flush=True)
        plan = build_plan(onnx_path, precision)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(plan)
        tmp.replace(path)
    return path


class TensorRTEngine:
    """Runs a serialized plan: I/O buffers allocated once, one CUDA stream, ``execute_async_v3``."""

    def __init__(self, plan_path: Union[str, Path], precision: str = "fp16") -> None:
        import tensorrt as trt

        self._cudart = _cudart()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self._engine is None:
            raise ValueError(f"{plan_path} is not a TensorRT plan for this TensorRT version and GPU")
        self._context = self._engine.create_execution_context()
        self._stream = _check(self._cudart.cudaStreamCreate())
        self.name = f"tensorrt:{gpu_name()}"
        self.precision = precision
        self.input_spec: dict[str, tuple[tuple[int, ...], str]] = {}
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        self._outputs: list[str] = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(self._engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            self._host[name] = np.empty(shape, dtype)
            self._device[name] = int(_check(self._cudart.cudaMalloc(self._host[name].nbytes)))
            self._context.set_tensor_address(name, self._device[name])
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input_spec[name] = (shape, str(dtype))
            else:
                self._outputs.append(name)

    @classmethod
    def from_onnx(cls, onnx_path: Union[str, Path], precision: str = "fp16",
                  cache_dir: Union[str, Path] = DEFAULT_CACHE_DIR) -> TensorRTEngine:
        return cls(cached_plan(onnx_path, precision, cache_dir), precision)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, array in inputs.items():
            host = self._host[name]
            np.copyto(host, array, casting="no")
            _check(cudart.cudaMemcpyAsync(self._device[name], host.ctypes.data, host.nbytes, h2d, self._stream))
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for name in self._outputs:
            host = self._host[name]
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, self._device[name], host.nbytes, d2h, self._stream))
        _check(cudart.cudaStreamSynchronize(self._stream))
        return {name: self._host[name].copy() for name in self._outputs}

    def warmup(self, runs: int = 3) -> None:
        feeds = {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.input_spec.items()}
        for _ in range(runs):
            self.infer(feeds)

    def __del__(self) -> None:
        for pointer in getattr(self, "_device", {}).values():
            self._cudart.cudaFree(pointer)
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)


def main(argv=None) -> int:
    """``python -m perception_core build-engine``: build (or find) the cached plan for a model."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m perception_core build-engine", description=main.__doc__)
    parser.add_argument("--model", default="models/multitask.onnx", help="ONNX file (QDQ model for int8)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        print(f"build-engine needs TensorRT (JetPack or the tensorrt wheels with their libs): {exc}", file=sys.stderr)
        return 2
    print(cached_plan(args.model, args.precision, args.cache_dir))
    return 0
