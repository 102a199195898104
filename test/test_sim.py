"""perception_core.sim: determinism, ground-truth consistency, perspective and the held-out split."""

import cv2
import numpy as np
import pytest

from perception_core.sim import TRAIN_SEED, VALIDATION_SEED, render_batch, render_scene
from perception_core.sim.__main__ import main as sim_main
from perception_core.sim.classes import SIM_SPEC
from perception_core.sim.render import LabeledFrame

SEG_CLASSES, DET_CLASSES = SIM_SPEC.seg_classes, SIM_SPEC.det_classes

W, H = 320, 240
SCENES = 40


@pytest.fixture(scope="module")
def scenes() -> list[LabeledFrame]:
    return render_batch(TRAIN_SEED, range(SCENES), W, H)


def same_frame(a: LabeledFrame, b: LabeledFrame) -> bool:
    return (np.array_equal(a.frame.image, b.frame.image) and np.array_equal(a.class_mask, b.class_mask)
            and a.detections == b.detections)


def test_same_seed_and_index_give_identical_frames():
    assert same_frame(render_scene(TRAIN_SEED, 5, W, H), render_scene(TRAIN_SEED, 5, W, H))


def test_different_index_gives_a_different_scene():
    a, b = render_scene(TRAIN_SEED, 5, W, H), render_scene(TRAIN_SEED, 6, W, H)
    assert not np.array_equal(a.class_mask, b.class_mask)
    assert not np.array_equal(a.frame.image, b.frame.image)


def test_validation_split_differs_from_train():
    for index in range(3):
        assert not np.array_equal(render_scene(TRAIN_SEED, index, W, H).class_mask,
                                  render_scene(VALIDATION_SEED, index, W, H).class_mask)


@pytest.mark.parametrize("width, height", [(160, 120), (320, 240), (640, 480), (1920, 1080)])
def test_shapes_and_dtypes(width, height):
    sample = render_scene(TRAIN_SEED, 1, width, height)
    assert sample.frame.image.shape == (height, width, 3) and sample.frame.image.dtype == np.uint8
    assert sample.class_mask.shape == (height, width) and sample.class_mask.dtype == np.uint8
    assert sample.detections.xyxy.dtype == np.float32 and sample.detections.class_id.dtype == np.int32


def test_layout_does_not_depend_on_resolution():
    small = render_scene(TRAIN_SEED, 3, W, H).class_mask
    large = render_scene(TRAIN_SEED, 3, 2 * W, 2 * H).class_mask
    downsampled = cv2.resize(large, (W, H), interpolation=cv2.INTER_NEAREST)
    assert np.mean(downsampled == small) > 0.97


def test_mask_ids_valid_and_every_class_appears(scenes):
    seen = set()
    for sample in scenes[:20]:
        assert int(sample.class_mask.max()) < len(SEG_CLASSES)
        seen.update(np.unique(sample.class_mask).tolist())
    assert seen == set(range(len(SEG_CLASSES)))


def test_scenes_vary_in_object_count(scenes):
    counts = [len(sample.detections) for sample in scenes]
    assert min(counts) <= 1 and max(counts) >= 5


def test_boxes_are_tight_around_visible_pixels_of_their_class(scenes):
    min_side = 4 * H / 480
    purities = []
    for sample in scenes:
        for (x1, y1, x2, y2), class_id in zip(sample.detections.xyxy.astype(int), sample.detections.class_id,
                                              strict=True):
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
            assert min(x2 - x1, y2 - y1) >= min_side
            own = sample.class_mask[y1:y2, x1:x2] == SEG_CLASSES.index(DET_CLASSES[class_id])
            # Tight: every edge row and column of the box holds a pixel of the object's class.
            assert own[0].any() and own[-1].any() and own[:, 0].any() and own[:, -1].any()
            purities.append(own.mean())
    assert len(purities) > 2 * SCENES
    assert min(purities) > 0.2 and np.median(purities) > 0.5


def test_boxes_box_integer_pixels_with_exclusive_far_edge(scenes):
    xyxy = np.concatenate([sample.detections.xyxy for sample in scenes])
    assert np.array_equal(xyxy, np.round(xyxy))


def test_objects_lower_in_the_image_are_larger(scenes):
    """Perspective: an object's foot row (box bottom) predicts its size."""
    bottoms, heights = [], []
    for sample in scenes:
        boxes = sample.detections.xyxy
        keep = boxes[:, 3] < H  # boxes cut by the bottom edge have no reliable size
        bottoms += boxes[keep, 3].tolist()
        heights += (boxes[keep, 3] - boxes[keep, 1]).tolist()
    bottoms, heights = np.array(bottoms), np.array(heights)
    lower = bottoms > np.median(bottoms)
    assert heights[lower].mean() > 2 * heights[~lower].mean()
    assert np.corrcoef(bottoms, heights)[0, 1] > 0.5


def test_cli_writes_one_panel_per_sample(tmp_path, capsys):
    sim_main(["--out", str(tmp_path), "--count", "2", "--width", "160", "--height", "120", "--scale", "1"])
    panels = sorted(tmp_path.glob("*.png"))
    assert len(panels) == 2
    assert cv2.imread(str(panels[0])).shape == (120, 3 * 160, 3)
    assert "frames/s" in capsys.readouterr().out
