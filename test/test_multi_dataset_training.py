"""Training from separate per-task datasets: labelled-only losses and gradients, task ratios, combined label
sets, frames read from disk on demand by worker threads, and ``train --data`` end to end."""

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from dataset_fixtures import rectangle_frames  # noqa: E402
from perception_core.datasets import DatasetSpec, Sample  # noqa: E402
from perception_core.datasets.cache import FrameCache  # noqa: E402
from perception_core.datasets.export_sim import write_dataset  # noqa: E402
from perception_core.datasets.folder import open_dataset  # noqa: E402
from perception_core.training.data import BatchSampler, task_slots  # noqa: E402
from perception_core.training.loader import (  # noqa: E402
    ConcatFrames,
    DatasetRefused,
    Prefetcher,
    SourceFrames,
    combined_spec,
)
from perception_core.types import Detections  # noqa: E402

TINY = {"alpha": 0.35, "neck_channels": 16, "head_channels": 16}
HW = (64, 96)
SPEC = DatasetSpec(("ground", "wall", "thing"), ("thing", "other"), name="both")
SEG_SPEC = DatasetSpec(SPEC.seg_classes, (), name="masks")
DET_SPEC = DatasetSpec((), SPEC.det_classes, name="boxes")


def frames(n=6, hw=HW, seed=0, labelled=None):
    """Frames with one bright rectangle each: class 2 ("thing") in the mask, detection class 0."""
    return rectangle_frames(n, hw, seed, background=0, thing=2, labelled=labelled)


SEG_ONLY, DET_ONLY = [True, False], [False, True]


def head_variables(model, head):
    layers = {"seg": ("seg_trunk", "seg_logits"), "det": ("det_trunk", "det_detail", "det_heatmap", "det_wh",
                                                          "det_offset")}[head]
    return [v for name in layers for v in model.get_layer(name).trainable_variables]


@pytest.mark.parametrize("labelled, other", [(SEG_ONLY, "det"), (DET_ONLY, "seg")])
def test_a_sample_labelled_for_one_task_gives_the_other_head_zero_gradient(labelled, other):
    import tensorflow as tf

    from perception_core.training.losses import TaskBalancer, batch_loss
    from perception_core.training.model import build_model

    model = build_model("multitask", HW + (3,), SPEC, det_stride=4, **TINY)
    balancer = TaskBalancer(("seg", "det"))
    balancer.start_at({"seg": 0.5, "det": 3.0})
    data = BatchSampler(frames(4, labelled=labelled), 4, HW, 2, 4)(0)
    assert data["det_labelled"].tolist() == [float(labelled[1])] * 4
    own = "seg" if other == "det" else "det"
    with tf.GradientTape() as tape:
        total, losses, _ = batch_loss(model, balancer, {k: tf.constant(v) for k, v in data.items()}, ("seg", "det"),
                                      SPEC.ignore_label)
    backbone = model.get_layer("backbone").trainable_variables
    grads = tape.gradient(total, head_variables(model, other) + head_variables(model, own) + backbone
                          + balancer.trainable_weights)
    n_other, n_own = len(head_variables(model, other)), len(head_variables(model, own))
    other_grads, own_grads = grads[:n_other], grads[n_other:n_other + n_own]
    assert float(losses[other]) == 0.0
    assert all(g is None or not np.any(g.numpy()) for g in other_grads), f"{other} head learnt from {own} labels"
    assert all(g is not None and np.any(g.numpy()) for g in own_grads)
    assert any(np.any(g.numpy()) for g in grads[n_other + n_own:-2])  # the shared backbone learns
    log_var_grads = dict(zip(("seg", "det"), grads[-2:]))
    assert not np.any(log_var_grads[other].numpy())  # an absent task's weight does not drift either


def test_each_task_loss_is_averaged_over_the_images_labelled_for_it_only():
    """Two seg-only and two det-only images: each task's loss equals its loss on its own two images."""
    import tensorflow as tf

    from perception_core.training.losses import task_losses

    seg_part = BatchSampler(frames(2, seed=1, labelled=SEG_ONLY), 2, HW, 2, 4)(0)
    det_part = BatchSampler(frames(2, seed=2, labelled=DET_ONLY), 2, HW, 2, 4)(0)
    mixed = {k: np.concatenate([seg_part[k], det_part[k]]) for k in seg_part}
    rng = np.random.default_rng(0)
    outputs = {"seg_logits": rng.normal(size=(4, *HW, 3)), "det_heatmap": rng.uniform(0.01, 0.99, (4, 16, 24, 2)),
               "det_wh": rng.normal(size=(4, 16, 24, 2)), "det_offset": rng.normal(size=(4, 16, 24, 2))}
    outputs = {k: tf.constant(v, tf.float32) for k, v in outputs.items()}

    def losses(data, rows):
        return task_losses({k: v[rows] for k, v in outputs.items()}, {k: tf.constant(v) for k, v in data.items()},
                           ("seg", "det"), SPEC.ignore_label)[0]

    both = losses(mixed, slice(0, 4))
    assert float(both["seg"]) == pytest.approx(float(losses(seg_part, slice(0, 2))["seg"]), rel=1e-6)
    assert float(both["det"]) == pytest.approx(float(losses(det_part, slice(2, 4))["det"]), rel=1e-6)
    assert float(both["seg"]) > 0 and float(both["det"]) > 0


