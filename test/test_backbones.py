"""The backbone table: every entry's pyramid levels at strides 4..32, weights from a file bit-exact, and
ImageNet weights that cannot be downloaded failing with one line that names the file."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from perception_core.datasets import DatasetSpec  # noqa: E402
from perception_core.training.backbones import BACKBONES, DEFAULT_BACKBONE  # noqa: E402

SPEC = DatasetSpec(("ground", "thing"), ("thing",), name="tiny")
HW = (64, 96)


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_each_backbone_taps_strides_4_to_32(arch):
    from perception_core.training.model import backbone_class, build_model

    backbone = backbone_class(arch)(HW + (3,), arch=arch, name="backbone")
    assert {k: tuple(v.shape[1:3]) for k, v in backbone.pyramid_outputs.items()} == {
        "P2": (16, 24), "P3": (8, 12), "P4": (4, 6), "P5": (2, 3)}
    assert backbone.get_config()["arch"] == arch
    model = build_model("multitask", HW + (3,), SPEC, backbone=arch, neck_channels=16, head_channels=16)
    assert model.backbone.arch == arch and tuple(model.output["det_heatmap"].shape) == (None, 16, 24, 1)


def test_the_default_backbone_keeps_the_weight_file_layout_of_earlier_runs(tmp_path):
    """Keras names a model's layers in a weight file by class: MobileNetV2 entries keep the class earlier runs used."""
    import h5py

    from perception_core.training.model import build_model

    model = build_model("multitask", HW + (3,), SPEC, alpha=0.35, neck_channels=16, head_channels=16)
    assert model.backbone.arch == DEFAULT_BACKBONE
    model.save_weights(tmp_path / "m.weights.h5")
    with h5py.File(tmp_path / "m.weights.h5") as f:
        assert "mobile_net_v2_backbone" in f["layers"]


@pytest.mark.parametrize("arch", ["mobilenet_v2_0.5", "mobilenet_v3_small"])
def test_backbone_weights_saved_to_a_file_load_back_bit_exact(tmp_path, arch):
    import keras

    from perception_core.training.model import build_model

    keras.utils.set_random_seed(1)
    trained = build_model("seg_only", HW + (3,), SPEC, backbone=arch, neck_channels=16, head_channels=16)
    rng = np.random.default_rng(0)
    for v in trained.backbone.weights:  # weights no fresh model could have
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    path = tmp_path / "backbone.weights.h5"
    trained.backbone.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded = build_model("multitask", HW + (3,), SPEC, backbone=arch, neck_channels=16, head_channels=16,
                         backbone_weights=str(path))
    fresh = build_model("multitask", HW + (3,), SPEC, backbone=arch, neck_channels=16, head_channels=16)
    for a, b, c in zip(trained.backbone.weights, loaded.backbone.weights, fresh.backbone.weights, strict=True):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert not np.array_equal(a.numpy(), c.numpy())


def test_backbone_weights_path_that_does_not_exist_is_one_line():
    from perception_core.training.model import BackboneWeightsError, build_model

    with pytest.raises(BackboneWeightsError, match="no such file"):
        build_model("seg_only", HW + (3,), SPEC, backbone_weights="/nonexistent/backbone.weights.h5")


def test_imagenet_weights_offline_fail_with_one_line_naming_the_file(tmp_path):
    """Keras's own download, made to fail here for sure (an unreachable proxy, an empty Keras cache)."""
    code = ("from perception_core.datasets import DatasetSpec\n"
            "from perception_core.training.model import BackboneWeightsError, build_model\n"
            "try:\n"
            "    build_model('seg_only', (64, 96, 3), DatasetSpec(('a', 'b'), ()), backbone='mobilenet_v2_1.0',"
            " backbone_weights='imagenet')\n"
            "except BackboneWeightsError as err:\n"
            "    print('ERROR', err)\n")
    env = {"HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / "keras"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1, result.stdout + result.stderr
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    assert name in lines[0] and f"{tmp_path / 'keras' / 'models'}/" in lines[0]
