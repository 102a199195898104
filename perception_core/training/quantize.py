"""``python -m perception_core quantize``: static INT8 QDQ ONNX in the two forms the engines need.

- u8s8 (QUInt8 asymmetric activations, QInt8 symmetric per-channel weights): ONNX Runtime on a CPU
  fuses it into QLinearConv, the fast one.
- s8 symmetric without int32 bias DQ: the explicit-quantization form TensorRT accepts.
Both are calibrated on training-split simulator frames (never validation). The detection heatmap's
last conv + sigmoid and all peak/box post-processing stay in float: quantized heatmaps form plateaus
and the 3x3 max-pool peak finder then reports duplicate boxes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from perception_core.model_spec import ModelSpec, write_sidecar

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


def quantize_onnx(model_path, out_path, form, calibration_frames, input_name="image", float_det_trunk=False) -> dict:
    """Quantize ``model_path`` into ``out_path`` in ``form`` ("cpu" or "tensorrt"); returns the settings used."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model_path), str(prepared))
        model = onnx.load(str(prepared))
        exclude = [n for n in float_nodes(model, float_det_trunk) if n]
        has_det = any(n.op_type == "Sigmoid" for n in model.graph.node)
        settings = FORMS[form]
        quantize_static(str(prepared), str(out_path), FrameReader(calibration_frames, input_name),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        nodes_to_exclude=exclude if has_det else [], **settings)
    return {"form": form, "format": "QDQ", "per_channel": True, "calibration": "MinMax",
            "calibration_frames": len(calibration_frames), "activation_type": settings["activation_type"].name,
            "weight_type": settings["weight_type"].name,
            "extra_options": settings["extra_options"], "float_nodes": exclude if has_det else [],
            "float_det_trunk": float_det_trunk}


def quantize(model, out, out_trt, calibration_frames=200, eval_frames=500, threads=2, float_det_trunk=False,
             frames=None):
    """Both INT8 forms of an exported fp32 model, each with a sidecar carrying its own metrics."""
    spec = ModelSpec.load(model)
    if frames is None:
        from perception_core.sim import TRAIN_SEED
        from perception_core.training.data import load_frames

        cache = load_frames(TRAIN_SEED, 5000, spec.input_hw)
        index = np.linspace(0, len(cache) - 1, calibration_frames).astype(int)
        frames = np.asarray(cache.images[index])
    written = []
    for path, form in ((out, "cpu"), (out_trt, "tensorrt")):
        path = Path(path)
        settings = quantize_onnx(spec.model_path, path, form, frames, spec.input_name, float_det_trunk)
        fields = {k: v for k, v in spec.raw.items() if k not in ("format_version", "model_file", "sha256")}
        fields.update(name=path.stem, precision="int8", metrics={}, quantization=settings,
                      source_model={"file": spec.model_path.name, "sha256": spec.sha256})
        write_sidecar(path, fields)
        if eval_frames:
            from perception_core.metrics.evaluate import evaluate

            fields["metrics"] = evaluate([path], frames=eval_frames, threads=threads)[path.name]
            write_sidecar(path, fields)
        print(f"{path}: {json.dumps({k: fields['metrics'].get(k) for k in ('miou', 'map50')})}")
        written.append(path)
    return written
