"""TensorRT device memory of the multitask engine vs the seg_only + det_only engines.

Where ``tensorrt`` imports (a Jetson), the figures are READ from the built plans: the plan's size
(the engine's weights and kernels, loaded into device memory when it is deserialized) plus what an
execution context allocates, ``ICudaEngine.device_memory_size_v2`` (TensorRT >= 10.1) or
``device_memory_size`` (8.6 to 10.x). Elsewhere they are an ESTIMATE computed from the ONNX graph:
- weights: every initializer and Constant at the build precision (fp32 4 bytes, fp16 2; int8: the
  weight tensors of Conv/ConvTranspose/Gemm/MatMul 1 byte, the other float constants fp16);
  tensors that are not float keep their own size;
- activations: the peak of the bytes of the intermediate tensors alive at once, walking the ONNX
  nodes in order (a tensor lives from its producer to its last consumer); float tensors at fp16
  (2 bytes) for fp16 and int8 alike (an upper bound for int8 layers), others at their own size.
  TensorRT fuses layers and skips copies, so it usually needs less; the sum of every intermediate
  tensor (no reuse at all) is reported beside it as the ceiling;
- I/O: the network's inputs and outputs at their ONNX types (TensorRTEngine allocates them once).
Not counted on either path: the CUDA context, cuDNN/cuBLAS and TensorRT's own libraries, which
every process pays once whatever it runs; a multitask node pays them once, seg_only + det_only
nodes twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

import numpy as np

PRECISIONS = ("fp16", "int8")
WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}  # op -> index of its weight input
CONTEXT_NOTE = ("Not counted: the CUDA context and the TensorRT/cuDNN/cuBLAS libraries, paid once per process "
                "(once by the multitask node, twice by seg_only + det_only nodes).")


def _float_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def _dtype_bytes(elem_type: int) -> tuple[int, bool]:
    """(bytes per element, is float) of an ONNX TensorProto data type."""
    from onnx import helper

    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    return dtype.itemsize, dtype.kind == "f"


def onnx_memory_estimate(onnx_path: Union[str, Path], precision: str = "fp16") -> dict:
    """ESTIMATED device memory of a TensorRT engine built from ``onnx_path`` (bytes; see the module docstring)."""
    import onnx
    from onnx import shape_inference

    if precision not in ("fp32", *PRECISIONS):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    model = shape_inference.infer_shapes(onnx.load(str(onnx_path)), strict_mode=True)
    graph = model.graph
    weight_inputs = {node.input[index] for node in graph.node if node.op_type in WEIGHT_OPS
                     for index in (WEIGHT_OPS[node.op_type],) if len(node.input) > index}

    def weight_bytes(name: str, dims, elem_type: int) -> int:
        size, is_float = _dtype_bytes(elem_type)
        if is_float:
            size = 1 if precision == "int8" and name in weight_inputs else _float_bytes(precision)
        return int(np.prod(dims, dtype=np.int64)) * size

    weights = sum(weight_bytes(i.name, i.dims, i.data_type) for i in graph.initializer)
    weights += sum(weight_bytes(n.output[0], n.attribute[0].t.dims, n.attribute[0].t.data_type)
                   for n in graph.node if n.op_type == "Constant" and n.attribute[0].name == "value")
    constants = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}

    infos = {v.name: v for v in (*graph.value_info, *graph.input, *graph.output)}

    def tensor_bytes(name: str, activation: bool) -> int:
        info = infos.get(name)
        tensor_type = info.type.tensor_type if info is not None else None
        if tensor_type is None or not tensor_type.HasField("shape") or any(
                not d.HasField("dim_value") for d in tensor_type.shape.dim):
            raise ValueError(f"{onnx_path}: tensor {name!r} has no static shape (TensorRT plans here are static)")
        size, is_float = _dtype_bytes(tensor_type.elem_type)
        if activation and is_float:
            size = _float_bytes(precision)
        return int(np.prod([d.dim_value for d in tensor_type.shape.dim], dtype=np.int64)) * size

    io_names = [v.name for v in graph.input if v.name not in constants] + [v.name for v in graph.output]
    io = sum(tensor_bytes(name, activation=False) for name in io_names)
    last_use: dict[str, int] = {}
    for step, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = step
    live: dict[str, int] = {}
    peak = total = 0
    excluded = constants | set(io_names)
    for step, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        for name in node.output:
            if name and name not in excluded:
                live[name] = tensor_bytes(name, activation=True)
                total += live[name]
        peak = max(peak, sum(live.values()))  # this node's inputs and outputs are all alive while it runs
        for name in [n for n in live if last_use.get(n, step) <= step]:
            del live[name]
    return {"source": "estimate", "precision": precision, "weights_bytes": weights,
            "activations_peak_bytes": peak, "activations_sum_bytes": total, "io_bytes": io,
            "device_bytes": weights + peak + io}


def plan_device_memory(plan_path: Union[str, Path], trt) -> dict:
    """Device memory READ from a built plan: its size (weights + kernels) and an execution context's memory."""
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(plan_path).read_bytes())
    if engine is None:
        raise ValueError(f"{plan_path} does not deserialize with TensorRT {trt.__version__}")
    # 10.1 added the _v2 (64-bit) form, 11 removed the old one.
    context = engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2") else engine.device_memory_size
    io = 0
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        itemsize = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).itemsize
        io += int(np.prod(tuple(engine.get_tensor_shape(name)), dtype=np.int64)) * itemsize
    plan_bytes = Path(plan_path).stat().st_size
    return {"source": "plan", "plan_bytes": plan_bytes, "context_device_bytes": int(context), "io_bytes": io,
            "device_bytes": plan_bytes + int(context) + io}


def tensorrt_memory(models: Mapping[str, Union[str, Path]], precisions=PRECISIONS,
                    cache_dir: Optional[Union[str, Path]] = None) -> dict:
    """Per engine (``models``: multitask, seg_only, det_only ONNX files) and the ratio multitask / (seg + det).

    READ from plans where ``tensorrt`` imports (fp16 only: int8 needs each model's TensorRT QDQ form),
    an ESTIMATE from the ONNX graphs elsewhere; ``source`` says which.
    """
    from perception_core.engines import tensorrt_engine as te

    try:
        trt = te.import_tensorrt()
    except ImportError:
        trt = None
    result: dict = {"note": CONTEXT_NOTE}
    if trt is None:
        result["source"] = "estimate from the ONNX graphs (tensorrt does not import here)"
        per = {p: {name: onnx_memory_estimate(path, p) for name, path in models.items()} for p in precisions}
    else:
        result["source"] = f"read from plans built by TensorRT {trt.__version__}"
        per = {"fp16": {name: plan_device_memory(te.cached_plan(path, te.BuildSettings("fp16"), cache_dir), trt)
                        for name, path in models.items()}}
    for precision, engines in per.items():
        separate = engines["seg_only"]["device_bytes"] + engines["det_only"]["device_bytes"]
        result[precision] = {"engines": engines, "separate_device_bytes": separate,
                             "multitask_over_separate": engines["multitask"]["device_bytes"] / separate}
    return result
