"""A fake ``tensorrt`` package for CI: the Python API surface perception_core/engines/tensorrt_engine.py uses,
as TensorRT 8.6, 10.x or 11.x expose it (``FAKE_TENSORRT_VERSION``, read when the module is loaded).

Faithful to the real bindings (NVIDIA/TensorRT python/src/infer/pyCore.cpp, pyGraph.cpp and
python/packaging/bindings_wheel/tensorrt/__init__.py on the release/8.6, 10.x and 11.x branches):
- names exist only in the versions that have them: IProgressMonitor and ``progress_monitor`` from 9.0;
  NetworkDefinitionCreationFlag.EXPLICIT_BATCH up to 10.x, STRONGLY_TYPED from 9.0; BuilderFlag.FP16/INT8/
  OBEY_PRECISION_CONSTRAINTS up to 10.x (deprecated in 10.12, removed in 11); ILayer.precision and
  set_output_type up to 10.x (deprecated in 10.12, removed in 11); DataType.INT64/BF16 from 10.0.
  Unknown attributes cannot be assigned, as on pybind11 objects.
- the 8.x ONNX parser rejects an implicit-batch network; UINT8 tensors may only be network inputs cast
  to FLOAT/HALF or outputs cast from them; Q/DQ must be symmetric int8 without int32 bias dequantization;
  a weakly typed network with Q/DQ needs BuilderFlag.INT8; strongly typed networks refuse FP16/INT8 flags.
- an exception raised in a progress monitor's ``step_complete`` cancels the build (the C++ trampoline
  catches it, prints it and returns false); ``build_serialized_network`` then returns None.
- a plan only deserializes with the same TensorRT version on a GPU of the same compute capability.
Layers, their names and tensor types come from the real ONNX graph (onnx-tensorrt names layers after
the ONNX nodes and tensors after the ONNX tensors). The plan carries the ONNX bytes; ``execute_async_v3``
queues ONNX Runtime on them on the fake CUDA stream, reading and writing the bound addresses with real
byte copies. Not modelled: kernels, tactic timing, FP16/INT8 numerics, the real plan format, TensorRT's
memory planner (``device_memory_size``, and ``device_memory_size_v2`` from 10.1, report the bytes of every
intermediate tensor of the ONNX graph, with no reuse).
"""

from __future__ import annotations

import builtins
import ctypes
import enum
import json
import os
import struct
import sys
import warnings

import numpy as np

__version__ = os.environ.get("FAKE_TENSORRT_VERSION", "10.3.0")
_V = tuple(int(p) for p in __version__.split(".")[:2])
_fake_device = None  # the test's FakeCudaDevice: the GPU this process "has"
_state = {"builders": 0, "networks": [], "configs": [], "parsed": 0}
_PLAN_MAGIC = b"FAKETRT\0"


def _members(*groups):
    return {name: value for since, until, names in groups if since <= _V < until for name, value in names}


ALL = (0, 0), (99, 0)


class _Binding:
    """Like a pybind11 object: only declared properties can be assigned."""

    def __setattr__(self, name, value):
        if name.startswith("_"):
            return object.__setattr__(self, name, value)
        prop = getattr(type(self), name, None)
        if not isinstance(prop, property) or prop.fset is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        prop.fset(self, value)


# ----------------------------------------------------------------------------------------------- enums
DataType = enum.IntEnum("DataType", _members(
    (ALL[0], ALL[1], [("FLOAT", 0), ("HALF", 1), ("INT8", 2), ("INT32", 3), ("BOOL", 4), ("UINT8", 5), ("FP8", 6)]),
    ((10, 0), ALL[1], [("BF16", 7), ("INT64", 8), ("INT4", 9)])))
float32, float16, int8, int32, uint8 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32, DataType.UINT8
bool = DataType.BOOL  # noqa: A001 - the real module exports it under this name
if _V >= (10, 0):
    int64, bfloat16 = DataType.INT64, DataType.BF16

NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", _members(
    (ALL[0], (11, 0), [("EXPLICIT_BATCH", 0)]), (ALL[0], (9, 0), [("EXPLICIT_PRECISION", 1)]),
    ((9, 0), ALL[1], [("STRONGLY_TYPED", 1)])))
