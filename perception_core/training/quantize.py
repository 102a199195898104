"""``python -m perception_core quantize``: static INT8 in the forms the engines need.

From an ONNX model, QDQ ONNX in two forms:
- u8s8 (QUInt8 asymmetric activations, QInt8 symmetric per-channel weights): ONNX Runtime on a CPU
  fuses it into QLinearConv, the fast one. Its stem, the leading convs up to the first that narrows
  the channels (MobileNet: the 3-channel conv, the first depthwise and its projection) and the
  normalisation in front of them, stays in float: ONNX Runtime's int8 kernels are slower than its
  float ones on 3- and 16-channel inputs, and the narrowed tensor is the cheapest place to quantize
  (measured faster than quantizing every conv).
- s8 symmetric without int32 bias DQ: the explicit-quantization form TensorRT accepts.
From a LiteRT ``.tflite`` model, a full-integer int8 flatbuffer (int8 weights and activations,
per-channel weights, the float part below excepted) for LiteRT on CPU boards and as the input to
``edgetpu_compiler`` for a Coral.
All are calibrated on frames of a FrameSource at the model's input scale: by default the simulator's
training split (never validation). The detection heatmap's
last conv + sigmoid and all peak/box post-processing stay in float: quantized heatmaps form plateaus
and the 3x3 max-pool peak finder then reports duplicate boxes.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from perception_core.model_spec import ModelSpec, write_sidecar

CALIBRATION_FRAMES = 200  # min/max calibration settles well before this; more only slows quantization
CALIBRATION_POOL = 5000  # calibration frames are spread evenly over the first this-many training frames
EVAL_FRAMES = 500  # validation frames for each quantized model's sidecar metrics

STEM_SEARCH = 4  # the float stem ends at a narrowing conv among the first this-many convs, else there is none
FORMS = {
    "cpu": {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
            "extra_options": {"WeightSymmetric": True, "ActivationSymmetric": False}},
    "tensorrt": {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
                 "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                   "AddQDQPairToWeight": True}},
}


class FrameReader(CalibrationDataReader):
    """Feeds letterboxed uint8 frames one at a time under the model's input name."""

    def __init__(self, frames: np.ndarray, input_name: str) -> None:
        self.frames = frames
        self.input_name = input_name
        self.index = 0

    def get_next(self):
        if self.index >= len(self.frames):
            return None
        self.index += 1
        return {self.input_name: np.ascontiguousarray(self.frames[self.index - 1][None])}

    def rewind(self) -> None:
        self.index = 0


def float_nodes(model: onnx.ModelProto, float_det_trunk: bool = False) -> list[str]:
    """Nodes kept in float: the heatmap's conv + sigmoid and everything downstream of the detection heads.

    ``float_det_trunk`` also keeps the detection head's shared 3x3 conv in float (a little slower,
    closer to fp32 mAP).
    """
    nodes = model.graph.node
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    sigmoids = [n for n in nodes if n.op_type == "Sigmoid"]
    if len(sigmoids) != 1:
        raise ValueError(f"expected one Sigmoid (the detection heatmap), found {len(sigmoids)}")
    keep = {sigmoids[0].name, producer[sigmoids[0].input[0]].name}
    if float_det_trunk:
        for n in nodes:
            if "det_trunk" in n.name and n.op_type == "Relu":
                keep.update({n.name, producer[n.input[0]].name})
    frontier = list(sigmoids[0].output)
    frontier += [out for n in nodes if n.op_type == "Conv" and ("det_wh" in n.name or "det_offset" in n.name)
                 for out in n.output]
    while frontier:
        for n in consumers.get(frontier.pop(), []):
            if n.name not in keep:
                keep.add(n.name)
                frontier.extend(n.output)
    return sorted(keep)


def float_stem(model: onnx.ModelProto, count: int | None = None) -> list[str]:
    """Nodes of the float stem: the leading convs and everything upstream of them (the normalisation).

    The first ``count`` convs, or by default (None) those up to and including the first conv with
    fewer output than input channels among the first STEM_SEARCH convs (none if there is no such
    conv there). A quantized normalisation in front of a float conv would only add Q/DQ work.
    """
    nodes = model.graph.node
    init = {i.name: i for i in model.graph.initializer}
    convs = [n for n in nodes if n.op_type == "Conv"]
    if count is None:
        count = 0
        for index, conv in enumerate(convs[:STEM_SEARCH]):
            out_channels, in_per_group = init[conv.input[1]].dims[:2]
            group = next((a.i for a in conv.attribute if a.name == "group"), 1)
            if out_channels < in_per_group * group:
                count = index + 1
                break
    keep = {n.name for n in convs[:count]}
    producer = {out: n for n in nodes for out in n.output}
    frontier = [n.input[0] for n in convs[:count]]
    while frontier:
        node = producer.get(frontier.pop())
        if node is not None and node.name not in keep:
            keep.add(node.name)
            frontier.extend(node.input)
    return [n.name for n in nodes if n.name in keep]


