"""ModelSpec: the facts about a bundled model, read from the JSON sidecar next to the model file.

Every model file ``X`` (``multitask.onnx``, ``multitask.tflite``) has its sidecar ``X.json``. Loading
validates it and the model file's sha256, so a missing, corrupt or mismatched file fails at start-up
with a message that names the file, not at the first frame. The sidecar carries the label set the
model was trained on (a DatasetSpec); sidecars written before it named its dataset and ignore label
read as dataset "" and ignore label 255.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from perception_core.datasets.spec import DatasetSpec

FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
_REQUIRED = ("format_version", "name", "variant", "model_file", "sha256", "precision", "input", "outputs",
             "seg_classes", "det_classes", "seg_colors_bgr", "stride", "top_k")


class ModelSpecError(ValueError):
    """A model file or its sidecar is missing, corrupt or inconsistent."""


def sidecar_path(model_path: Union[str, Path]) -> Path:
    """``models/multitask.onnx`` -> ``models/multitask.onnx.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def file_sha256(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """Validated contents of a model sidecar; ``model_path`` is resolved next to the sidecar."""

    name: str
    variant: str
    model_path: Path
    sha256: str
    precision: str
    input_name: str
    input_shape: tuple[int, ...]  # (1, H, W, 3)
    outputs: dict[str, dict[str, Any]]
    dataset: DatasetSpec  # the label set the model was trained on
    stride: int
    top_k: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.input_shape[1], self.input_shape[2]

    @property
    def seg_classes(self) -> tuple[str, ...]:
        return self.dataset.seg_classes

    @property
    def det_classes(self) -> tuple[str, ...]:
        return self.dataset.det_classes

    @property
    def seg_colors_bgr(self) -> tuple[tuple[int, int, int], ...]:
        return self.dataset.seg_colors_bgr

    @property
    def metrics(self) -> dict[str, Any]:
        return self.raw.get("metrics", {})

    @classmethod
    def load(cls, path: Union[str, Path], verify_sha256: bool = True) -> ModelSpec:
        """Load from a model file or its ``.json`` sidecar; raises ModelSpecError naming the bad file."""
        path = Path(path)
        json_path = path if path.suffix == ".json" else sidecar_path(path)
        if not json_path.is_file():
            raise ModelSpecError(f"model sidecar {json_path} not found")
        try:
            raw = json.loads(json_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelSpecError(f"model sidecar {json_path} is not valid JSON: {err}") from err
        spec = cls.from_dict(raw, json_path)
        if not spec.model_path.is_file():
            raise ModelSpecError(f"model file {spec.model_path} (named by {json_path}) not found")
        if verify_sha256 and file_sha256(spec.model_path) != spec.sha256:
            raise ModelSpecError(f"model file {spec.model_path} does not match the sha256 in {json_path}: "
                                 "corrupt or replaced without re-exporting")
        return spec

    @classmethod
    def from_dict(cls, raw: dict[str, Any], json_path: Path) -> ModelSpec:
        def fail(why: str) -> ModelSpecError:
            return ModelSpecError(f"model sidecar {json_path}: {why}")

        if not isinstance(raw, dict):
            raise fail("top level must be an object")
        missing = [k for k in _REQUIRED if k not in raw]
        if missing:
            raise fail(f"missing keys {missing}")
        if raw["format_version"] != FORMAT_VERSION:
            raise fail(f"format_version {raw['format_version']!r}, this code reads {FORMAT_VERSION}")
        if raw["precision"] not in PRECISIONS:
            raise fail(f"precision must be one of {PRECISIONS}, got {raw['precision']!r}")
        inp = raw["input"]
        shape = tuple(inp.get("shape", ()))
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or inp.get("dtype") != "uint8" or inp.get(
                "layout") != "NHWC":
            raise fail(f"input must be uint8 NHWC (1,H,W,3), got {inp}")
        outputs = raw["outputs"]
        if not isinstance(outputs, dict) or not outputs or not set(outputs) <= {"class_map", "boxes", "scores",
                                                                                 "classes"}:
            raise fail(f"outputs must name some of class_map/boxes/scores/classes, got {outputs!r}")
        try:
            dataset = DatasetSpec.from_dict(raw)
        except (TypeError, ValueError) as err:
            raise fail(f"classes: {err}") from err
        sha = str(raw["sha256"])
        if len(sha) != 64:
            raise fail(f"sha256 must be 64 hex digits, got {sha!r}")
        return cls(name=str(raw["name"]), variant=str(raw["variant"]), model_path=json_path.parent / raw["model_file"],
                   sha256=sha, precision=raw["precision"], input_name=str(inp.get("name", "image")),
                   input_shape=tuple(int(v) for v in shape), outputs=outputs, dataset=dataset,
                   stride=int(raw["stride"]), top_k=int(raw["top_k"]), raw=raw)


def write_sidecar(model_path: Union[str, Path], fields: dict[str, Any]) -> Path:
    """Write ``model_path``'s sidecar: ``fields`` plus file name, sha256 and format version; validated."""
    model_path = Path(model_path)
    raw = {"format_version": FORMAT_VERSION, "model_file": model_path.name, "sha256": file_sha256(model_path),
           **fields}
    json_path = sidecar_path(model_path)
    ModelSpec.from_dict(raw, json_path)
    json_path.write_text(json.dumps(raw, indent=1) + "\n")
    return json_path
