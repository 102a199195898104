"""Model, loss and training-loop tests on a tiny model and hand-made frames (no simulator)."""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from dataset_fixtures import rectangle_frames  # noqa: E402
from perception_core.datasets import DatasetSpec, Sample  # noqa: E402
from perception_core.datasets.cache import CachedSource, FrameCache  # noqa: E402
from perception_core.training.data import BatchSampler, centernet_targets, crop_and_flip  # noqa: E402
from perception_core.training.model import PerceptionModel, build_model  # noqa: E402

TINY = {"alpha": 0.35, "neck_channels": 16, "head_channels": 16}
SPEC = DatasetSpec(tuple(f"region{i}" for i in range(7)), ("blob", "spot", "dot"), name="synthetic")


def synthetic_frames(n=8, hw=(64, 96), seed=0):
    """Frames with one bright rectangle each: class 4 in the mask (on class 1), detection class 0."""
    return rectangle_frames(n, hw, seed, background=1, thing=4)


def synthetic_source(n=8):
    return CachedSource(synthetic_frames(n), SPEC, "synthetic")


def test_pyramid_outputs_and_heads():
    model = build_model("multitask", (64, 96, 3), SPEC, det_stride=8, **TINY)
    assert {k: tuple(v.shape[1:3]) for k, v in model.backbone.pyramid_outputs.items()} == {
        "P2": (16, 24), "P3": (8, 12), "P4": (4, 6), "P5": (2, 3)}
    shapes = {k: tuple(v.shape) for k, v in model.output.items()}
    assert shapes == {"seg_logits": (None, 64, 96, 7), "det_heatmap": (None, 8, 12, 3),
                      "det_wh": (None, 8, 12, 2), "det_offset": (None, 8, 12, 2)}
    assert set(build_model("seg_only", (64, 96, 3), SPEC, **TINY).output) == {"seg_logits"}
    assert set(build_model("det_only", (64, 96, 3), SPEC, **TINY).output) == {"det_heatmap", "det_wh", "det_offset"}


def test_heads_are_sized_from_the_spec():
    spec = DatasetSpec(tuple(f"c{i}" for i in range(12)), ("a", "b", "c", "d", "e"))
    model = build_model("multitask", (64, 96, 3), spec, **TINY)
    assert model.output["seg_logits"].shape[-1] == 12 and model.output["det_heatmap"].shape[-1] == 5
    assert PerceptionModel.from_config(model.get_config()).spec == spec
    with pytest.raises(ValueError, match="no segmentation classes"):
        build_model("multitask", (64, 96, 3), DatasetSpec((), ("a",)), **TINY)
    assert set(build_model("det_only", (64, 96, 3), DatasetSpec((), ("a",)), **TINY).output) == {
        "det_heatmap", "det_wh", "det_offset"}


def test_stride_four_head_sits_on_the_stride_four_level():
    model = build_model("multitask", (64, 96, 3), SPEC, det_stride=4, **TINY)
    shapes = {k: tuple(v.shape) for k, v in model.output.items()}
    assert shapes == {"seg_logits": (None, 64, 96, 7), "det_heatmap": (None, 16, 24, 3),
                      "det_wh": (None, 16, 24, 2), "det_offset": (None, 16, 24, 2)}
    with pytest.raises(ValueError, match="det_stride"):
        build_model("multitask", (64, 96, 3), SPEC, det_stride=2, **TINY)