BuilderFlag = enum.IntEnum("BuilderFlag", _members(
    (ALL[0], (11, 0), [("FP16", 0), ("INT8", 1), ("OBEY_PRECISION_CONSTRAINTS", 9),
                       ("PREFER_PRECISION_CONSTRAINTS", 10)]),
    (ALL[0], ALL[1], [("DEBUG", 2), ("GPU_FALLBACK", 3), ("REFIT", 4), ("DISABLE_TIMING_CACHE", 5), ("TF32", 6),
                      ("SPARSE_WEIGHTS", 7), ("DIRECT_IO", 11), ("VERSION_COMPATIBLE", 13)])))
MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
LayerType = enum.IntEnum("LayerType", {n: i for i, n in enumerate(
    "CONVOLUTION ACTIVATION POOLING ELEMENTWISE UNARY SHUFFLE SLICE CONCATENATION CONSTANT GATHER RESIZE TOPK "
    "CAST PADDING QUANTIZE DEQUANTIZE REDUCE IDENTITY".split())})
ActivationType = enum.IntEnum("ActivationType", {"RELU": 0, "SIGMOID": 1, "TANH": 2, "CLIP": 7})
PoolingType = enum.IntEnum("PoolingType", {"MAX": 0, "AVERAGE": 1})
ElementWiseOperation = enum.IntEnum("ElementWiseOperation", {n: i for i, n in enumerate(
    "SUM PROD MAX MIN SUB DIV POW FLOOR_DIV AND OR XOR EQUAL GREATER LESS".split())})
TopKOperation = enum.IntEnum("TopKOperation", {"MAX": 0, "MIN": 1})


def nptype(trt_type):
    """As in the real package: fp8 / bf16 / int4 have no numpy type."""
    mapping = {float32: np.float32, float16: np.float16, int8: np.int8, int32: np.int32, bool: np.bool_,
               uint8: np.uint8}
    if _V >= (10, 0):
        mapping[int64] = np.int64
    if trt_type in mapping:
        return mapping[trt_type]
    raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")


class Dims(tuple):
    pass


# ----------------------------------------------------------------------------------------------- logger
class ILogger(_Binding):
    Severity = enum.IntEnum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4})


class Logger(ILogger):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = ILogger.Severity

    def __init__(self, min_severity=ILogger.Severity.WARNING):
        self._min = min_severity
        self._messages = []

    def log(self, severity, msg):
        self._messages.append((severity, msg))
        if severity <= self._min:
            print(f"[TRT] [{severity.name[0]}] {msg}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- network
class ITensor(_Binding):
    def __init__(self, name, dtype, shape=()):
        self._name, self._dtype, self._shape = name, dtype, Dims(shape)
        self._is_input = self._is_output = False

    name = property(lambda self: self._name)
    shape = property(lambda self: self._shape)
    is_network_input = property(lambda self: self._is_input)
    is_network_output = property(lambda self: self._is_output)
    if _V < (11, 0):
        dtype = property(lambda self: self._dtype, lambda self, v: setattr(self, "_dtype", v))
    else:
        dtype = property(lambda self: self._dtype)


def _deprecated(fn):
    """10.12 marked the weak-typing members deprecated (utils::deprecateMember warns on use)."""
    if _V < (10, 12):
        return fn

    def wrapper(*args, **kwargs):
        warnings.warn("Deprecated in TensorRT 10.12. Superseded by strong typing.", DeprecationWarning, stacklevel=2)
        return fn(*args, **kwargs)
    return wrapper


class ILayer(_Binding):
    def __init__(self, network, name, layer_type, inputs, outputs, subtype=None):
        self._network, self._name, self._type = network, name, layer_type
        self._inputs, self._outputs, self._subtype = inputs, outputs, subtype
        self._precision, self._output_types = None, {}

    name = property(lambda self: self._name, lambda self, v: setattr(self, "_name", v))
    type = property(lambda self: self._type)
    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]

    def get_output_type(self, index):
        return self._output_types.get(index, self._outputs[index].dtype)

    if _V < (11, 0):
        def _set_precision(self, dtype):
            if self._network._strongly_typed:
                raise RuntimeError("setting layer precision is not allowed in a strongly typed network")
            self._precision = dtype

        precision = property(lambda self: self._precision if self._precision is not None else DataType.FLOAT,
                             _deprecated(_set_precision))
        precision_is_set = property(lambda self: self._precision is not None)

        @_deprecated
        def set_output_type(self, index, dtype):
            if self._network._strongly_typed:
                raise RuntimeError("setting layer output types is not allowed in a strongly typed network")
            if self._type == LayerType.CAST:
                raise RuntimeError("a Cast layer's output type is its to_type")
            self._output_types[index] = dtype

        @_deprecated
        def output_type_is_set(self, index):
            return index in self._output_types


