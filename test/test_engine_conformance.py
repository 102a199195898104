"""One suite every engine must pass: the Engine protocol, exact outputs of a known model, and
agreement with the ONNX Runtime CPU reference on the bundled model.

TensorRT runs it only where `tensorrt` imports (a Jetson / GPU machine with TensorRT); here it is
skipped with that reason, because TensorRT is not installable on these machines. LiteRT runs the
.tflite twins: the geometry model rebuilt in TensorFlow and written by export's own LiteRT path
(skipped where TensorFlow is not installed), and the bundled multitask.tflite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_fixtures import make_geometry_model
from perception_core.engines import load_engine
from perception_core.engines.base import Engine
from perception_core.model_spec import ModelSpec
from perception_core.pipeline import stages
from perception_core.sim import VALIDATION_SEED, render_scene

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "models" / "multitask.onnx"
MODEL_SUFFIX = {"onnxruntime": ".onnx", "tensorrt": ".onnx", "litert": ".tflite"}


@pytest.fixture(params=["onnxruntime", "tensorrt", "litert"])
def engine_name(request):
    if request.param == "tensorrt":
        pytest.importorskip("tensorrt", reason="TensorRT is not installable here (JetPack / NVIDIA GPU machines only)")
    if request.param == "litert":
        pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    return request.param


@pytest.fixture(scope="module")
def geometry_onnx(tmp_path_factory):
    return ModelSpec.load(make_geometry_model(tmp_path_factory.mktemp("geometry")))


@pytest.fixture(scope="module")
def geometry_tflite(geometry_onnx, tmp_path_factory):
    """The geometry model as a TensorFlow function, through export's LiteRT path (which checks it against TF)."""
    tf = pytest.importorskip("tensorflow", reason="the .tflite geometry model is built with TensorFlow")
    from perception_core.training.export import export_tflite

    (_, h, w, _), k = geometry_onnx.input_shape, geometry_onnx.top_k
    constants = load_engine(geometry_onnx).infer({"image": np.zeros(geometry_onnx.input_shape, np.uint8)})

    @tf.function(input_signature=[tf.TensorSpec((1, h, w, 3), tf.uint8, name="image")])
    def serve(image):
        red = tf.cast(image[0, :, :, 2], tf.float32)
        return {"class_map": tf.cast(tf.floor(red * (1.0 / 128.0)), tf.uint8),
                **{name: tf.constant(constants[name]) for name in ("boxes", "scores", "classes")}}

    frames = [np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8) for i in range(2)]
    path = tmp_path_factory.mktemp("geometry_tflite") / "geometry.tflite"
    export_tflite(serve, frames, path, {"name": "geometry", "variant": "multitask", "image_hw": (h, w),
                                        "outputs": list(geometry_onnx.outputs), "top_k": k, "stride": 8,
                                        "settings": {}, "extra": {}, "spec": geometry_onnx.dataset})
    return ModelSpec.load(path)


@pytest.fixture
def geometry_spec(engine_name, request):
    return request.getfixturevalue("geometry_tflite" if engine_name == "litert" else "geometry_onnx")


def test_engine_follows_the_protocol(engine_name, geometry_spec):
    engine = load_engine(geometry_spec, engine=engine_name, threads=1)
    assert isinstance(engine, Engine)
    assert engine.input_spec[geometry_spec.input_name][0] == geometry_spec.input_shape
    engine.warmup(2)
    assert engine.precision in ("fp32", "fp16", "int8") and engine.name.startswith(engine_name)


def test_engine_reproduces_known_outputs(engine_name, geometry_spec):
    engine = load_engine(geometry_spec, engine=engine_name, threads=1)
    batch = np.zeros(geometry_spec.input_shape, np.uint8)
    batch[0, 20:60, 30:90, 2] = 200
    out = engine.infer({geometry_spec.input_name: batch})
    expected = (batch[0, :, :, 2] >= 128).astype(np.uint8)
    assert out["class_map"].dtype == np.uint8 and np.array_equal(out["class_map"], expected)
    assert np.allclose(out["boxes"], [[10, 18, 50, 58], [100, 60, 140, 120]])
    assert np.allclose(out["scores"], [0.9, 0.2], atol=1e-3)
    assert out["classes"].tolist() == [0, 2]


def test_engine_agrees_with_the_reference_on_the_bundled_model(engine_name):
    spec = ModelSpec.load(BUNDLED)
    reference = load_engine(spec, engine="onnxruntime", threads=2)
    engine = load_engine(ModelSpec.load(BUNDLED.with_suffix(MODEL_SUFFIX[engine_name])), engine=engine_name, threads=2)
    for index in range(4):
        batch, _ = stages.preprocess(render_scene(VALIDATION_SEED, index).frame.image, spec.input_hw)
        want, got = reference.infer({spec.input_name: batch}), engine.infer({spec.input_name: batch})
        for name, declared in spec.outputs.items():
            assert list(got[name].shape) == declared["shape"] and str(got[name].dtype) == declared["dtype"]
        assert np.mean(got["class_map"] == want["class_map"]) >= 0.99
        confident = want["scores"] >= 0.3
        assert np.abs(got["scores"][confident] - want["scores"][confident]).max(initial=0) < 0.05
