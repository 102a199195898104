"""A fake libcudart: the CUDA runtime calls perception_core/engines/tensorrt_engine.py makes through ctypes.

Every function checks, at each call, that the caller declared ``argtypes``/``restype`` exactly as the C
prototypes below (copied from cuda_runtime_api.h, CUDA 12.x) would map to ctypes, so a wrong ctypes
declaration fails here instead of corrupting memory on a Jetson. Arguments arrive as ctypes would pass
them without conversion (``ctypes.byref`` objects, ints, ctypes buffers).

"Device" memory is ordinary host memory owned by this object; copies are real ``ctypes.memmove`` byte
copies, and work queued on a stream runs only at ``cudaStreamSynchronize``, so reading results before
the synchronize sees stale bytes, as on a GPU. Nothing here runs on a GPU.
"""

from __future__ import annotations

import ctypes
import itertools
import re
import types
from collections import Counter

PROTOTYPES = """
const char* cudaGetErrorName(cudaError_t error);
const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaRuntimeGetVersion(int* runtimeVersion);
cudaError_t cudaDriverGetVersion(int* driverVersion);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device);
cudaError_t cudaGetDeviceProperties_v2(struct cudaDeviceProp* prop, int device);
cudaError_t cudaMalloc(void** devPtr, size_t size);
cudaError_t cudaFree(void* devPtr);
cudaError_t cudaHostAlloc(void** pHost, size_t size, unsigned int flags);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaHostGetDevicePointer(void** pDevice, void* pHost, unsigned int flags);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream);
"""

_C_TYPES = {"cudaError_t": ctypes.c_int, "int": ctypes.c_int, "unsigned int": ctypes.c_uint, "size_t": ctypes.c_size_t,
            "void*": ctypes.c_void_p, "const void*": ctypes.c_void_p, "cudaStream_t": ctypes.c_void_p,
            "struct cudaDeviceProp*": ctypes.c_void_p, "const char*": ctypes.c_char_p,
            "int*": ctypes.POINTER(ctypes.c_int), "void**": ctypes.POINTER(ctypes.c_void_p),
            "cudaStream_t*": ctypes.POINTER(ctypes.c_void_p)}


def _ctype(c_type: str):
    c_type = c_type.strip()
    return ctypes.c_int if c_type.startswith("enum ") else _C_TYPES[c_type]


def parse_prototypes(text: str = PROTOTYPES) -> dict[str, tuple]:
    """``name -> (restype, argtypes)`` as ctypes types, from C prototypes."""
    signatures = {}
    for restype, name, params in re.findall(r"^\s*(.+?)\s*(\w+)\((.*)\);", text, re.M):
        args = [re.sub(r"\s*\w+$", "", p.strip()) for p in params.split(",") if p.strip()]
        signatures[name] = (_ctype(restype), [_ctype(a) for a in args])
    return signatures


SIGNATURES = parse_prototypes()
ERRORS = {0: "cudaSuccess", 1: "cudaErrorInvalidValue", 2: "cudaErrorMemoryAllocation",
          35: "cudaErrorInsufficientDriver", 101: "cudaErrorInvalidDevice", 400: "cudaErrorInvalidResourceHandle"}
ATTRIBUTES = {16: "sm_count", 18: "integrated", 19: "can_map_host_memory", 75: "cc_major", 76: "cc_minor"}
H2D, D2H = 1, 2