class IActivationLayer(ILayer):
    type = property(lambda self: self._subtype)


class IPoolingLayer(ILayer):
    type = property(lambda self: self._subtype)


class IElementWiseLayer(ILayer):
    op = property(lambda self: self._subtype)


class ITopKLayer(ILayer):
    op = property(lambda self: self._subtype)


class INetworkDefinition(_Binding):
    def __init__(self, flags):
        self._flags = flags
        explicit = NetworkDefinitionCreationFlag.__members__.get("EXPLICIT_BATCH")
        self._implicit_batch = _V < (10, 0) and not (explicit is not None and flags & (1 << int(explicit)))
        strongly = NetworkDefinitionCreationFlag.__members__.get("STRONGLY_TYPED")
        self._strongly_typed = _V >= (11, 0) or (strongly is not None and builtins.bool(flags & (1 << int(strongly))))
        self._layers, self._inputs, self._outputs, self._onnx = [], [], [], None
        _state["networks"].append(self)

    num_layers = property(lambda self: len(self._layers))
    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))
    if _V < (11, 0):
        has_implicit_batch_dimension = property(lambda self: self._implicit_batch)

    def get_layer(self, index):
        layer = self._layers[index]
        if type(layer) is not ILayer:  # get_layer hands out the base class, like the real bindings
            object.__setattr__(layer, "__class__", ILayer)
        return layer

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]


# ---------------------------------------------------------------------------------------------- parser
_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 9: "BOOL", 2: "UINT8", 7: "INT64", 11: "FLOAT"}
_OPS = {"Conv": (LayerType.CONVOLUTION, None), "Relu": (LayerType.ACTIVATION, ActivationType.RELU),
        "Sigmoid": (LayerType.ACTIVATION, ActivationType.SIGMOID), "Clip": (LayerType.ACTIVATION, ActivationType.CLIP),
        "MaxPool": (LayerType.POOLING, PoolingType.MAX), "AveragePool": (LayerType.POOLING, PoolingType.AVERAGE),
        "Equal": (LayerType.ELEMENTWISE, ElementWiseOperation.EQUAL),
        "Greater": (LayerType.ELEMENTWISE, ElementWiseOperation.GREATER),
        **{op: (LayerType.ELEMENTWISE, ElementWiseOperation[name]) for op, name in (
            ("Add", "SUM"), ("Mul", "PROD"), ("Sub", "SUB"), ("Div", "DIV"), ("Min", "MIN"), ("Max", "MAX"))},
        "Exp": (LayerType.UNARY, None), "Floor": (LayerType.UNARY, None), "Transpose": (LayerType.SHUFFLE, None),
        "Reshape": (LayerType.SHUFFLE, None), "Squeeze": (LayerType.SHUFFLE, None),
        "Unsqueeze": (LayerType.SHUFFLE, None), "Slice": (LayerType.SLICE, None), "Pad": (LayerType.PADDING, None),
        "Concat": (LayerType.CONCATENATION, None), "Gather": (LayerType.GATHER, None),
        "Resize": (LayerType.RESIZE, None), "TopK": (LayerType.TOPK, TopKOperation.MAX),
        "ArgMax": (LayerType.TOPK, TopKOperation.MAX), "Cast": (LayerType.CAST, None),
        "Constant": (LayerType.CONSTANT, None), "QuantizeLinear": (LayerType.QUANTIZE, None),
        "DequantizeLinear": (LayerType.DEQUANTIZE, None), "Identity": (LayerType.IDENTITY, None)}
_LAYER_CLASS = {LayerType.ACTIVATION: IActivationLayer, LayerType.POOLING: IPoolingLayer,
                LayerType.ELEMENTWISE: IElementWiseLayer, LayerType.TOPK: ITopKLayer}


class ParserError:
    def __init__(self, desc, node=-1):
        self._desc, self._node = desc, node

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def __str__(self):
        return f"In node {self._node}: {self._desc}"