@pytest.mark.parametrize("det_stride,head_block", [(4, "separable"), (8, "separable"), (4, "dense")])
def test_config_round_trip(det_stride, head_block):
    import keras

    model = build_model("multitask", (64, 96, 3), SPEC, det_stride=det_stride, head_block=head_block, **TINY)
    config = model.get_config()
    restored = PerceptionModel.from_config(config)
    assert json.dumps(restored.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert json.dumps(again.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)
    assert restored.count_params() == model.count_params() and restored.head_block == head_block


@pytest.mark.parametrize("det_stride", [4, 8])
def test_multitask_shares_backbone_params(det_stride):
    seg, det, multi = (build_model(v, (64, 96, 3), SPEC, det_stride=det_stride).count_params()
                       for v in ("seg_only", "det_only", "multitask"))
    assert multi <= 0.55 * (seg + det)


def test_warm_start_copies_matching_layers_only():
    from perception_core.training.model import copy_matching_weights

    source = build_model("multitask", (64, 96, 3), SPEC, det_stride=8, **TINY)
    target = build_model("multitask", (64, 96, 3), SPEC, det_stride=4, **TINY)
    copied, fresh = copy_matching_weights(source, target)
    assert fresh == ["det_detail", "det_heatmap", "det_offset", "det_wh"]
    assert "backbone/Conv1" in copied and "neck" in copied and "seg_trunk" in copied
    for a, b in zip(source.get_layer("backbone").get_weights(), target.get_layer("backbone").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_balancer_starts_where_uncertainty_weighting_settles():
    from perception_core.training.losses import TaskBalancer

    balancer = TaskBalancer(("seg", "det"))
    balancer.start_at({"seg": 0.1, "det": 4.0})
    weights = {k: float(v) for k, v in balancer.weights_now().items()}
    assert weights == pytest.approx({"seg": 10.0, "det": 0.25}, rel=1e-5)


def test_task_priority_survives_uncertainty_normalisation():
    import tensorflow as tf

    from perception_core.training.losses import TaskBalancer

    balancer = TaskBalancer(("seg", "det"), weights={"det": 2.0})
    balancer.start_at({"seg": 0.1, "det": 4.0})
    seg, det = tf.Variable(0.1), tf.Variable(4.0)
    with tf.GradientTape() as tape:
        total = balancer({"seg": seg, "det": det})
    d_seg, d_det = tape.gradient(total, [seg, det])
    # at equilibrium each task's gradient is priority / loss: det gets twice its normalised share
    assert float(d_seg) * 0.1 == pytest.approx(1.0, rel=1e-5)
    assert float(d_det) * 4.0 == pytest.approx(2.0, rel=1e-5)


def test_centernet_targets_peak_at_centre():
    heatmap, wh, offset, centers = centernet_targets(np.array([[16, 8, 48, 40]], np.float32), np.array([2]),
                                                     (64, 96), 3, stride=8)
    assert heatmap.shape == (8, 12, 3) and heatmap[3, 4, 2] == 1.0 and heatmap[..., :2].max() == 0
    np.testing.assert_allclose(wh[3, 4], [4, 4])
    np.testing.assert_allclose(offset[3, 4], [0, 0])
    assert centers.sum() == 1


def test_crop_and_flip_moves_boxes():
    image = np.zeros((64, 96, 3), np.uint8)
    mask = np.zeros((64, 96), np.uint8)
    mask[10:20, 30:40] = 4
    boxes = np.array([[30, 10, 40, 20], [0, 0, 5, 5]], np.float32)
    _, m, b, c = crop_and_flip(image, mask, boxes, np.array([0, 1], np.int32), 8, 16, (48, 64), flip=True)
    np.testing.assert_allclose(b, [[64 - 24, 2, 64 - 14, 12]])  # the second box is cut off
    assert c.tolist() == [0]
    assert (m[2:12, 40:50] == 4).all() and m.sum() == 4 * 100


def test_tiny_model_loss_falls(tmp_path):
    from perception_core.training.train import load_trained, train

    out = train("multitask", steps=16, batch=4, out=tmp_path / "run", image_hw=(64, 96), crop_hw=(64, 96),
                lr=5e-3, checkpoint_every=8, log_every=4, model_kwargs={**TINY, "det_stride": 8, "head_block": "dense"},
                source=synthetic_source())
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert history["total"][-1] < history["total"][0]
    assert (out / "checkpoint" / "model.weights.h5").exists()
    model, settings = load_trained(out)
    assert settings["variant"] == "multitask" and model.count_params() == settings["params"]
    assert settings["dataset"] == SPEC.to_dict() and settings["source"] == "synthetic" and model.spec == SPEC

    # A run saved before runs recorded their label set, det_stride and head_block: the simulator's, stride 8, dense.
    from perception_core.datasets.simulator import SimulatorSource

    config = json.loads((out / "config.json").read_text())
    del config["settings"]["dataset"], config["model"]["det_stride"], config["model"]["head_block"]
    config["settings"]["model_kwargs"] = TINY
    (out / "config.json").write_text(json.dumps(config))
    legacy, _ = load_trained(out)
    assert legacy.det_stride == 8 and legacy.spec == SimulatorSource.spec and legacy.head_block == "dense"


def test_warm_started_stride_four_run_trains(tmp_path):
    from perception_core.training.train import load_trained, train

    common = {"batch": 4, "image_hw": (64, 96), "crop_hw": (64, 96), "log_every": 2, "source": synthetic_source()}
    first = train("multitask", steps=2, out=tmp_path / "first", model_kwargs={**TINY, "det_stride": 8}, **common)
    out = train("multitask", steps=12, lr=5e-3, out=tmp_path / "second", init_from=first,
                model_kwargs={**TINY, "det_stride": 4}, **common)
    model, settings = load_trained(out)
    assert model.det_stride == 4 and settings["init_from"]["run"] == str(first)
    assert settings["init_from"]["steps"] == 2
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert history["total"][-1] < history["total"][0]


def test_resume_continues_from_checkpoint(tmp_path):
    from perception_core.training.train import train

    kwargs = {"batch": 2, "out": tmp_path / "run", "image_hw": (64, 96), "crop_hw": (64, 96),
              "checkpoint_every": 2, "log_every": 2, "model_kwargs": TINY, "source": synthetic_source()}
    train("det", steps=2, **kwargs)
    with pytest.raises(FileExistsError):
        train("det", steps=4, **kwargs)
    train("det", steps=4, resume=True, **kwargs)
    steps = np.genfromtxt(tmp_path / "run" / "history.csv", delimiter=",", names=True)["step"]
    assert steps.tolist() == [2, 4]


def partly_labelled_source():
    """Four frames: two fully labelled, one without a mask, one without detections."""
    frames = synthetic_frames(4)
    samples = list(CachedSource(frames, SPEC, "partly"))
    samples[2] = Sample(samples[2].image, samples[2].key, None, samples[2].detections)
    samples[3] = Sample(samples[3].image, samples[3].key, samples[3].class_mask, None)
    return samples


class ListSource:
    def __init__(self, samples, spec=SPEC, name="list"):
        self.samples, self.spec, self.name = samples, spec, name

    def __len__(self):
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)


def test_unlabelled_samples_train_no_task():
    """A frame without a mask is all ignore label; one without detections is marked, not read as empty."""
    frames = FrameCache.from_source(ListSource(partly_labelled_source()), (64, 96))
    assert (frames.masks[2] == SPEC.ignore_label).all() and (frames.masks[3] != SPEC.ignore_label).any()
    assert frames.labelled.tolist() == [[True, True], [True, True], [False, True], [True, False]]
    assert [s.tasks for s in CachedSource(frames, SPEC, "again")][2:] == [frozenset({"detection"}),
                                                                           frozenset({"segmentation"})]
    sampler = BatchSampler(frames, 16, (64, 96), SPEC.num_det_classes, 8)
    batch = sampler(0)
    picked = np.random.default_rng([0, 0]).integers(4, size=16)  # the frames BatchSampler draws for step 0
    np.testing.assert_array_equal(batch["det_labelled"], (picked != 3).astype(np.float32))


def test_focal_loss_ignores_images_without_detection_labels():
    import tensorflow as tf

    from perception_core.training.losses import focal_loss

    target = np.zeros((2, 4, 4, 1), np.float32)
    target[0, 1, 1] = 1.0
    pred = np.full((2, 4, 4, 1), 0.3, np.float32)
    pred[1] = 0.9  # confident false positives everywhere, but on an image nobody labelled for detection
    both = float(focal_loss(tf.constant(pred), tf.constant(target), tf.constant([1.0, 1.0])))
    first = float(focal_loss(tf.constant(pred), tf.constant(target), tf.constant([1.0, 0.0])))
    alone = float(focal_loss(tf.constant(pred[:1]), tf.constant(target[:1]), tf.constant([1.0])))
    assert first == pytest.approx(alone) and both > first


def test_a_head_nothing_is_labelled_for_is_refused(tmp_path):
    from perception_core.training.train import train

    samples = [Sample(s.image, s.key, s.class_mask, None) for s in CachedSource(synthetic_frames(2), SPEC, "x")]
    with pytest.raises(ValueError, match="no detection labels"):
        train("multitask", steps=1, out=tmp_path / "run", image_hw=(64, 96), crop_hw=(64, 96),
              source=ListSource(samples, name="masks only"), model_kwargs=TINY)
