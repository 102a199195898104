"""model.json sidecars are validated on load; every failure names the offending file."""

import json
from pathlib import Path

import pytest

from perception_core.model_spec import ModelSpec, ModelSpecError, sidecar_path, write_sidecar
from perception_core.types import DET_CLASSES, SEG_CLASSES, SEG_COLORS_BGR

FIELDS = {"name": "m", "variant": "multitask", "precision": "fp32",
          "input": {"name": "image", "shape": [1, 256, 320, 3], "dtype": "uint8", "layout": "NHWC"},
          "outputs": {"class_map": {"shape": [256, 320], "dtype": "uint8"}},
          "seg_classes": list(SEG_CLASSES), "det_classes": list(DET_CLASSES),
          "seg_colors_bgr": [list(c) for c in SEG_COLORS_BGR], "stride": 8, "top_k": 100}


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not really onnx, but hashed all the same")
    write_sidecar(path, FIELDS)
    return path


def test_load_from_model_or_sidecar(model_file):
    for path in (model_file, sidecar_path(model_file)):
        spec = ModelSpec.load(path)
        assert spec.model_path == model_file and spec.input_hw == (256, 320) and spec.precision == "fp32"
        assert spec.seg_classes == SEG_CLASSES


def test_missing_model_file_names_it(model_file):
    model_file.unlink()
    with pytest.raises(ModelSpecError, match="m.onnx"):
        ModelSpec.load(sidecar_path(model_file))


def test_missing_sidecar_names_it(model_file):
    sidecar_path(model_file).unlink()
    with pytest.raises(ModelSpecError, match=r"m\.onnx\.json"):
        ModelSpec.load(model_file)


def test_corrupt_model_file_fails_sha(model_file):
    model_file.write_bytes(b"truncated")
    with pytest.raises(ModelSpecError, match="sha256"):
        ModelSpec.load(model_file)
    assert ModelSpec.load(model_file, verify_sha256=False).name == "m"


def test_corrupt_sidecar_json(model_file):
    sidecar_path(model_file).write_text("{not json")
    with pytest.raises(ModelSpecError, match=r"m\.onnx\.json.*not valid JSON"):
        ModelSpec.load(model_file)


@pytest.mark.parametrize("change, message", [
    ({"precision": "int4"}, "precision"),
    ({"input": {"name": "image", "shape": [1, 256, 320, 3], "dtype": "float32", "layout": "NHWC"}}, "uint8"),
    ({"outputs": {"logits": {}}}, "outputs"),
    ({"seg_colors_bgr": [[0, 0, 0]]}, "seg_colors_bgr"),
    ({"format_version": 99}, "format_version"),
])
def test_invalid_fields(model_file, change, message):
    raw = json.loads(sidecar_path(model_file).read_text())
    sidecar_path(model_file).write_text(json.dumps({**raw, **change}))
    with pytest.raises(ModelSpecError, match=message):
        ModelSpec.load(model_file)


def test_missing_keys(model_file):
    raw = json.loads(sidecar_path(model_file).read_text())
    del raw["top_k"]
    sidecar_path(model_file).write_text(json.dumps(raw))
    with pytest.raises(ModelSpecError, match="top_k"):
        ModelSpec.load(model_file)