class OnnxParser(_Binding):
    def __init__(self, network, logger):
        self._network, self._logger, self._errors = network, logger, []

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, index):
        return self._errors[index]

    def clear_errors(self):
        self._errors.clear()

    def parse(self, model, path=None):
        import onnx
        from onnx import TensorProto, numpy_helper, shape_inference

        _state["parsed"] += 1
        if self._network._implicit_batch:
            self._errors.append(ParserError(
                "This version of the ONNX parser only supports TensorRT INetworkDefinitions with an explicit batch "
                "dimension. Please ensure the network was initialized with the EXPLICIT_BATCH "
                "NetworkDefinitionCreationFlag."))
            return False
        try:
            proto = shape_inference.infer_shapes(onnx.load_from_string(bytes(model)))
        except Exception as exc:  # noqa: BLE001 - any decode failure is a parse error
            self._errors.append(ParserError(f"Failed to parse ONNX model: {exc}"))
            return False
        graph = proto.graph
        elem = {v.name: v.type.tensor_type.elem_type
                for v in list(graph.value_info) + list(graph.input) + list(graph.output)}
        initializers = {i.name: i for i in graph.initializer}
        elem.update({name: i.data_type for name, i in initializers.items()})
        for n in graph.node:
            if n.op_type == "Constant":
                elem[n.output[0]] = n.attribute[0].t.data_type
        producer = {out: n for n in graph.node for out in n.output}
        graph_inputs = {i.name for i in graph.input} - set(initializers)
        graph_outputs = {o.name for o in graph.output}
        for index, n in enumerate(graph.node):
            if self._errors:
                return False  # like onnx-tensorrt: the first node that fails ends the parse
            if n.op_type not in _OPS:
                self._errors.append(ParserError(f"No importer registered for op: {n.op_type}", index))
            for name in n.input:
                if name in graph_inputs and elem.get(name) == TensorProto.UINT8 and not (
                        n.op_type == "Cast" and n.attribute[0].i in (TensorProto.FLOAT, TensorProto.FLOAT16)):
                    self._errors.append(ParserError(
                        f"UINT8 network input {name} may only be cast to FLOAT or HALF (it feeds {n.op_type})", index))
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
                zero = initializers.get(n.input[2])
                if zero is not None and (zero.data_type != TensorProto.INT8 or numpy_helper.to_array(zero).any()):
                    self._errors.append(ParserError(
                        "TensorRT only supports symmetric INT8 quantization: zero point must be INT8 and zero", index))
            if n.op_type == "DequantizeLinear" and elem.get(n.input[0]) == TensorProto.INT32:
                self._errors.append(ParserError("DequantizeLinear of an INT32 tensor (bias) is not supported", index))
        for name in graph_outputs:
            n = producer.get(name)
            if elem.get(name) == TensorProto.UINT8 and not (
                    n is not None and n.op_type == "Cast" and elem.get(n.input[0]) in (TensorProto.FLOAT,
                                                                                       TensorProto.FLOAT16)):
                self._errors.append(ParserError(f"UINT8 network output {name} must be cast from FLOAT or HALF"))
        if self._errors:
            return False

        def trt_type(name):
            code = _ONNX_TO_TRT[elem.get(name, 1)]
            return DataType.INT32 if code == "INT64" and _V < (10, 0) else DataType[code]

        def static_shape(value_info):
            return tuple(d.dim_value for d in value_info.type.tensor_type.shape.dim)

        tensors = {}
        for value in graph.input:
            if value.name in graph_inputs:
                tensor = ITensor(value.name, trt_type(value.name), static_shape(value))
                tensor._is_input = True
                tensors[value.name] = tensor
                self._network._inputs.append(tensor)
        for index, n in enumerate(graph.node):
            layer_type, subtype = _OPS[n.op_type]
            outputs = [ITensor(o, trt_type(o)) for o in n.output if o]
            tensors.update({t.name: t for t in outputs})
            inputs = [tensors[i] for i in n.input if i in tensors]
            name = n.name or f"{n.op_type}_{index}"
            self._network._layers.append(
                _LAYER_CLASS.get(layer_type, ILayer)(self._network, name, layer_type, inputs, outputs, subtype))
        for value in graph.output:
            tensors[value.name]._is_output = True
            tensors[value.name]._shape = Dims(static_shape(value))
            self._network._outputs.append(tensors[value.name])
        self._network._onnx = bytes(model)
        return True


# ---------------------------------------------------------------------------------------------- builder
class IHostMemory(_Binding):
    def __init__(self, data):
        self._data = bytes(data)

    nbytes = property(lambda self: len(self._data))

    def __bytes__(self):
        return self._data

    def __buffer__(self, flags):  # Python >= 3.12 buffer protocol; bytes() uses __bytes__ before that
        return memoryview(self._data)


class ITimingCache(_Binding):
    def __init__(self, entries):
        self._entries = dict(entries)

    def serialize(self):
        return IHostMemory(b"FAKETIMING" + json.dumps(self._entries).encode())

    def combine(self, input_cache, ignore_mismatch):
        self._entries.update(input_cache._entries)
        return True

    def reset(self):
        self._entries.clear()
        return True


