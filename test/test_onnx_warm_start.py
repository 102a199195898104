"""Warm start from an exported ONNX model (train --init-from M.onnx): weights recovered exactly, BN calibrated."""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from perception_core.datasets import DatasetSpec  # noqa: E402
from perception_core.engines.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402

TINY = {"alpha": 0.35, "neck_channels": 16, "head_channels": 16}
HW = (64, 96)
SPEC = DatasetSpec(("ground", "wall", "thing"), ("thing", "other"), name="tiny-test")


def randomise(model, seed):
    """Trained-looking BN layers and biases: a fresh model's BNs are identities, which folding leaves unchanged,
    and its equal zero biases are merged into one constant by the exporter."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.5, 2.0, n)])
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A separable-head model with trained-looking weights, exported; (path, head_block, frames)."""
    import keras

    from perception_core.training.export import export
    from perception_core.training.model import build_model

    keras.utils.set_random_seed(1)
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    model = build_model("multitask", HW + (3,), SPEC, head_block="separable", **TINY)
    randomise(model, 1)
    frames = np.stack([np.random.default_rng(i).integers(0, 256, HW + (3,), dtype=np.uint8) for i in range(6)])
    export(None, out, top_k=20, eval_frames=0, frames=list(frames), model=model, settings={"test": True})
    return out, "separable", frames


def test_recovered_model_matches_the_exported_file(exported):
    import keras
    import tensorflow as tf

    from perception_core.training.export import agreement_summary, compare_outputs
    from perception_core.training.model import build_model
    from perception_core.training.onnx_weights import load_onnx_weights

    path, head_block, frames = exported
    keras.utils.set_random_seed(2)  # other initial weights than the exported model's
    model = build_model("multitask", HW + (3,), SPEC, head_block=head_block, **TINY)
    copied, fresh = load_onnx_weights(path, model, frames)
    assert fresh == [] and "backbone/Conv1" in copied and "backbone/bn_Conv1" in copied
    engine = OnnxRuntimeEngine(path, intra_op_threads=1)
    inference = model.inference_model(top_k=20, class_map_stride=2)
    per_frame = []
    for x in frames:
        expected = engine.infer({"image": x[None]})
        got = {k: v.numpy() for k, v in inference(tf.constant(x[None]), training=False).items()}
        np.testing.assert_allclose(got["scores"][:5], expected["scores"][:5], atol=1e-4)
        per_frame.append(compare_outputs(expected, got, score_threshold=0.0))
    summary = agreement_summary(per_frame)  # the export's own check; an untrained heatmap has near-tied peaks
    assert summary["ok"] and summary["class_map_agreement"] >= 0.999 and summary["box_agreement"] >= 0.95


def test_calibrated_batchnorms_train_from_the_network_the_model_was(exported):
    """On the calibration images, batch statistics equal the moving ones: training mode = inference mode."""
    import keras

    from perception_core.training.model import build_model
    from perception_core.training.onnx_weights import load_onnx_weights

    path, head_block, frames = exported
    keras.utils.set_random_seed(3)
    model = build_model("multitask", HW + (3,), SPEC, head_block=head_block, **TINY)
    load_onnx_weights(path, model, frames)
    backbone = model.get_layer("backbone")
    infer, train = backbone(frames, training=False), backbone(frames, training=True)
    for level in infer:
        np.testing.assert_allclose(train[level].numpy(), infer[level].numpy(), atol=2e-3, rtol=1e-3)


def test_other_heads_start_fresh_and_the_run_records_its_source(exported, tmp_path):
    from dataset_fixtures import rectangle_frames
    from perception_core.datasets.cache import CachedSource
    from perception_core.training.train import load_trained, train

    path, head_block, _ = exported
    other = "dense" if head_block == "separable" else "separable"
    source = CachedSource(rectangle_frames(8, HW, 0, background=0, thing=2), SPEC, "rectangles")
    out = train("multitask", steps=2, batch=4, image_hw=HW, crop_hw=HW, out=tmp_path / "run", source=source,
                init_from=path, model_kwargs={**TINY, "head_block": other})
    model, settings = load_trained(out)
    assert model.head_block == other
    assert settings["init_from"]["model"] == str(path) and len(settings["init_from"]["sha256"]) == 64
    log = json.loads((out / "config.json").read_text())["model"]
    assert log["head_block"] == other
