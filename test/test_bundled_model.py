"""The shipped weights are good: the bundled models, through the node's own path, on held-out frames."""

from pathlib import Path

import pytest

from perception_core.model_spec import ModelSpec

MODELS = Path(__file__).resolve().parents[1] / "models"
BUNDLE = ("multitask.onnx", "multitask_int8.onnx", "multitask_int8_trt.onnx", "seg_only.onnx", "det_only.onnx",
          "multitask.tflite")


@pytest.mark.parametrize("name", BUNDLE)
def test_bundled_files_are_valid_and_small(name):
    spec = ModelSpec.load(MODELS / name)  # validates the sidecar and the sha256
    assert spec.model_path.stat().st_size < 10 * 2**20
    assert spec.input_hw == (384, 512)


def test_bundled_multitask_accuracy():
    from perception_core.datasets.simulator import SimulatorSource
    from perception_core.evaluation.evaluate import evaluate, evaluation_pipelines

    pipeline = evaluation_pipelines([MODELS / "multitask.onnx"])["multitask.onnx"]
    result = evaluate(pipeline, SimulatorSource("validation", 50)).as_dict()
    # The shipped model: mIoU 0.892 / mAP50 0.876 on these 50 frames (0.898 / 0.861 on 500); the issue asks
    # >= 0.70 / >= 0.75, mIoU is held to 0.80.
    assert result["miou"] >= 0.80, result
    assert result["map50"] >= 0.75, result