if _V >= (9, 0):
    class IProgressMonitor:
        """Subclass and implement phase_start, step_complete and phase_finish."""

        def __init__(self):
            pass


class IBuilderConfig(_Binding):
    def __init__(self):
        self._flags, self._pools, self._timing_cache, self._monitor = set(), {}, None, None
        self._timing_hits = 0
        _state["configs"].append(self)

    flags = property(lambda self: sum(1 << int(f) for f in self._flags))

    def set_memory_pool_limit(self, pool, pool_size):
        self._pools[pool] = int(pool_size)

    def get_memory_pool_limit(self, pool):
        return self._pools.get(pool, 0)

    def set_flag(self, flag):
        self._flags.add(BuilderFlag(flag))

    def clear_flag(self, flag):
        self._flags.discard(BuilderFlag(flag))

    def get_flag(self, flag):
        return BuilderFlag(flag) in self._flags

    def create_timing_cache(self, serialized_timing_cache):
        data = bytes(memoryview(serialized_timing_cache))
        if not data:
            return ITimingCache({})
        if not data.startswith(b"FAKETIMING"):
            return None  # the real call logs an error and returns nullptr for a foreign blob
        return ITimingCache(json.loads(data[len(b"FAKETIMING"):]))

    def set_timing_cache(self, cache, ignore_mismatch):
        self._timing_cache = cache
        return True

    def get_timing_cache(self):
        return self._timing_cache

    if _V >= (9, 0):
        progress_monitor = property(lambda self: self._monitor, lambda self, m: setattr(self, "_monitor", m))


class Builder(_Binding):
    def __init__(self, logger):
        self._logger = logger
        _state["builders"] += 1

    if _V < (11, 0):
        platform_has_fast_fp16 = property(lambda self: True)

    def create_network(self, flags=0):
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig()

    def _error(self, message):
        self._logger.log(ILogger.Severity.ERROR, message)
        return None

    def _run_monitor(self, monitor, layers):
        """Phases like the real builder's; False when the monitor cancelled (or raised, which cancels)."""
        def call(method, *args):
            try:
                return getattr(monitor, method)(*args)
            except Exception as exc:  # noqa: BLE001 - mirrors the C++ trampoline
                print(f"[ERROR] Exception caught in {method}(): {exc}", file=sys.stderr)
                return False if method == "step_complete" else None

        call("phase_start", "Building engine", None, 2)
        call("phase_start", "Optimizing network", "Building engine", len(layers))
        for step, layer in enumerate(layers):
            call("phase_start", f"Timing {layer.name}", "Optimizing network", 2)
            keep_going = all(call("step_complete", f"Timing {layer.name}", s) for s in range(2))
            call("phase_finish", f"Timing {layer.name}")
            keep_going = keep_going and call("step_complete", "Optimizing network", step)
            if not keep_going:
                call("phase_finish", "Optimizing network")
                call("phase_finish", "Building engine")
                return False
        call("phase_finish", "Optimizing network")
        ok = call("step_complete", "Building engine", 0) and call("step_complete", "Building engine", 1)
        call("phase_finish", "Building engine")
        return builtins.bool(ok)

    def build_serialized_network(self, network, config):
        if network._onnx is None:
            return self._error("Network has no layers (parse failed?)")
        flags = {f.name for f in config._flags}
        if network._strongly_typed and flags & {"FP16", "INT8"}:
            return self._error("BuilderFlag FP16/INT8 cannot be used with a strongly typed network")
        if not network._strongly_typed and "INT8" not in flags and any(
                layer._type == LayerType.QUANTIZE for layer in network._layers):
            return self._error("Network has Q/DQ layers (explicit quantization) but BuilderFlag.INT8 is not set")
        constrained = [layer for layer in network._layers if layer._precision is not None or layer._output_types]
        if constrained and not flags & {"OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"}:
            self._logger.log(ILogger.Severity.WARNING, "layer precisions were set but no precision-constraint flag: "
                             "they are ignored")
        if config._monitor is not None and not self._run_monitor(config._monitor, network._layers):
            return self._error("Build cancelled by the progress monitor")
        if config._timing_cache is not None:
            for layer in network._layers:
                key = f"{layer._type.name}:{layer.name}"
                config._timing_hits += key in config._timing_cache._entries
                config._timing_cache._entries[key] = 1.0
        device = _fake_device
        io = [{"name": t.name, "shape": list(t.shape), "dtype": int(t.dtype), "mode": int(mode)}
              for tensors, mode in ((network._inputs, TensorIOMode.INPUT), (network._outputs, TensorIOMode.OUTPUT))
              for t in tensors]
        header = json.dumps({"version": __version__, "gpu": device.name, "cc": list(device.compute_capability),
                             "device_memory": _intermediate_bytes(network._onnx),
                             "io": io, "flags": sorted(flags),
                             "pinned": [layer.name for layer in constrained]}).encode()
        return IHostMemory(_PLAN_MAGIC + struct.pack("<I", len(header)) + header + network._onnx)