def quantize_onnx(model_path, out_path, form, calibration_frames, input_name="image", float_det_trunk=False,
                  stem: int | None = None) -> dict:
    """Quantize ``model_path`` into ``out_path`` in ``form`` ("cpu" or "tensorrt"); returns the settings used.

    ``stem``: the number of leading convs kept in float in the CPU form (None: :func:`float_stem`'s rule).
    """
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model_path), str(prepared))
        model = onnx.load(str(prepared))
        has_det = any(n.op_type == "Sigmoid" for n in model.graph.node)
        tail = [n for n in float_nodes(model, float_det_trunk) if n] if has_det else []
        stem_nodes = float_stem(model, stem) if form == "cpu" else []
        settings = FORMS[form]
        quantize_static(str(prepared), str(out_path), FrameReader(calibration_frames, input_name),
                        quant_format=QuantFormat.QDQ, per_channel=True, nodes_to_exclude=stem_nodes + tail,
                        **settings)
    return {"form": form, "format": "QDQ", "per_channel": True, "calibration": "MinMax",
            "calibration_frames": len(calibration_frames), "activation_type": settings["activation_type"].name,
            "weight_type": settings["weight_type"].name,
            "extra_options": settings["extra_options"], "float_stem": stem_nodes, "float_nodes": tail,
            "float_det_trunk": float_det_trunk}


def litert_float_nodes(model_content: bytes, float_det_trunk: bool = False) -> tuple[list[str], list[str]]:
    """:func:`float_nodes` for a LiteRT flatbuffer: (node names, op types) the int8 model keeps in float.

    The heatmap's conv + sigmoid, the size/offset convs and everything downstream of them or of the
    class-map ArgMax (a quantized class id can dequantize to 5.99, which the uint8 cast truncates to 5).
    A node is named by its output tensors joined with ';', as the quantizer's denylist matches it.
    Op types found only in that float part are listed too: the quantizer moves some same-scale
    ops (TopK) to int8 by their neighbours unless their type is denylisted.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(model_content)
    operators = model.subgraphs[0].operators
    tensors = model.subgraphs[0].tensors
    kinds = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in operators]
    names = [";".join(tensors[t].name.decode() for t in op.outputs) for op in operators]
    producer = {t: i for i, op in enumerate(operators) for t in op.outputs}
    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(operators):
        for t in op.inputs:
            consumers.setdefault(t, []).append(i)
    sigmoids = [i for i, kind in enumerate(kinds) if kind == "LOGISTIC"]
    if len(sigmoids) != 1:
        raise ValueError(f"expected one LOGISTIC (the detection heatmap), found {len(sigmoids)}")
    convs = [i for i, kind in enumerate(kinds) if kind == "CONV_2D"]
    start = sigmoids + [i for i, kind in enumerate(kinds) if kind == "ARG_MAX"]
    start += [i for i in convs if "det_wh" in names[i] or "det_offset" in names[i]]
    keep = set(start) | {producer[operators[sigmoids[0]].inputs[0]]}
    if float_det_trunk:
        keep.update(i for i in convs if "det_trunk" in names[i])
    frontier = [t for i in start for t in operators[i].outputs]
    while frontier:
        for i in consumers.get(frontier.pop(), []):
            if i not in keep:
                keep.add(i)
                frontier.extend(operators[i].outputs)
    only_float = {kinds[i] for i in keep} - {kind for i, kind in enumerate(kinds) if i not in keep}
    return [names[i] for i in sorted(keep)], sorted(only_float)


def quantize_tflite(model_path, out_path, calibration_frames, input_name="image", float_det_trunk=False) -> dict:
    """Full-integer int8 LiteRT model from the verified fp32 ``.tflite``; returns the settings used.

    This is TFLiteConverter's own post-training step (calibrate the float flatbuffer, then the MLIR
    quantizer), applied to the exported file: it needs no checkpoint and quantizes exactly the graph
    that export checked against TensorFlow. The uint8 image input stays uint8 and is requantized
    straight into int8 (:func:`quantized_uint8_input`); outputs keep their dtypes (class map uint8,
    boxes/scores float32, classes int32).
    """
    import warnings

    from tensorflow.lite.python.convert import mlir_quantize
    from tensorflow.lite.python.optimize import calibrator
    from tensorflow.python.framework import dtypes

    content = Path(model_path).read_bytes()
    nodes, op_types = litert_float_nodes(content, float_det_trunk)
    with warnings.catch_warnings():  # the calibrator runs tf.lite.Interpreter, which warns that it is deprecated
        warnings.simplefilter("ignore", UserWarning)
        calibrated = calibrator.Calibrator(calibrator.add_intermediate_tensors(content)).calibrate(
            lambda: ({input_name: np.ascontiguousarray(frame[None])} for frame in calibration_frames))
    quantized = mlir_quantize(calibrated, input_data_type=dtypes.uint8, output_data_type=dtypes.float32,
                              denylisted_nodes=nodes, denylisted_ops=op_types)
    Path(out_path).write_bytes(quantized_uint8_input(quantized))
    return {"form": "litert", "format": "full-integer int8 (TFLite post-training, MLIR quantizer)",
            "per_channel": True, "calibration": "TFLite calibrator (min/max)",
            "calibration_frames": len(calibration_frames), "activation_type": "int8", "weight_type": "int8",
            "float_op_types": op_types, "float_nodes": nodes, "float_det_trunk": float_det_trunk}


def quantized_uint8_input(model_content: bytes) -> bytearray:
    """Drop the leading uint8 -> float CAST: the image tensor becomes a quantized uint8 (scale 1, zero
    point 0) that the first QUANTIZE requantizes to int8 directly, with the same result. The Edge TPU
    compiler maps ops only up to the first one it cannot run, and CAST is one, so with it first a
    Coral would run nothing."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(model_content)
    graph = model.subgraphs[0]
    cast, quantize_op = graph.operators[:2]
    kinds = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in (cast, quantize_op)]
    image, cast_out = cast.inputs[0], cast.outputs[0]
    if kinds != ["CAST", "QUANTIZE"] or image not in graph.inputs or sum(
            cast_out in op.inputs for op in graph.operators) != 1 or quantize_op.inputs[0] != cast_out:
        raise ValueError(f"expected the quantized graph to start image -> CAST -> QUANTIZE, found {kinds}")
    graph.tensors[image].quantization = schema.QuantizationParametersT(scale=[1.0], zeroPoint=[0])
    quantize_op.inputs[0] = image
    del graph.operators[0]
    return flatbuffer_utils.convert_object_to_bytearray(model)


