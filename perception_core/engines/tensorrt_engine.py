"""TensorRT engine (Jetson / NVIDIA GPU): ONNX -> cached serialized plan -> ``execute_async_v3``.

Supported TensorRT: 8.6 (JetPack 6.0) to 11.x; older versions are refused with one line.
- 8.6: explicit-batch network flag, no build progress monitor (``IProgressMonitor`` came in 9.0).
- 9.0 to 10.x: weakly typed build with BuilderFlag.FP16 (INT8 for the QDQ model), the detection
  peak finder pinned to float32 (OBEY_PRECISION_CONSTRAINTS). 10.12 deprecated those flags; they still work.
- 11.x: networks are always strongly typed and BuilderFlag.FP16/INT8 are gone: an FP16 request builds
  FP32 and says so (FP16 then needs an ONNX converted by ModelOpt AutoCast); INT8 comes from the
  QDQ model alone.

CUDA is called through JetPack's own ``libcudart`` with ctypes, not cuda-python: the runtime library
that ships with the board always matches its driver, whereas ``pip install cuda-python`` now resolves
to 13.x, which needs a newer driver than JetPack 6 has (cudaErrorInsufficientDriver at the first call).

TensorRT cannot be installed on the development machines: ``test/test_tensorrt_glue.py`` runs every
line of this module against a fake ``tensorrt`` and a fake libcudart with the real call signatures;
real parsing, building, kernels and CUDA run only on a Jetson/GPU (``test_engine_conformance.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from perception_core.model_spec import file_sha256, sidecar_path

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "multitask_perception" / "engines"
MIN_TENSORRT = (8, 6)
# Bump whenever build_plan changes what a plan contains (flags, pinned layers, parser options), so
# plans built by older code are rebuilt instead of silently reused.
BUILD_RECIPE_VERSION = 2

# cuda_runtime_api.h / driver_types.h values used here.
_CUDA_SUCCESS = 0
_HOST_ALLOC_MAPPED = 0x02  # cudaHostAllocMapped
_MEMCPY_H2D, _MEMCPY_D2H = 1, 2  # cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost
_STREAM_NON_BLOCKING = 0x01  # cudaStreamNonBlocking
_ATTR = {"sm_count": 16, "integrated": 18, "can_map_host_memory": 19, "cc_major": 75, "cc_minor": 76}
_DEVICE_PROP_BYTES = 8192  # > sizeof(cudaDeviceProp) in CUDA 11-13; only its first field (char name[256]) is read


class TensorRTError(RuntimeError):
    """TensorRT or CUDA refused to work on this machine (build failed, plan unreadable, CUDA error)."""


# --------------------------------------------------------------------------------------- CUDA runtime


def _open_libcudart():
    """JetPack's CUDA runtime library (``/usr/local/cuda/lib64``); ``CUDART_LIBRARY`` overrides the search."""
    candidates = [os.environ.get("CUDART_LIBRARY"), ctypes.util.find_library("cudart"), "libcudart.so",
                  "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0", "/usr/local/cuda/lib64/libcudart.so"]
    errors = []
    for name in filter(None, candidates):
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc))
    raise ImportError("the CUDA runtime library libcudart.so was not found (JetPack installs it under "
                      f"/usr/local/cuda/lib64; set CUDART_LIBRARY to its path): {errors[-1] if errors else ''}")


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """What identifies a GPU for a plan: Orin modules share a name, so capability and SM count count too."""

    name: str
    compute_capability: tuple[int, int]
    sm_count: int
    integrated: bool = False  # shares DRAM with the CPU (Jetson): I/O buffers are mapped, not copied
    can_map_host_memory: bool = False