def test_task_ratio_fills_each_batch_from_the_images_labelled_for_each_task():
    seg, det = frames(5, seed=1, labelled=SEG_ONLY), frames(3, seed=2, labelled=DET_ONLY)
    both = ConcatFrames([seg, det])
    assert len(both) == 8 and both.labelled_count("segmentation") == 5 and both.labelled_count("detection") == 3
    assert task_slots({"seg": 1, "det": 1}, 8) == {"seg": 4, "det": 4}
    assert task_slots({"seg": 3, "det": 1}, 6) == {"seg": 5, "det": 1}  # 4.5/1.5: largest remainder, then order
    assert task_slots({"seg": 100, "det": 1}, 4) == {"seg": 3, "det": 1}  # every task keeps a slot
    sampler = BatchSampler(both, 8, HW, 2, 4, task_ratio={"seg": 3, "det": 1})
    for step in range(5):
        indices = [i for i, *_ in sampler.draws(step)]
        assert all(i < 5 for i in indices[:6]) and all(i >= 5 for i in indices[6:])
        batch = sampler(step)
        assert batch["seg_labelled"].tolist() == [1.0] * 6 + [0.0] * 2
        assert batch["det_labelled"].tolist() == [0.0] * 6 + [1.0] * 2
    with pytest.raises(ValueError, match="no frame is labelled for detection"):
        BatchSampler(seg, 4, HW, 2, 4, task_ratio={"seg": 1, "det": 1})


def test_label_sets_combine_per_task_and_conflicts_are_refused():
    spec = combined_spec([SEG_SPEC, DET_SPEC])
    assert spec.seg_classes == SPEC.seg_classes and spec.det_classes == SPEC.det_classes
    assert spec.seg_colors_bgr == SEG_SPEC.seg_colors_bgr and spec.name == "masks+boxes"
    assert combined_spec([SPEC]) is SPEC
    with pytest.raises(DatasetRefused, match="detection classes differ"):
        combined_spec([SPEC, DatasetSpec((), ("thing", "else"), name="other")])
    with pytest.raises(DatasetRefused, match="ignore labels differ"):
        combined_spec([SEG_SPEC, DatasetSpec((), SPEC.det_classes, ignore_label=200)])


class ListSource:
    def __init__(self, samples, spec, name="list"):
        self.samples, self.spec, self.name = samples, spec, name

    def __len__(self):
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)


def mixed_size_samples():
    """Camera frames of three sizes, 1080p among them, each with a mask and one box."""
    samples = []
    for i, (h, w) in enumerate([(1080, 1920), (300, 500), (720, 540)]):
        rng = np.random.default_rng(i)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
        box = np.array([[w * 0.2, h * 0.3, w * 0.6, h * 0.9]], np.float32)
        samples.append(Sample(image, f"m/{i}", mask, Detections.from_lists(box, np.array([1], np.int32))))
    return samples


def test_folder_frames_of_any_size_read_on_demand_equal_the_in_memory_letterbox(tmp_path):
    yaml_path = write_dataset(tmp_path / "d", {"train": ListSource(mixed_size_samples(), SPEC)}, "yolo")
    source = open_dataset(yaml_path)
    on_demand = SourceFrames(source, (96, 128), source.spec)
    in_memory = FrameCache.from_source(source, (96, 128))
    assert len(on_demand) == 3 and on_demand.hw == in_memory.hw == (96, 128)
    for i in range(3):
        for got, want in zip(on_demand.frame(i), in_memory.frame(i)):
            np.testing.assert_array_equal(got, want)
    sampler = BatchSampler(on_demand, 4, (64, 96), 2, 4)
    reference = BatchSampler(in_memory, 4, (64, 96), 2, 4)
    loader = Prefetcher(sampler, 0, 3, workers=2)
    for step in range(3):
        batch, want = loader.get(step), reference(step)
        assert batch.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(batch[key], want[key])
    loader.close()


def test_the_loader_counts_the_steps_that_wait_for_data():
    import time

    class SlowSampler(BatchSampler):
        def sample(self, draw):
            time.sleep(0.05)
            return super().sample(draw)

    sampler = SlowSampler(frames(4), 2, HW, 2, 4)
    loader = Prefetcher(sampler, 0, 4, workers=1, depth=1)
    for step in range(4):
        loader.get(step)  # asked for at once: every batch is still being built
    assert loader.waits == 4 and loader.wait_s > 0.1
    loader.close()
    loader = Prefetcher(BatchSampler(frames(4), 2, HW, 2, 4), 0, 3, workers=2, depth=3)
    time.sleep(0.5)  # a slow training step: the batches are ready before they are asked for
    for step in range(3):
        loader.get(step)
    assert loader.waits == 0
    loader.close()