def _intermediate_bytes(onnx_bytes):
    """The fake's execution-context memory: every non-I/O tensor of the graph at its ONNX type, no reuse."""
    import onnx
    from onnx import helper, shape_inference

    graph = shape_inference.infer_shapes(onnx.load_from_string(onnx_bytes)).graph
    return int(sum(np.prod([d.dim_value for d in v.type.tensor_type.shape.dim], dtype=np.int64)
                   * np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).itemsize
                   for v in graph.value_info))


# ---------------------------------------------------------------------------------------------- runtime
class ICudaEngine(_Binding):
    def __init__(self, header, onnx_bytes, logger):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self._io = header["io"]
        self._by_name = {t["name"]: t for t in self._io}
        self._header, self._logger = header, logger

    num_io_tensors = property(lambda self: len(self._io))
    if _V < (11, 0):
        device_memory_size = property(lambda self: self._header["device_memory"])
    if _V >= (10, 1):
        device_memory_size_v2 = property(lambda self: self._header["device_memory"])

    def get_tensor_name(self, index):
        return self._io[index]["name"]

    def get_tensor_shape(self, name):
        return Dims(self._by_name[name]["shape"])

    def get_tensor_dtype(self, name):
        return DataType(self._by_name[name]["dtype"])

    def get_tensor_mode(self, name):
        return TensorIOMode(self._by_name[name]["mode"]) if name in self._by_name else TensorIOMode.NONE

    def create_execution_context(self):
        return IExecutionContext(self)


class IExecutionContext(_Binding):
    def __init__(self, engine):
        self._engine, self._addresses = engine, {}

    def set_tensor_address(self, name, memory):
        if name not in self._engine._by_name:
            return False
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name):
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle):
        engine, device = self._engine, _fake_device
        tensors = []
        for t in engine._io:
            dtype = np.dtype(nptype(DataType(t["dtype"])))
            nbytes = int(np.prod(t["shape"], dtype=np.int64)) * dtype.itemsize
            address = self._addresses.get(t["name"])
            if address is None or not device.device_accessible(address, nbytes):
                engine._logger.log(ILogger.Severity.ERROR, f"tensor {t['name']} is not bound to device memory")
                return False
            tensors.append((t, dtype, nbytes, address))

        def run():
            feeds = {t["name"]: np.frombuffer(ctypes.string_at(a, n), dtype).reshape(t["shape"])
                     for t, dtype, n, a in tensors if t["mode"] == TensorIOMode.INPUT}
            outputs = [t["name"] for t, *_ in tensors if t["mode"] == TensorIOMode.OUTPUT]
            results = dict(zip(outputs, engine._session.run(outputs, feeds)))
            for t, dtype, n, a in tensors:
                if t["mode"] == TensorIOMode.OUTPUT:
                    array = np.ascontiguousarray(results[t["name"]], dtype=dtype)
                    ctypes.memmove(a, array.ctypes.data, n)

        return device.enqueue(int(stream_handle), run)


class Runtime(_Binding):
    def __init__(self, logger):
        self._logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        data = bytes(serialized_engine)
        if not data.startswith(_PLAN_MAGIC):
            self._logger.log(ILogger.Severity.ERROR, "the engine plan file is corrupted")
            return None
        size = struct.unpack("<I", data[8:12])[0]
        header = json.loads(data[12:12 + size])
        if header["version"] != __version__:
            self._logger.log(ILogger.Severity.ERROR, "The engine plan file is not compatible with this version of "
                             f"TensorRT, expecting library version {__version__} got {header['version']}")
            return None
        if tuple(header["cc"]) != tuple(_fake_device.compute_capability):
            self._logger.log(ILogger.Severity.ERROR, "The engine plan file is generated on an incompatible device")
            return None
        return ICudaEngine(header, data[12 + size:], self._logger)