class CudaRuntime:
    """The few CUDA runtime calls the engine needs, declared with cuda_runtime_api.h's C signatures."""

    _SIGNATURES: dict[str, tuple[Any, list]] = {
        "cudaGetErrorName": (ctypes.c_char_p, [ctypes.c_int]),
        "cudaGetErrorString": (ctypes.c_char_p, [ctypes.c_int]),
        "cudaRuntimeGetVersion": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int)]),
        "cudaDriverGetVersion": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int)]),
        "cudaSetDevice": (ctypes.c_int, [ctypes.c_int]),
        "cudaDeviceGetAttribute": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int]),
        "cudaMalloc": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]),
        "cudaFree": (ctypes.c_int, [ctypes.c_void_p]),
        "cudaHostAlloc": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_uint]),
        "cudaFreeHost": (ctypes.c_int, [ctypes.c_void_p]),
        "cudaHostGetDevicePointer": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_uint]),
        "cudaStreamCreateWithFlags": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]),
        "cudaStreamDestroy": (ctypes.c_int, [ctypes.c_void_p]),
        "cudaStreamSynchronize": (ctypes.c_int, [ctypes.c_void_p]),
        "cudaMemcpyAsync": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                           ctypes.c_void_p]),
    }

    def __init__(self, lib=None) -> None:
        self._lib = lib if lib is not None else _open_libcudart()
        for name, (restype, argtypes) in self._SIGNATURES.items():
            fn = getattr(self._lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        # CUDA 12 renamed the ABI of cudaGetDeviceProperties (its header maps the name to the _v2 symbol).
        props = getattr(self._lib, "cudaGetDeviceProperties_v2", None) or self._lib.cudaGetDeviceProperties
        props.restype, props.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]
        self._get_properties = props

    def check(self, err: int, what: str) -> None:
        if err != _CUDA_SUCCESS:
            name, text = self._lib.cudaGetErrorName(err), self._lib.cudaGetErrorString(err)
            hint = ""
            if name == b"cudaErrorInsufficientDriver":
                runtime, driver = ctypes.c_int(), ctypes.c_int()
                self._lib.cudaRuntimeGetVersion(ctypes.byref(runtime))
                self._lib.cudaDriverGetVersion(ctypes.byref(driver))
                hint = (f" (this libcudart is CUDA {runtime.value}, the driver supports up to {driver.value}: "
                        "use the libcudart that came with JetPack)")
            raise TensorRTError(f"{what} failed: {(name or b'?').decode()}: {(text or b'').decode()}{hint}")

    def device_info(self, device: int = 0) -> DeviceInfo:
        self.check(self._lib.cudaSetDevice(device), f"cudaSetDevice({device})")
        props = ctypes.create_string_buffer(_DEVICE_PROP_BYTES)
        self.check(self._get_properties(props, device), "cudaGetDeviceProperties")

        def attribute(key: str) -> int:
            value = ctypes.c_int()
            self.check(self._lib.cudaDeviceGetAttribute(ctypes.byref(value), _ATTR[key], device),
                       f"cudaDeviceGetAttribute({key})")
            return value.value

        return DeviceInfo(name=props.raw[:256].split(b"\0", 1)[0].decode(errors="replace"),
                          compute_capability=(attribute("cc_major"), attribute("cc_minor")),
                          sm_count=attribute("sm_count"), integrated=bool(attribute("integrated")),
                          can_map_host_memory=bool(attribute("can_map_host_memory")))

    def malloc(self, nbytes: int) -> int:
        pointer = ctypes.c_void_p()
        self.check(self._lib.cudaMalloc(ctypes.byref(pointer), nbytes), f"cudaMalloc({nbytes})")
        return pointer.value

    def host_alloc(self, nbytes: int, mapped: bool) -> int:
        """Page-locked host memory: async copies go straight to/from it instead of through a staging buffer."""
        pointer = ctypes.c_void_p()
        self.check(self._lib.cudaHostAlloc(ctypes.byref(pointer), nbytes, _HOST_ALLOC_MAPPED if mapped else 0),
                   f"cudaHostAlloc({nbytes})")
        return pointer.value

    def device_pointer(self, host_pointer: int) -> int:
        pointer = ctypes.c_void_p()
        self.check(self._lib.cudaHostGetDevicePointer(ctypes.byref(pointer), host_pointer, 0),
                   "cudaHostGetDevicePointer")
        return pointer.value

    def free(self, pointer: int, host: bool) -> None:
        (self._lib.cudaFreeHost if host else self._lib.cudaFree)(pointer)

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        self.check(self._lib.cudaStreamCreateWithFlags(ctypes.byref(stream), _STREAM_NON_BLOCKING),
                   "cudaStreamCreateWithFlags")
        return stream.value

    def stream_destroy(self, stream: int) -> None:
        self._lib.cudaStreamDestroy(stream)

    def memcpy_async(self, dst: int, src: int, nbytes: int, to_device: bool, stream: int) -> None:
        self.check(self._lib.cudaMemcpyAsync(dst, src, nbytes, _MEMCPY_H2D if to_device else _MEMCPY_D2H, stream),
                   "cudaMemcpyAsync")

    def synchronize(self, stream: int) -> None:
        self.check(self._lib.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


_RUNTIME: Optional[CudaRuntime] = None
_RUNTIME_LOCK = threading.Lock()


def cuda_runtime() -> CudaRuntime:
    """The process-wide CudaRuntime (libcudart is loaded once)."""
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            _RUNTIME = CudaRuntime()
        return _RUNTIME


# ------------------------------------------------------------------------------------- versions, settings


def tensorrt_version(trt) -> tuple[int, int]:
    major, minor = (int(part) for part in trt.__version__.split(".")[:2])
    return major, minor


def import_tensorrt():
    """``import tensorrt``, refusing versions this module was not written for with one line."""
    import tensorrt as trt

    if tensorrt_version(trt) < MIN_TENSORRT:
        raise ValueError(f"TensorRT {trt.__version__} is too old: this engine needs TensorRT 8.6 or newer "
                         "(JetPack 6.0 or later; docs/jetson.md lists what each JetPack ships)")
    return trt


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    """Everything besides the model, TensorRT and GPU that changes the plan; all of it is in the cache key."""

    precision: str = "fp16"
    workspace_mib: int = 1024
    pin_peak_finder: bool = True  # Sigmoid -> MaxPool -> Equal -> TopK kept in float32 under FP16

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.workspace_mib < 1:
            raise ValueError(f"workspace_mib must be >= 1, got {self.workspace_mib}")

    def effective(self, trt_version: tuple[int, int]) -> BuildSettings:
        """TensorRT 11 has no FP16 flag: an fp16 request builds fp32 there (see module docstring)."""
        if trt_version >= (11, 0) and self.precision == "fp16":
            return dataclasses.replace(self, precision="fp32")
        return self


def plan_key(onnx_sha256: str, trt_version: str, device: DeviceInfo, settings: BuildSettings) -> dict[str, Any]:
    """What a plan depends on; a change in any part means another plan file."""
    return {"onnx_sha256": onnx_sha256, "tensorrt": trt_version, "gpu": device.name,
            "compute_capability": "{}.{}".format(*device.compute_capability), "sm_count": device.sm_count,
            "recipe": BUILD_RECIPE_VERSION, **dataclasses.asdict(settings)}


def plan_cache_path(onnx_path: Union[str, Path], settings: BuildSettings,
                    cache_dir: Union[str, Path] = DEFAULT_CACHE_DIR, trt_version: Optional[str] = None,
                    device: Optional[DeviceInfo] = None) -> Path:
    """Where the plan for this (model, TensorRT, GPU, settings) lives; imports TensorRT/CUDA only for missing parts."""
    if trt_version is None:
        trt_version = import_tensorrt().__version__
    key = plan_key(file_sha256(onnx_path), trt_version, device or cuda_runtime().device_info(), settings)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(cache_dir) / f"{Path(onnx_path).stem}_{settings.precision}_{digest}.plan"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write through a unique temporary file in the same folder: readers and rival writers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def require_tensorrt_int8_form(onnx_path: Union[str, Path], precision: str) -> None:
    """Refuse the CPU INT8 form (u8s8 QDQ, int32 bias DQ) before TensorRT fails on it with a parse error.

    The model's sidecar says which form it is (``quantization.form``, written by ``quantize``).
    """
    if precision != "int8":
        return
    onnx_path = Path(onnx_path)
    sidecar = sidecar_path(onnx_path)
    if not sidecar.is_file():
        print(f"[build-engine] {onnx_path} has no sidecar: cannot check that it is the TensorRT INT8 form",
              file=sys.stderr, flush=True)
        return
    form = (json.loads(sidecar.read_text()).get("quantization") or {}).get("form")
    if form == "tensorrt":
        return
    sibling = onnx_path.with_name(f"{onnx_path.stem}_trt{onnx_path.suffix}")
    right = (f"use {sibling}" if sibling.is_file() else
             "write it with `python -m perception_core quantize --out-trt <file>` and use that file")
    raise ValueError(f"{onnx_path.name} is not the TensorRT INT8 form (its sidecar says quantization form {form!r}; "
                     f"the 'cpu' form has uint8 zero points and int32 bias dequantization, which TensorRT rejects): "
                     f"{right}")


# ------------------------------------------------------------------------------------------------ build


def _downcast(trt, layer, layer_class: str):
    """``network.get_layer`` returns the ILayer base class; the subclass carries e.g. the activation type."""
    layer.__class__ = getattr(trt, layer_class)
    return layer


def pin_peak_finder(trt, network) -> list[str]:
    """Pin the detection decoding (heatmap conv, Sigmoid -> MaxPool -> Equal -> ... -> TopK) to float32.

    Under FP16 a 3x3 max-pool compared with Equal against rounded values can tie neighbours (duplicate
    peaks) or miss a peak. Returns the pinned layer names; empty when the network has no peak finder.
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer, consumers = {}, {}
    for index, layer in enumerate(layers):
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = index
        for j in range(layer.num_inputs):
            tensor = layer.get_input(j)
            if tensor is not None:
                consumers.setdefault(tensor.name, []).append(index)
    kinds = [layer.type for layer in layers]  # read before any downcast replaces ``type``
    sigmoids = [i for i, kind in enumerate(kinds) if kind == trt.LayerType.ACTIVATION
                and _downcast(trt, layers[i], "IActivationLayer").type == trt.ActivationType.SIGMOID]
    keep = {producer[layers[i].get_input(0).name] for i in sigmoids if layers[i].get_input(0).name in producer}
    frontier, seen = list(sigmoids), set()
    while frontier:
        index = frontier.pop()
        if index in seen:
            continue
        seen.add(index)
        if kinds[index] != trt.LayerType.TOPK:  # past TopK come integer indices and box gathers
            for j in range(layers[index].num_outputs):
                frontier += consumers.get(layers[index].get_output(j).name, [])
    keep |= seen
    has_pool = any(kinds[i] == trt.LayerType.POOLING and
                   _downcast(trt, layers[i], "IPoolingLayer").type == trt.PoolingType.MAX for i in keep)
    has_equal = any(kinds[i] == trt.LayerType.ELEMENTWISE and
                    _downcast(trt, layers[i], "IElementWiseLayer").op == trt.ElementWiseOperation.EQUAL for i in keep)
    if not (sigmoids and has_pool and has_equal):
        return []
    pinned = []
    for index in sorted(keep):
        layer, changed = layers[index], False
        inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
        if any(t is not None and t.dtype == trt.float32 for t in inputs):
            layer.precision, changed = trt.float32, True
        for j in range(layer.num_outputs if kinds[index] != trt.LayerType.CAST else 0):  # a Cast's type is its own
            if layer.get_output(j).dtype == trt.float32:
                layer.set_output_type(j, trt.float32)
                changed = True
        if changed:
            pinned.append(layer.name)
    return pinned


def _ProgressMonitor(trt):  # noqa: N802 - subclasses a class that exists only where TensorRT >= 9 imports
    class ProgressMonitor(trt.IProgressMonitor):
        """One line per build phase (top level and its children), none per step.

        Never raises: TensorRT's Python trampoline treats an exception from ``step_complete`` as a
        request to cancel the build, which would read as "failed to build".
        """

        def __init__(self, stream=None) -> None:
            trt.IProgressMonitor.__init__(self)
            self._stream = stream
            self._lock = threading.Lock()
            self._parents: dict[str, Optional[str]] = {}
            self._started: dict[str, float] = {}

        def _depth(self, phase: Optional[str]) -> int:
            depth = 0
            while phase is not None and depth < 8:
                phase, depth = self._parents.get(phase), depth + 1
            return depth

        def _print(self, text: str) -> None:
            print(f"[build-engine] {text}", file=self._stream or sys.stderr, flush=True)

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                with self._lock:
                    self._parents[phase_name] = parent_phase
                    self._started[phase_name] = time.monotonic()
                    if self._depth(phase_name) <= 2:
                        self._print(f"{'  ' * (self._depth(phase_name) - 1)}{phase_name} ({num_steps} steps)")
            except Exception:  # noqa: S110 - see the class docstring
                pass

        def step_complete(self, phase_name, step):
            return True  # never cancel; steps are not printed

        def phase_finish(self, phase_name):
            try:
                with self._lock:
                    depth = self._depth(phase_name)
                    started = self._started.pop(phase_name, time.monotonic())
                    if depth <= 2:
                        self._print(f"{'  ' * (depth - 1)}{phase_name} done in {time.monotonic() - started:.1f} s")
                    self._parents.pop(phase_name, None)
            except Exception:  # noqa: S110 - see the class docstring
                pass

    return ProgressMonitor


def timing_cache_path(plan_path: Path) -> Path:
    """One timing cache per folder, beside the plans: layer timings carry over between models and settings."""
    return plan_path.with_name("timing.cache")


def _effective_settings(trt, settings: BuildSettings, onnx_path, log) -> BuildSettings:
    effective = settings.effective(tensorrt_version(trt))
    if effective != settings:
        print(f"[build-engine] TensorRT {trt.__version__} builds strongly typed networks only (BuilderFlag.FP16 "
              f"was removed in 11): building {effective.precision} from {onnx_path}. For FP16, convert the model "
              "with ModelOpt AutoCast (python -m modelopt.onnx.autocast --onnx_path <model> --low_precision_type "
              "fp16 --keep_io_types) and build that file with --precision fp32.", file=log or sys.stderr, flush=True)
    return effective


def build_plan(onnx_path: Union[str, Path], settings: BuildSettings = BuildSettings(),
               timing_cache: Optional[Path] = None, log=None) -> bytes:
    """Parse the ONNX model and build a serialized plan; INT8 expects the TensorRT QDQ form."""
    trt = import_tensorrt()
    version = tensorrt_version(trt)
    log = log or sys.stderr
    settings = _effective_settings(trt, settings, onnx_path, log)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # 8.x: without EXPLICIT_BATCH the network is implicit-batch and the ONNX parser rejects it; 10 ignores
    # the flag and 11 removed it.
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(1 << int(explicit) if version < (10, 0) else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    weak_fp16 = settings.precision in ("fp16", "int8") and hasattr(trt.BuilderFlag, "FP16")
    if weak_fp16:
        config.set_flag(trt.BuilderFlag.FP16)  # layers left in float (the heatmap head) may run in fp16
    if settings.precision == "int8" and hasattr(trt.BuilderFlag, "INT8"):
        config.set_flag(trt.BuilderFlag.INT8)  # 11: the Q/DQ nodes alone make it int8
    if weak_fp16 and settings.pin_peak_finder:
        pinned = pin_peak_finder(trt, network)
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            print(f"[build-engine] pinned {len(pinned)} peak-finder layers to float32 "
                  f"(OBEY_PRECISION_CONSTRAINTS): {', '.join(pinned)}", file=log, flush=True)
        else:
            print("[build-engine] no Sigmoid -> MaxPool -> Equal peak finder found: nothing pinned to float32",
                  file=log, flush=True)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes) if cache_bytes else None
    if cache is None:  # none yet, or unreadable (another TensorRT wrote it): start empty
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    monitor = None
    if hasattr(trt, "IProgressMonitor"):  # TensorRT >= 9.0; the monitor must outlive the build
        monitor = _ProgressMonitor(trt)(log)
        config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"TensorRT failed to build a {settings.precision} plan from {onnx_path} "
                            "(its log above says why)")
    if timing_cache is not None:
        _atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


@contextlib.contextmanager
def _build_lock(plan_path: Path):
    """One build per plan at a time across processes (two nodes starting together build once)."""
    import fcntl

    plan_path.parent.mkdir(parents=True, exist_ok=True)
    with open(plan_path.with_name(plan_path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_plan(onnx_path: Union[str, Path], settings: BuildSettings = BuildSettings(),
                cache_dir: Optional[Union[str, Path]] = None, log=None) -> Path:
    """The cached plan for this model and settings (in DEFAULT_CACHE_DIR by default), built on a miss."""
    require_tensorrt_int8_form(onnx_path, settings.precision)
    trt = import_tensorrt()
    settings = _effective_settings(trt, settings, onnx_path, log)
    device = cuda_runtime().device_info()
    path = plan_cache_path(onnx_path, settings, cache_dir or DEFAULT_CACHE_DIR, trt.__version__, device)
    with _build_lock(path):
        if not path.is_file():
            print(f"[build-engine] building {settings.precision} plan for {onnx_path} -> {path}",
                  file=log or sys.stderr, flush=True)
            plan = build_plan(onnx_path, settings, timing_cache_path(path), log=log)
            key = plan_key(file_sha256(onnx_path), trt.__version__, device, settings)
            _atomic_write(path.with_suffix(".json"), (json.dumps(key, indent=1) + "\n").encode())
            _atomic_write(path, plan)
    return path


# ---------------------------------------------------------------------------------------------- runtime


class TensorRTEngine:
    """Runs a serialized plan: pinned I/O buffers allocated once, one CUDA stream, ``execute_async_v3``.

    On an integrated GPU (Jetson: CPU and GPU share DRAM) the buffers are mapped pinned memory that
    TensorRT reads and writes in place, so no copies run at all; on a discrete GPU they are pinned
    host buffers with device twins and asynchronous copies.
    """

    def __init__(self, plan_path: Union[str, Path], precision: str = "fp16",
                 cuda: Optional[CudaRuntime] = None) -> None:
        trt = import_tensorrt()
        self._buffers: list[tuple[int, bool]] = []  # (pointer, is_host) to free
        self._stream: Optional[int] = None
        self._host: dict[str, np.ndarray] = {}
        self._cuda = cuda or cuda_runtime()
        device = self._cuda.device_info()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self._engine is None:
            raise TensorRTError(f"{plan_path} is not a TensorRT {trt.__version__} plan for {device.name}: delete it "
                                "and build again")
        self._context = self._engine.create_execution_context()
        self._stream = self._cuda.stream_create()
        self.zero_copy = device.integrated and device.can_map_host_memory
        self.name = f"tensorrt:{device.name}"
        self.precision = precision
        self.input_spec: dict[str, tuple[tuple[int, ...], str]] = {}
        self._device: dict[str, int] = {}
        self._outputs: list[str] = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(self._engine.get_tensor_shape(name))
            trt_dtype = self._engine.get_tensor_dtype(name)
            try:
                dtype = np.dtype(trt.nptype(trt_dtype))
            except TypeError as exc:
                raise TensorRTError(f"tensor {name!r} has type {trt_dtype}, which has no numpy equivalent") from exc
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            host = self._cuda.host_alloc(nbytes, mapped=self.zero_copy)
            self._buffers.append((host, True))
            if self.zero_copy:
                self._device[name] = self._cuda.device_pointer(host)
            else:
                self._device[name] = self._cuda.malloc(nbytes)
                self._buffers.append((self._device[name], False))
            self._host[name] = np.frombuffer((ctypes.c_uint8 * nbytes).from_address(host), dtype).reshape(shape)
            if not self._context.set_tensor_address(name, self._device[name]):
                raise TensorRTError(f"TensorRT refused the address of tensor {name!r}")
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input_spec[name] = (shape, str(dtype))
            else:
                self._outputs.append(name)

    @classmethod
    def from_onnx(cls, onnx_path: Union[str, Path], precision: str = "fp16",
                  cache_dir: Optional[Union[str, Path]] = None) -> TensorRTEngine:
        settings = BuildSettings(precision=precision)
        plan = cached_plan(onnx_path, settings, cache_dir)
        return cls(plan, settings.effective(tensorrt_version(import_tensorrt())).precision)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, array in inputs.items():
            host = self._host[name]
            if array.shape != host.shape:
                raise ValueError(f"input {name!r} has shape {array.shape}, the engine takes {host.shape}")
            np.copyto(host, array, casting="no")
            if not self.zero_copy:
                self._cuda.memcpy_async(self._device[name], host.ctypes.data, host.nbytes, True, self._stream)
        if not self._context.execute_async_v3(self._stream):
            raise TensorRTError("TensorRT execute_async_v3 failed")
        if not self.zero_copy:
            for name in self._outputs:
                host = self._host[name]
                self._cuda.memcpy_async(host.ctypes.data, self._device[name], host.nbytes, False, self._stream)
        self._cuda.synchronize(self._stream)
        return {name: self._host[name].copy() for name in self._outputs}

    def warmup(self, runs: int = 3) -> None:
        feeds = {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.input_spec.items()}
        for _ in range(runs):
            self.infer(feeds)

    def close(self) -> None:
        """Free the CUDA buffers and the stream (the host arrays are gone with them)."""
        self._host.clear()
        while self._buffers:
            self._cuda.free(*self._buffers.pop())
        if self._stream is not None:
            self._cuda.stream_destroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        if getattr(self, "_cuda", None) is not None:
            self.close()


def main(argv=None) -> int:
    """``python -m perception_core build-engine``: build (or find) the cached plan for a model."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m perception_core build-engine", description=main.__doc__)
    parser.add_argument("--model", default="models/multitask.onnx",
                        help="ONNX file (for int8: the TensorRT QDQ form, models/multitask_int8_trt.onnx)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16")
    parser.add_argument("--workspace-mib", type=int, default=BuildSettings.workspace_mib,
                        help="TensorRT builder workspace limit")
    parser.add_argument("--no-pin-peak-finder", action="store_true",
                        help="let TensorRT choose FP16 for the detection peak finder too")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    try:
        settings = BuildSettings(args.precision, args.workspace_mib, not args.no_pin_peak_finder)
        print(cached_plan(args.model, settings, args.cache_dir))
    except ImportError as exc:
        print(f"build-engine needs TensorRT and the CUDA runtime (JetPack's python3-libnvinfer and libcudart): {exc}",
              file=sys.stderr)
        return 2
    except (ValueError, TensorRTError, OSError) as exc:
        print(f"build-engine: {exc}", file=sys.stderr)
        return 1
    return 0
