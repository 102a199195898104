"""Segmentation and detection metrics on hand-made cases with known answers."""

from contextlib import ExitStack as DoesNotRaise

import numpy as np
import pytest

from perception_core.metrics.detection import DetectionMetric
from perception_core.metrics.segmentation import SegmentationMetric
from perception_core.types import Detections


def test_perfect_segmentation():
    mask = np.array([[0, 1], [2, 2]], np.uint8)
    r = SegmentationMetric(["a", "b", "c"]).update(mask, mask).compute()
    assert r.miou == 1.0 and r.pixel_accuracy == 1.0


def test_known_confusion():
    target = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1]], np.uint8)
    r = SegmentationMetric(["a", "b", "c"]).update([pred], [target]).compute()
    np.testing.assert_array_equal(r.confusion, [[1, 1, 0], [0, 2, 0], [0, 0, 0]])
    np.testing.assert_allclose(r.iou[:2], [0.5, 2 / 3])
    assert np.isnan(r.iou[2])  # absent class does not count
    assert r.miou == pytest.approx((0.5 + 2 / 3) / 2) and r.pixel_accuracy == 0.75


def test_ignore_index_and_reset():
    metric = SegmentationMetric(["a", "b"])
    metric.update(np.array([[1, 1]], np.uint8), np.array([[0, 255]], np.uint8))
    assert metric.confusion.sum() == 1
    metric.reset()
    assert metric.confusion.sum() == 0


@pytest.mark.parametrize("pred_shape, expectation", [((2, 2), DoesNotRaise()), ((2, 3), pytest.raises(ValueError))])
def test_shape_mismatch(pred_shape, expectation):
    with expectation:
        SegmentationMetric(["a", "b"]).update(np.zeros(pred_shape, np.uint8), np.zeros((2, 2), np.uint8))


def test_detection_perfect_and_miss():
    target = Detections.from_lists([[10, 10, 50, 50], [60, 60, 90, 100]], [0, 1])
    perfect = Detections.from_lists([[10, 10, 50, 50], [60, 60, 90, 100]], [0, 1], [0.9, 0.8])
    r = DetectionMetric(["a", "b"]).update(perfect, target).compute()
    assert r.map50 == pytest.approx(1.0) and r.map50_95 == pytest.approx(1.0)
    half = Detections.from_lists([[10, 10, 50, 50], [60, 60, 90, 100]], [0, 0], [0.9, 0.8])  # wrong class
    r = DetectionMetric(["a", "b"]).update([half], [target]).compute()
    assert r.ap50_per_class["a"] == pytest.approx(1.0) and r.ap50_per_class["b"] == 0.0
    assert r.map50 == pytest.approx(0.5) and r.targets == 2


def test_detection_shifted_box_counts_at_iou50_only():
    target = Detections.from_lists([[0, 0, 100, 100]], [0])
    shifted = Detections.from_lists([[20, 0, 120, 100]], [0], [0.9])  # IoU 0.667
    r = DetectionMetric(["a"]).update(shifted, target).compute()
    assert r.map50 == pytest.approx(1.0) and 0.0 < r.map50_95 < 0.5


def test_detection_recall_by_object_size():
    # a 6x6 cone missed, a 12x12 one found, a 40x40 one found: recall per size bin says which was lost
    target = Detections.from_lists([[0, 0, 6, 6], [20, 20, 32, 32], [50, 50, 90, 90]], [0, 0, 0])
    found = Detections.from_lists([[20, 20, 32, 32], [50, 50, 90, 90]], [0, 0], [0.9, 0.8])
    r = DetectionMetric(["a"]).update(found, target).compute()
    assert r.by_size["<8px"] == {"targets": 1, "recall50": 0.0, "ap50": 0.0}
    assert r.by_size["8-16px"]["recall50"] == 1.0 and r.by_size["32-64px"]["recall50"] == 1.0
    assert r.by_size["16-32px"] == {"targets": 0, "recall50": None, "ap50": None}
    assert r.map50 == pytest.approx(2 / 3, abs=0.01)
    assert r.as_dict()["by_size"] == r.by_size


def test_detection_no_predictions():
    r = DetectionMetric(["a"]).update(Detections.empty(), Detections.from_lists([[0, 0, 5, 5]], [0])).compute()
    assert r.map50 == 0.0 and r.images == 1
