"""Pipeline stages and timing: outputs land exactly where the letterbox says they must."""

from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest

from model_fixtures import make_geometry_model
from perception_core.codec import EncodedImage, ImageDecodeError
from perception_core.pipeline import stages
from perception_core.pipeline.letterbox import letterbox, letterbox_transform
from perception_core.pipeline.pipeline import STAGES, Pipeline
from perception_core.pipeline.timing import StageTimer


@pytest.fixture(scope="module")
def geometry_pipeline(tmp_path_factory):
    path = make_geometry_model(tmp_path_factory.mktemp("geometry"))
    return Pipeline.from_model_files([path], threads=1, score_threshold=0.5)


def camera_frame(rect=(40, 100, 200, 300)):
    """480x640 BGR frame, red (channel 2) = 255 inside rect (y1, x1, y2, x2)."""
    image = np.zeros((480, 640, 3), np.uint8)
    y1, x1, y2, x2 = rect
    image[y1:y2, x1:x2, 2] = 255
    return image


def test_mask_returns_at_camera_resolution_in_place(geometry_pipeline):
    image = camera_frame()
    result = geometry_pipeline.run_bgr(image)
    assert result.class_mask.shape == (480, 640)
    expected = (image[:, :, 2] >= 128).astype(np.uint8)
    assert np.array_equal(result.class_mask, expected)


def test_boxes_map_back_to_camera_pixels(geometry_pipeline):
    result = geometry_pipeline.run_bgr(camera_frame())
    # 640x480 -> 320x240 (scale 0.5) padded by 8 rows: camera = (model - (0, 8)) / 0.5
    assert np.allclose(result.detections.xyxy, [[20, 20, 100, 100]])
    assert result.detections.class_id.tolist() == [0]  # the 0.2-score box is below the 0.5 threshold


def test_raw_and_compressed_payloads_decode_through_the_same_path(geometry_pipeline):
    image = camera_frame()
    raw = EncodedImage(image.tobytes(), "bgr8", 640, 480, 640 * 3)
    rgb = EncodedImage(np.ascontiguousarray(image[:, :, ::-1]).tobytes(), "rgb8", 640, 480, 640 * 3)
    for encoded in (raw, rgb):
        result = geometry_pipeline.run(encoded)
        assert np.array_equal(result.class_mask, (image[:, :, 2] >= 128).astype(np.uint8))
        assert result.timings_ms["decode"] > 0


def test_malformed_payload_raises_and_leaves_the_pipeline_usable(geometry_pipeline):
    with pytest.raises(ImageDecodeError, match="step"):
        geometry_pipeline.run(EncodedImage(b"\0" * 100, "bgr8", 640, 480, 10))
    assert geometry_pipeline.run_bgr(camera_frame()).class_mask is not None


def test_every_stage_is_timed(geometry_pipeline):
    before = geometry_pipeline.timer.count("infer")
    result = geometry_pipeline.run(EncodedImage(camera_frame().tobytes(), "bgr8", 640, 480, 1920))
    assert set(result.timings_ms) == set(STAGES)
    assert geometry_pipeline.timer.count("infer") == before + 1
    assert all(v >= 0 for v in result.timings_ms.values())


@pytest.mark.parametrize("src_hw", [(480, 640), (1080, 1920), (640, 480), (384, 512), (100, 37)])
def test_preprocess_into_a_reused_buffer_is_bit_exact(src_hw):
    image = np.random.default_rng(0).integers(0, 256, (*src_hw, 3), np.uint8)
    resized, expected_t = letterbox(image, (384, 512))  # the reference implementation
    expected = resized[None]
    batch = np.random.default_rng(1).integers(0, 256, (1, 384, 512, 3), np.uint8)  # a previous frame's leftovers
    t = stages.preprocess_into(image, batch)
    assert t == expected_t and np.array_equal(batch, expected)


def test_pipeline_outputs_do_not_depend_on_the_previous_frame(geometry_pipeline):
    """The pipeline reuses its model input: a frame of another size must not see the last frame's pixels."""
    tall = camera_frame()[:, :360]  # letterboxed with padding columns, which the 640x480 frame fills with content
    before = geometry_pipeline.run_bgr(tall)
    geometry_pipeline.run_bgr(np.full((480, 640, 3), 255, np.uint8))
    after = geometry_pipeline.run_bgr(tall)
    assert np.array_equal(before.class_mask, after.class_mask) and before.detections == after.detections


def test_postprocess_det_threshold_cap_and_padding():
    t = letterbox_transform((480, 640), (256, 320))
    boxes = np.array([[0, 0, 320, 4], [10, 18, 50, 58], [12, 20, 52, 60], [20, 20, 40, 40]], np.float32)
    scores = np.array([0.99, 0.9, 0.8, 0.1], np.float32)
    classes = np.array([1, 0, 1, 2], np.int32)
    dets = stages.postprocess_det(boxes, scores, classes, t, score_threshold=0.5, max_detections=2)
    # the first box lies wholly in the padding rows and vanishes; the cap keeps the best two of the rest
    assert dets.class_id.tolist() == [0, 1] and np.all(np.diff(dets.score) <= 0)
    assert boxes[1, 0] == 10  # inputs untouched


def test_postprocess_seg_crops_padding():
    t = letterbox_transform((480, 640), (256, 320))
    class_map = np.full((256, 320), 3, np.uint8)
    class_map[:8] = 9  # padding rows must not reach the camera mask
    mask = stages.postprocess_seg(class_map, t)
    assert mask.shape == (480, 640) and np.all(mask == 3)


@pytest.mark.parametrize("stages_arg,capacity,expectation", [
    (("a", "b"), 10, does_not_raise()),
    ((), 10, pytest.raises(ValueError)),
    (("a", "a"), 10, pytest.raises(ValueError)),
    (("a",), 0, pytest.raises(ValueError)),
])
def test_timer_validates(stages_arg, capacity, expectation):
    with expectation:
        StageTimer(stages_arg, capacity)


def test_timer_ring_buffer_and_percentiles():
    timer = StageTimer(("x",), capacity=100)
    for ms in range(1, 201):
        timer.record("x", float(ms))
    assert timer.count("x") == 200
    summary = timer.summary()["x"]
    assert summary.count == 100 and summary.p50_ms == pytest.approx(150.5)  # only the newest 100 remain
    t = timer.start()
    t2 = timer.lap("x", t)
    assert t2 >= t and timer.last_ms["x"] >= 0
