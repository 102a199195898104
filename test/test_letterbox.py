"""letterbox / unletterbox: the training data and the node share these, so they must invert exactly."""

import cv2
import numpy as np
import pytest

from perception_core.pipeline.letterbox import (
    letterbox,
    letterbox_boxes,
    letterbox_transform,
    unletterbox_boxes,
    unletterbox_mask,
)


def test_camera_to_model_transform():
    t = letterbox_transform((480, 640), (256, 320))
    assert (t.scale, t.pad_x, t.pad_y, t.resized_hw) == (0.5, 0, 8, (240, 320))


@pytest.mark.parametrize("src_hw, dst_hw", [((480, 640), (256, 320)), ((480, 640), (384, 512)),
                                            ((480, 640), (320, 320)), ((100, 50), (64, 64))])
def test_image_is_centred_and_padded(src_hw, dst_hw):
    image = np.full((*src_hw, 3), 200, np.uint8)
    out, t = letterbox(image, dst_hw)
    assert out.shape == (*dst_hw, 3) and out.dtype == np.uint8
    h, w = t.resized_hw
    assert (out[t.pad_y:t.pad_y + h, t.pad_x:t.pad_x + w] == 200).all()
    assert (out == 200).sum() == h * w * 3  # everything else is padding
    assert image.min() == 200  # input untouched


def test_known_boxes_round_trip():
    t = letterbox_transform((480, 640), (256, 320))
    boxes = np.array([[0, 0, 640, 480], [100, 50, 300, 250.5]], np.float32)
    model = letterbox_boxes(boxes, t)
    np.testing.assert_allclose(model, [[0, 8, 320, 248], [50, 33, 150, 133.25]])
    np.testing.assert_allclose(unletterbox_boxes(model, t), boxes, atol=1e-4)


def test_boxes_in_padding_clip_to_frame():
    t = letterbox_transform((480, 640), (256, 320))
    np.testing.assert_allclose(unletterbox_boxes(np.array([[-5, 0, 330, 256]], np.float32), t), [[0, 0, 640, 480]])


def test_mask_round_trip_is_exact_for_block_masks():
    """A mask made of 2x2 blocks survives camera -> model (nearest) -> camera unchanged."""
    rng = np.random.default_rng(0)
    mask = np.kron(rng.integers(0, 7, (240, 320)), np.ones((2, 2))).astype(np.uint8)
    small, t = letterbox(mask, (256, 320), pad_value=255, interpolation=cv2.INTER_NEAREST)
    assert (small[:8] == 255).all() and (small[248:] == 255).all()
    np.testing.assert_array_equal(unletterbox_mask(small, t), mask)


def test_identity_letterbox():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out, t = letterbox(image, (3, 4))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(unletterbox_mask(out, t), image)