@pytest.fixture(scope="module")
def per_task_datasets(tmp_path_factory):
    """The user's situation on simulator frames: A has masks only, B (other frames) boxes only."""
    from perception_core.__main__ import main

    root = tmp_path_factory.mktemp("per_task")
    assert main(["dataset", "export-sim", "--out", str(root / "a"), "--frames", "8", "--val-frames", "2",
                 "--format", "masks"]) == 0
    assert main(["dataset", "export-sim", "--out", str(root / "b"), "--frames", "8", "--start", "8",
                 "--val-frames", "2", "--format", "coco", "--tasks", "det"]) == 0
    return root / "a" / "dataset.yaml", root / "b" / "dataset.yaml"


@pytest.fixture(scope="module")
def per_task_run(tmp_path_factory, per_task_datasets):
    """``train --data A --data B``: 30 steps of the default model at 96x128; (run dir, its stdout)."""
    import contextlib
    import io

    from perception_core.__main__ import main

    a, b = per_task_datasets
    out = tmp_path_factory.mktemp("per_task_run") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["train", "--task", "multitask", "--data", str(a), "--data", str(b), "--steps", "30", "--batch",
                     "4", "--image-size", "96x128", "--crop", "96x128", "--lr", "5e-3", "--out", str(out),
                     "--checkpoint-every", "30", "--threads", "1"]) == 0
    return out, stdout.getvalue()


def test_train_data_trains_one_multitask_model_from_per_task_datasets(per_task_datasets, per_task_run):
    from perception_core.training.train import load_trained

    a, b = per_task_datasets
    out, stdout = per_task_run
    assert "steps after the first waited for their batch" in stdout
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert history["step"].tolist() == [10, 20, 30]
    assert history["total"][-1] < history["total"][0] and history["det"][-1] < history["det"][0]
    model, settings = load_trained(out)
    assert model.spec.seg_classes == open_dataset(a).spec.seg_classes
    assert model.spec.det_classes == open_dataset(b).spec.det_classes
    assert settings["task_ratio"] == {"seg": 1.0, "det": 1.0} and settings["backbone"] == "mobilenet_v2_0.5"
    assert settings["backbone_weights"] == {"source": "none"}
    records = settings["datasets"]
    assert [r["yaml"] for r in records] == [str(a.resolve()), str(b.resolve())]
    assert [len(r["yaml_sha256"]) for r in records] == [64, 64]
    assert records[0]["counts"]["train"] == {"images": 8, "segmentation": 8, "detection": 0}
    assert records[1]["counts"]["val"] == {"images": 2, "segmentation": 0, "detection": 2}
    assert settings["data"]["steps_after_first"] == 29 and settings["data"]["waits"] >= 0
    assert (out / "backbone.weights.h5").exists()
    assert json.loads((out / "config.json").read_text())["settings"]["dataset"] == model.spec.to_dict()


def test_the_sidecar_records_the_datasets_classes_and_backbone(tmp_path, per_task_run):
    from perception_core.__main__ import main
    from perception_core.model_spec import ModelSpec
    from perception_core.training.train import load_trained

    run, _ = per_task_run
    onnx = tmp_path / "mine.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(onnx), "--verify-frames", "2", "--eval-frames", "2",
                 "--threads", "1"]) == 0
    sidecar = ModelSpec.load(onnx)
    model, settings = load_trained(run)
    assert sidecar.dataset == model.spec
    assert sidecar.raw["seg_colors_bgr"] == [list(c) for c in model.spec.seg_colors_bgr]
    training = sidecar.raw["training"]
    assert training["datasets"] == settings["datasets"] and len(training["datasets"]) == 2
    assert training["backbone"] == "mobilenet_v2_0.5" and training["backbone_weights"] == {"source": "none"}
    assert sidecar.raw["metrics"]["frames"] == 2


def test_export_of_a_model_in_other_classes_skips_simulator_metrics(tmp_path, capsys):
    from perception_core.model_spec import ModelSpec
    from perception_core.training.export import export
    from perception_core.training.model import build_model

    model = build_model("multitask", HW + (3,), SPEC, **TINY)
    frames = [np.random.default_rng(i).integers(0, 256, HW + (3,), dtype=np.uint8) for i in range(2)]
    export(None, tmp_path / "x.onnx", top_k=10, eval_frames=5, frames=frames, model=model, settings={}, threads=1)
    assert "no sidecar metrics" in capsys.readouterr().out
    assert ModelSpec.load(tmp_path / "x.onnx").raw["metrics"] == {}


def test_train_refuses_a_broken_dataset_with_its_report(tmp_path, per_task_datasets, capsys):
    import shutil

    from perception_core.__main__ import main

    broken = tmp_path / "broken"
    shutil.copytree(per_task_datasets[0].parent, broken)
    (broken / "images" / "train" / "000003.png").write_bytes(b"not a png")
    assert main(["train", "--task", "seg", "--data", str(broken / "dataset.yaml"), "--steps", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "has errors" in err and "000003.png" in err
    assert not (tmp_path / "run").exists()
