"""model.json sidecars are validated on load; every failure names the offending file."""

import json
from pathlib import Path

import pytest

from perception_core.datasets import DatasetSpec
from perception_core.model_spec import ModelSpec, ModelSpecError, sidecar_path, write_sidecar

SEG_NAMES = ("floor", "wall", "ceiling")
# A sidecar as export wrote them before it recorded the dataset's name and ignore label.
FIELDS = {"name": "m", "variant": "multitask", "precision": "fp32",
          "input": {"name": "image", "shape": [1, 256, 320, 3], "dtype": "uint8", "layout": "NHWC"},
          "outputs": {"class_map": {"shape": [256, 320], "dtype": "uint8"}},
          "seg_classes": list(SEG_NAMES), "det_classes": ["crate", "pallet"],
          "seg_colors_bgr": [[10, 20, 30], [40, 50, 60], [70, 80, 90]], "stride": 8, "top_k": 100}


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
        assert spec.seg_classes == SEG_NAMES


def test_the_spec_of_an_older_sidecar_defaults_its_name_and_ignore_label(model_file):
    spec = ModelSpec.load(model_file).dataset
    assert spec == DatasetSpec(SEG_NAMES, ("crate", "pallet"), ((10, 20, 30), (40, 50, 60), (70, 80, 90)))
    assert spec.ignore_label == 255 and spec.name == ""


def test_the_training_spec_round_trips_through_the_sidecar(tmp_path):
    trained = DatasetSpec(tuple(f"c{i}" for i in range(12)), ("a", "b", "c", "d", "e"), ignore_label=250,
                          name="warehouse")
    path = tmp_path / "w.onnx"
    path.write_bytes(b"weights")
    write_sidecar(path, {**{k: v for k, v in FIELDS.items() if k not in trained.to_dict()}, **trained.to_dict()})
    spec = ModelSpec.load(path)
    assert spec.dataset == trained and spec.det_classes == ("a", "b", "c", "d", "e")


def test_bundled_sidecars_load_with_their_label_set():
    from perception_core.resources import package_file

    for sidecar in sorted(Path(package_file("models", "multitask.onnx")).parent.glob("*.json")):
        spec = ModelSpec.load(sidecar)
        assert len(spec.dataset.seg_classes) == 7 and len(spec.dataset.det_classes) == 3, sidecar
        assert spec.dataset.ignore_label == 255


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
    ({"ignore_label": 1}, "ignore_label"),
    ({"det_classes": ["crate", "crate"]}, "unique"),
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
