"""Full-integer int8 LiteRT export on a tiny untrained model: what is int8, what stays float, and that it runs."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("ai_edge_litert")

from perception_core.datasets import DatasetSpec  # noqa: E402
from perception_core.engines import load_engine  # noqa: E402
from perception_core.model_spec import ModelSpec  # noqa: E402

TINY = {"alpha": 0.35, "neck_channels": 16, "head_channels": 16}
HW = (64, 96)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    from perception_core.training.export import export
    from perception_core.training.model import build_model
    from perception_core.training.quantize import quantize

    folder = tmp_path_factory.mktemp("litert")
    spec = DatasetSpec(("ground", "wall", "thing"), ("thing", "other"), name="tiny-test")
    model = build_model("multitask", HW + (3,), spec, det_stride=4, **TINY)
    frames = [np.random.default_rng(i).integers(0, 256, HW + (3,), dtype=np.uint8) for i in range(3)]
    export(None, folder / "tiny.onnx", top_k=20, eval_frames=0, frames=frames, model=model, settings={"test": True},
           tflite=folder / "tiny.tflite", class_map_stride=2)
    (written,) = quantize(folder / "tiny.tflite", eval_frames=0, frames=np.stack(frames))
    return written, frames


def tensor_types(path):
    """Every op of the flatbuffer as (kind, input dtypes, output dtypes)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    graph = model.subgraphs[0]
    return [(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex),
            [flatbuffer_utils.type_to_name(graph.tensors[t].type) for t in op.inputs if t >= 0],
            [flatbuffer_utils.type_to_name(graph.tensors[t].type) for t in op.outputs]) for op in graph.operators]


def test_int8_tflite_is_written_beside_its_source_with_a_sidecar(quantized):
    path, _ = quantized
    spec = ModelSpec.load(path)
    assert path.name == "tiny_int8.tflite" and spec.precision == "int8"
    assert spec.raw["quantization"]["form"] == "litert" and spec.raw["source_model"]["file"] == "tiny.tflite"
    assert "LOGISTIC" in spec.raw["quantization"]["float_op_types"]


def test_backbone_is_int8_and_the_peak_finder_float(quantized):
    path, _ = quantized
    ops = tensor_types(path)
    convs = [(i, o) for kind, i, o in ops if kind in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert sum(o == ["INT8"] for _, o in convs) >= len(convs) - 3  # all but the heatmap, size and offset convs
    for kind in ("LOGISTIC", "MAX_POOL_2D", "TOPK_V2", "EXP", "ARG_MAX"):
        inputs = next(i for k, i, _ in ops if k == kind)
        assert inputs[0] == "FLOAT32", (kind, inputs)
    assert ops[0] == ("QUANTIZE", ["UINT8"], ["INT8"])  # the uint8 image goes straight into int8, no CAST


def test_int8_tflite_runs_with_the_declared_outputs(quantized):
    path, frames = quantized
    spec = ModelSpec.load(path)
    engine = load_engine(spec, threads=1)
    assert engine.name == "litert:xnnpack" and engine.precision == "int8"
    out = engine.infer({"image": frames[0][None]})
    for name, declared in spec.outputs.items():
        assert list(out[name].shape) == declared["shape"] and str(out[name].dtype) == declared["dtype"]
    assert out["class_map"].max() < len(spec.seg_classes)
    scores = out["scores"]
    assert np.all(np.diff(scores) <= 0) and np.all((scores >= 0) & (scores <= 1))