def calibration_images(input_hw, count, source=None) -> np.ndarray:
    """``count`` frames of ``source`` at the model input size, evenly spaced over it (default: the first
    CALIBRATION_POOL frames of the simulator's training split, cached at that size)."""
    from perception_core.datasets.cache import frames_at_scale
    from perception_core.datasets.simulator import SimulatorSource

    source = SimulatorSource("train", CALIBRATION_POOL, input_hw) if source is None else source
    cache = frames_at_scale(source, input_hw)
    return np.asarray(cache.images[np.linspace(0, len(cache) - 1, count).astype(int)])


def quantize(model, out=None, out_trt=None, calibration_frames=CALIBRATION_FRAMES, eval_frames=EVAL_FRAMES, threads=2,
             float_det_trunk=False, frames=None, source=None, eval_source=None, float_stem_convs=None):
    """INT8 forms of an exported fp32 model, each with a sidecar carrying its own metrics.

    An ``.onnx`` model gives the two QDQ forms (``out``, ``out_trt``); a ``.tflite`` model gives the
    full-integer LiteRT model (``out``). Unnamed outputs go beside the model as ``<stem>_int8.<ext>``
    and ``<stem>_int8_trt.onnx``. Calibrated on ``frames`` if given, else on frames of ``source``
    (default: the simulator's training split); scored on ``eval_source`` (default: its validation split).
    ``float_stem_convs``: leading convs the CPU form keeps in float (None: up to the first narrowing conv).
    """
    spec = ModelSpec.load(model)
    base = spec.model_path.with_name(spec.model_path.stem + "_int8")
    out = Path(out) if out else base.with_name(base.name + spec.model_path.suffix)
    if spec.model_path.suffix == ".tflite":
        jobs = [(out, "litert")]
    else:
        jobs = [(out, "cpu"), (Path(out_trt) if out_trt else base.with_name(base.name + "_trt.onnx"), "tensorrt")]
    if frames is None:
        frames = calibration_images(spec.input_hw, calibration_frames, source)
    written = []
    for path, form in jobs:
        if form == "litert":
            settings = quantize_tflite(spec.model_path, path, frames, spec.input_name, float_det_trunk)
        else:
            settings = quantize_onnx(spec.model_path, path, form, frames, spec.input_name, float_det_trunk,
                                     float_stem_convs)
        fields = {k: v for k, v in spec.raw.items() if k not in ("format_version", "model_file", "sha256")}
        fields.update(name=path.stem, precision="int8", metrics={}, quantization=settings,
                      source_model={"file": spec.model_path.name, "sha256": spec.sha256},
                      quantize_command=" ".join(["python -m perception_core"] + sys.argv[1:]))
        write_sidecar(path, fields)
        if eval_frames:
            from perception_core.training.export import sidecar_metrics

            fields["metrics"] = sidecar_metrics(path, eval_frames, threads, eval_source)
            write_sidecar(path, fields)
        if fields["metrics"]:
            print(f"{path}: {json.dumps({k: fields['metrics'].get(k) for k in ('miou', 'map50')})}")
        written.append(path)
    return written
