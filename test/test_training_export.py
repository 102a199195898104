"""Export and quantization round trips on a tiny untrained model (no simulator, a few seconds each)."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from perception_core.datasets import DatasetSpec  # noqa: E402
from perception_core.engines.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from perception_core.model_spec import ModelSpec  # noqa: E402

TINY = {"alpha": 0.35, "neck_channels": 16, "head_channels": 16}
HW = (64, 96)
SPEC = DatasetSpec(("ground", "wall", "thing"), ("thing", "other"), ignore_label=200, name="tiny-test")


@pytest.fixture(scope="module", params=[8, 4], ids=["det_stride8", "det_stride4"])
def exported(tmp_path_factory, request):
    from perception_core.training.export import export
    from perception_core.training.model import build_model

    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    model = build_model("multitask", HW + (3,), SPEC, det_stride=request.param, **TINY)
    frames = [np.random.default_rng(i).integers(0, 256, HW + (3,), dtype=np.uint8) for i in range(3)]
    export(None, out, top_k=20, eval_frames=0, frames=frames, model=model, settings={"test": True})
    return out, model, frames


def test_export_round_trip_matches_tensorflow(exported):
    import tensorflow as tf

    path, model, frames = exported
    spec = ModelSpec.load(path)
    assert spec.input_shape == (1, *HW, 3) and set(spec.outputs) == {"class_map", "boxes", "scores", "classes"}
    assert spec.raw["verification"]["ok"] and spec.raw["params"] == model.count_params()
    assert spec.stride == model.det_stride
    assert spec.dataset == SPEC and spec.raw["dataset"] == "tiny-test" and spec.raw["ignore_label"] == 200
    engine = OnnxRuntimeEngine(path, intra_op_threads=1)
    inference = model.inference_model(top_k=20)
    for x in frames:
        ort_out = engine.infer({"image": x[None]})
        tf_out = {k: v.numpy() for k, v in inference(tf.constant(x[None]), training=False).items()}
        assert ort_out["class_map"].shape == HW and ort_out["class_map"].dtype == np.uint8
        assert np.mean(ort_out["class_map"] == tf_out["class_map"]) >= 0.999
        np.testing.assert_allclose(np.sort(ort_out["scores"]), np.sort(tf_out["scores"]), atol=1e-4)
        assert ort_out["boxes"].shape == (20, 4) and ort_out["classes"].dtype == np.int32


def test_export_detects_mismatch():
    from perception_core.training.export import agreement_summary, compare_outputs

    a = {"class_map": np.zeros((4, 4), np.uint8)}
    b = {"class_map": np.eye(4, dtype=np.uint8)}
    assert not agreement_summary([compare_outputs(a, b)])["ok"]
    assert agreement_summary([compare_outputs(a, a)])["ok"]


def test_quantize_tiny_model(exported, tmp_path):
    import onnx

    from perception_core.training.quantize import quantize

    path, _, frames = exported
    out, out_trt = tmp_path / "tiny_int8.onnx", tmp_path / "tiny_int8_trt.onnx"
    quantize(path, out, out_trt, eval_frames=0, frames=np.stack(frames))
    for file in (out, out_trt):
        spec = ModelSpec.load(file)
        assert spec.precision == "int8" and spec.dataset == SPEC
        graph = onnx.load(str(file)).graph
        assert any(n.op_type == "QuantizeLinear" for n in graph.node)
        sigmoid = next(n for n in graph.node if n.op_type == "Sigmoid")
        assert not any(o in sigmoid.input for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output)
        outputs = OnnxRuntimeEngine(file, intra_op_threads=1).infer({"image": frames[0][None]})
        assert outputs["class_map"].shape == HW
    trt = onnx.load(str(out_trt)).graph
    int32_bias = [i for i in trt.initializer if i.data_type == onnx.TensorProto.INT32 and "bias" in i.name]
    assert not int32_bias  # TensorRT rejects DQ of int32 biases