class FakeCudaDevice:
    """One GPU: ``lib`` is what ``ctypes.CDLL("libcudart.so")`` would return; counters record what ran."""

    def __init__(self, name: str = "Orin", compute_capability=(8, 7), sm_count: int = 16, integrated: bool = True,
                 can_map_host_memory: bool = True, runtime_version: int = 12060, driver_version: int = 12060,
                 legacy_properties_only: bool = False) -> None:
        self.name = name
        self.attributes = {"sm_count": sm_count, "integrated": int(integrated),
                           "can_map_host_memory": int(can_map_host_memory), "cc_major": compute_capability[0],
                           "cc_minor": compute_capability[1]}
        self.compute_capability = tuple(compute_capability)
        self.runtime_version, self.driver_version = runtime_version, driver_version
        self.memory: dict[int, tuple[ctypes.Array, str]] = {}  # address -> (buffer, "device"|"pinned"|"mapped")
        self.streams: dict[int, list] = {}
        self.calls: Counter = Counter()
        self.staged_copies = 0  # copies from/to pageable memory: CUDA stages them through a bounce buffer
        self._handles = itertools.count(0x1000)
        self.lib = self._make_lib(legacy_properties_only)

    # -- memory bookkeeping ------------------------------------------------------------------------
    def region(self, address: int, nbytes: int):
        """The kind of allocation holding [address, address + nbytes), or None (pageable / unknown)."""
        for start, (buffer, kind) in self.memory.items():
            if start <= address and address + nbytes <= start + len(buffer):
                return kind
        return None

    def device_accessible(self, address: int, nbytes: int) -> bool:
        return self.region(address, nbytes) in ("device", "mapped")

    def enqueue(self, stream: int, work) -> bool:
        if stream not in self.streams:
            return False
        self.streams[stream].append(work)
        return True

    def live_allocations(self) -> int:
        return len(self.memory)

    # -- the library -------------------------------------------------------------------------------
    def _make_lib(self, legacy_properties_only: bool):
        device = self
        too_old = self.runtime_version // 1000 > self.driver_version // 1000

        def allocate(out, size, kind):
            buffer = ctypes.create_string_buffer(max(int(size), 1))
            address = ctypes.addressof(buffer)
            device.memory[address] = (buffer, kind)
            out._obj.value = address
            return 0

        def cudaGetErrorName(error):  # noqa: N802 - C names
            return ERRORS.get(error, "cudaErrorUnknown").encode()

        def cudaGetErrorString(error):  # noqa: N802
            return f"fake error {error}".encode()

        def cudaRuntimeGetVersion(out):  # noqa: N802
            out._obj.value = device.runtime_version
            return 0

        def cudaDriverGetVersion(out):  # noqa: N802
            out._obj.value = device.driver_version
            return 0

        def cudaSetDevice(index):  # noqa: N802
            return 35 if too_old else (0 if index == 0 else 101)

        def cudaDeviceGetAttribute(out, attr, index):  # noqa: N802
            if index != 0 or attr not in ATTRIBUTES:
                return 1
            out._obj.value = device.attributes[ATTRIBUTES[attr]]
            return 0

        def cudaGetDeviceProperties_v2(prop, index):  # noqa: N802
            if index != 0:
                return 101
            name = device.name.encode()[:255] + b"\0"
            ctypes.memmove(prop, name, len(name))  # char name[256] is the struct's first field
            return 0

        def cudaMalloc(out, size):  # noqa: N802
            return 35 if too_old else allocate(out, size, "device")

        def cudaHostAlloc(out, size, flags):  # noqa: N802
            return allocate(out, size, "mapped" if flags & 0x02 else "pinned")

        def free(pointer, kinds):
            if device.memory.get(pointer, (None, None))[1] not in kinds:
                return 1
            del device.memory[pointer]
            return 0

        def cudaFree(pointer):  # noqa: N802
            return free(pointer, ("device",))

        def cudaFreeHost(pointer):  # noqa: N802
            return free(pointer, ("pinned", "mapped"))

        def cudaHostGetDevicePointer(out, host, flags):  # noqa: N802
            if flags != 0 or device.memory.get(host, (None, None))[1] != "mapped":
                return 1
            out._obj.value = host  # unified addressing: the device sees the same address
            return 0

        def cudaStreamCreateWithFlags(out, flags):  # noqa: N802
            handle = next(device._handles)
            device.streams[handle] = []
            out._obj.value = handle
            return 0

        def cudaStreamDestroy(stream):  # noqa: N802
            return 0 if device.streams.pop(stream, None) is not None else 400

        def cudaStreamSynchronize(stream):  # noqa: N802
            if stream not in device.streams:
                return 400
            queue, device.streams[stream] = device.streams[stream], []
            for work in queue:
                work()
            return 0

        def cudaMemcpyAsync(dst, src, count, kind, stream):  # noqa: N802
            device_side, host_side = (dst, src) if kind == H2D else (src, dst)
            if kind not in (H2D, D2H) or device.region(device_side, count) != "device":
                return 1
            if device.region(host_side, count) is None:
                device.staged_copies += 1
            return 0 if device.enqueue(stream, lambda: ctypes.memmove(dst, src, count)) else 400

        functions = {f.__name__: f for f in (
            cudaGetErrorName, cudaGetErrorString, cudaRuntimeGetVersion, cudaDriverGetVersion, cudaSetDevice,
            cudaDeviceGetAttribute, cudaGetDeviceProperties_v2, cudaMalloc, cudaFree, cudaHostAlloc, cudaFreeHost,
            cudaHostGetDevicePointer, cudaStreamCreateWithFlags, cudaStreamDestroy, cudaStreamSynchronize,
            cudaMemcpyAsync)}
        if legacy_properties_only:  # CUDA 11: no _v2 symbol
            functions["cudaGetDeviceProperties"] = functions.pop("cudaGetDeviceProperties_v2")
        lib = types.SimpleNamespace()
        for name, fn in functions.items():
            setattr(lib, name, self._checked(name, fn))
        return lib

    def _checked(self, name, fn):
        restype, argtypes = SIGNATURES.get(name, SIGNATURES.get(name + "_v2"))

        def call(*args):
            if call.argtypes != argtypes or call.restype is not restype:
                raise AssertionError(f"{name} declared as {call.restype} {call.argtypes}; "
                                     f"cuda_runtime_api.h says {restype} {argtypes}")
            if len(args) != len(argtypes):
                raise TypeError(f"{name} takes {len(argtypes)} arguments ({len(args)} given)")
            self.calls[name] += 1
            return fn(*args)

        call.argtypes, call.restype = None, ctypes.c_int  # what ctypes.CDLL functions start with
        return call
