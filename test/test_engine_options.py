"""Engine choice and options: ONNX Runtime execution providers, LiteRT for .tflite files, delegates.

The CUDA/TensorRT providers and the Edge TPU delegate are absent here; what is tested is that asking
for them fails at start-up with a message that names what is missing and what is there.
"""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from perception_core.engines import load_engine
from perception_core.engines.onnxruntime_engine import provider_options, resolve_providers
from perception_core.model_spec import ModelSpec
from perception_core.pipeline.pipeline import Pipeline

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def onnx_spec():
    return ModelSpec.load(MODELS / "multitask.onnx")


@pytest.fixture(scope="module")
def tflite_spec():
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    return ModelSpec.load(MODELS / "multitask.tflite")


def test_providers_default_to_the_cpu_and_take_short_names():
    assert resolve_providers(None) == resolve_providers([]) == ["CPUExecutionProvider"]
    assert resolve_providers(["cpu", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_cpu_provider_runs_and_names_itself(onnx_spec):
    engine = load_engine(onnx_spec, threads=1, providers=["cpu"])
    assert engine.name == "onnxruntime:CPUExecutionProvider"
    outputs = engine.infer({"image": np.zeros(onnx_spec.input_shape, np.uint8)})
    assert outputs["class_map"].shape == onnx_spec.input_hw


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
@pytest.mark.parametrize("asked", [["cuda", "cpu"], ["CUDAExecutionProvider"], ["tensorrt", "cuda", "cpu"]])
def test_a_missing_provider_is_named_with_the_available_ones(onnx_spec, asked):
    with pytest.raises(ValueError) as err:
        load_engine(onnx_spec, providers=asked)
    message = str(err.value)
    assert "CUDAExecutionProvider" in message and "not available" in message
    assert all(p in message for p in ort.get_available_providers())
    with pytest.raises(ValueError, match="CUDAExecutionProvider"):  # the node's start-up path: one ValueError
        Pipeline.from_model_files([onnx_spec.model_path], providers=asked)


def test_a_misspelt_provider_is_refused():
    with pytest.raises(ValueError, match="CUDAExecutionProvidr.*available: "):
        resolve_providers(["CUDAExecutionProvidr"])


def test_tensorrt_provider_caches_its_engines(tmp_path):
    options = provider_options("TensorrtExecutionProvider", tmp_path / "cache")
    assert options == {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(tmp_path / "cache")}
    assert (tmp_path / "cache").is_dir() and provider_options("CUDAExecutionProvider", tmp_path) == {}


def test_a_tflite_model_runs_on_litert_by_default(tflite_spec):
    engine = load_engine(tflite_spec, threads=1)
    assert engine.name == "litert:xnnpack" and engine.precision == "fp32"
    pipeline = Pipeline.from_model_files([tflite_spec.model_path], threads=1)
    assert pipeline.engine_name == "litert:xnnpack"


def test_litert_reuses_its_buffers_and_returns_copies(tflite_spec):
    engine = load_engine(tflite_spec, engine="litert", threads=1)
    batch = np.full(tflite_spec.input_shape, 90, np.uint8)
    first = engine.infer({"image": batch})
    second = engine.infer({"image": np.zeros_like(batch)})  # would raise if a view of the buffers survived
    assert first["class_map"] is not second["class_map"]
    again = engine.infer({"image": batch})
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])


@pytest.mark.parametrize("engine, model, options, message", [
    ("litert", "multitask.onnx", {}, "engine 'litert' cannot run multitask.onnx"),
    ("tensorrt", "multitask.tflite", {}, "engine 'tensorrt' cannot run multitask.tflite"),
    ("onnxruntime", "multitask.tflite", {"providers": ["cuda"]}, "are for engine 'onnxruntime', not 'litert'"),
    ("onnxruntime", "multitask.onnx", {"delegate": "libedgetpu.so.1"}, "is for engine 'litert'"),
    ("litert", "multitask.tflite", {"delegate": "libedgetpu.so.1"}, "cannot load the LiteRT delegate 'libedgetpu"),
    ("tflite", "multitask.tflite", {}, "unknown engine 'tflite'"),
])
def test_options_that_do_not_fit_the_engine_or_the_machine_are_refused(tflite_spec, engine, model, options, message):
    with pytest.raises(ValueError, match=message):
        load_engine(ModelSpec.load(MODELS / model), engine=engine, **options)


def test_litert_checks_the_sidecar_outputs_against_the_signature(tflite_spec):
    from perception_core.engines.litert_engine import LiteRTEngine

    with pytest.raises(ValueError, match=r"lacks the outputs \['heatmap'\].*signature has \['boxes', 'class_map'"):
        LiteRTEngine(tflite_spec.model_path, outputs=["class_map", "heatmap"])
