"""The evaluator's scoring without a ROS graph: pairing by stamp, classes from the model, held frames.

Messages are built with perception_nodes.conversions (rclpy message classes, no graph needed).
"""

from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Header

from perception_core.metrics.detection import DetectionMetric
from perception_core.metrics.online import OnlineAccuracy
from perception_core.metrics.segmentation import SegmentationMetric
from perception_core.types import Detections
from perception_nodes.conversions import class_mask_to_image_msg, detections_to_msg, ns_to_stamp

# A model whose classes are not the simulator's: 12 segmentation and 5 detection classes.
SEG = tuple(f"surface_{i}" for i in range(12))
DET = ("pallet", "forklift", "worker", "box", "door")
FOREIGN = ("crate", "a", "b", "c", "shelf")  # ground truth of another label set (ids 0 and 4 are used)
H, W = 24, 32


def frame(stamp: int, seed: int, truth_names=DET, mask_max: int = 12) -> dict:
    rng = np.random.default_rng(seed)
    truth_mask = rng.integers(0, mask_max, (H, W), np.uint8)
    mask = np.minimum(truth_mask, 11)
    mask[:4] = rng.integers(0, 12, (4, W), np.uint8)  # a few wrong rows
    boxes = [[2, 2, 12, 10], [15, 5, 30, 20]]
    truth = Detections.from_lists(boxes, [0, 4])
    pred = Detections.from_lists([[2, 3, 12, 10], [16, 5, 30, 21], [0, 0, 5, 5]], [0, 4, 2], [0.9, 0.8, 0.4])
    header = Header(stamp=ns_to_stamp(stamp), frame_id="cam")
    return {"segmentation": class_mask_to_image_msg(mask, header, 12),
            "ground_truth/segmentation": class_mask_to_image_msg(truth_mask, header, 255),
            "detections": detections_to_msg(pred, header, DET),
            "ground_truth/detections": detections_to_msg(truth, header, truth_names),
            "arrays": (mask, truth_mask, pred, truth)}


def feed(accuracy: OnlineAccuracy, msgs: dict, now: float = 0.0) -> None:
    for part, msg in msgs.items():
        if part != "arrays":
            accuracy.add(part, msg, now)


def test_frames_wait_for_the_class_names_then_score_with_none_malformed():
    accuracy = OnlineAccuracy(pair_timeout_s=5.0)
    frames = [frame(stamp, seed=stamp) for stamp in range(1, 6)]
    for msgs in frames:
        feed(accuracy, msgs)
    assert accuracy.counts["held"] == 5 and accuracy.counts["paired"] == 0 and accuracy.results() == {}
    assert accuracy.set_seg_classes(SEG)
    assert not accuracy.set_seg_classes(SEG)  # LabelInfo re-latched with a new threshold: nothing changes
    assert accuracy.counts == {"paired": 5, "unpaired": 0, "malformed": 0, "held": 0, "unscored": 0}
    # the same metric objects, fed directly with the same arrays, give the same figures
    seg, det = SegmentationMetric(SEG), DetectionMetric(DET)
    for msgs in frames:
        mask, truth_mask, pred, truth = msgs["arrays"]
        seg.update(mask, truth_mask)
        det.update(pred, truth)
    results = accuracy.results()
    assert results["miou"] == seg.compute().miou and set(results) >= {f"iou_{name}" for name in SEG}
    assert results["map50"] == det.compute().map50 > 0.5


def test_detections_are_matched_by_name_when_no_sidecar_names_them():
    accuracy = OnlineAccuracy(5.0, seg_classes=SEG)
    feed(accuracy, frame(1, seed=1))
    feed(accuracy, frame(2, seed=2, truth_names=FOREIGN))  # the truth's boxes are named "crate" and "shelf"
    assert accuracy.counts["malformed"] == 0 and accuracy.counts["paired"] == 2
    # every name seen, in order: frame 1's outputs and truth, then frame 2's truth
    assert accuracy.detection.class_names == ("pallet", "door", "worker", "crate", "shelf")


def test_a_sidecar_fixes_the_label_set_and_what_does_not_fit_is_malformed():
    accuracy = OnlineAccuracy(5.0, seg_classes=SEG, det_classes=DET)
    feed(accuracy, frame(1, seed=1))
    feed(accuracy, frame(2, seed=2, truth_names=FOREIGN))
    feed(accuracy, frame(3, seed=3, mask_max=13))  # truth holds class 12 of a 12-class model
    assert (accuracy.counts["paired"], accuracy.counts["malformed"]) == (1, 2)
    assert "only 12 classes" in accuracy.last_error


def test_ignored_truth_pixels_are_not_malformed():
    accuracy = OnlineAccuracy(5.0, seg_classes=SEG)
    msgs = frame(1, seed=1)
    truth = msgs["arrays"][1].copy()
    truth[0, :] = 255
    msgs["ground_truth/segmentation"] = class_mask_to_image_msg(truth, Header(stamp=ns_to_stamp(1)), 256)
    feed(accuracy, msgs)
    assert accuracy.counts["paired"] == 1 and accuracy.counts["malformed"] == 0


def test_incomplete_frames_expire_as_unpaired():
    accuracy = OnlineAccuracy(pair_timeout_s=2.0, seg_classes=SEG)
    msgs = frame(1, seed=1)
    accuracy.add("segmentation", msgs["segmentation"], now_s=10.0)
    accuracy.add("detections", msgs["detections"], now_s=10.5)
    assert accuracy.expire(now_s=11.9) == 0
    assert accuracy.expire(now_s=12.1) == 1 and accuracy.counts["unpaired"] == 1
    assert accuracy.results() == {}


def test_held_frames_are_bounded():
    accuracy = OnlineAccuracy(5.0, held_limit=2)
    for stamp in range(1, 5):
        feed(accuracy, frame(stamp, seed=stamp))
    assert accuracy.counts["held"] == 2 and accuracy.counts["unscored"] == 2
    accuracy.set_seg_classes(SEG)
    assert accuracy.counts["paired"] == 2


def test_another_models_label_set_starts_afresh():
    accuracy = OnlineAccuracy(5.0, seg_classes=SEG)
    feed(accuracy, frame(1, seed=1))
    assert accuracy.set_seg_classes(SEG[:-1] + ("other",))
    assert accuracy.counts["paired"] == 0 and accuracy.results() == {}
    with pytest.raises(ValueError, match="without segmentation classes"):
        accuracy.set_seg_classes(())
