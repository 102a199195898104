"""RelabeledSource maps class ids through lookup tables; a model trained on such a label set carries it
through export into its sidecar and the node's Pipeline."""

import numpy as np
import pytest

from dataset_fixtures import RELABELED_SPEC, TINY_HW, export_tiny_model, relabeled_sim_source
from perception_core.datasets import DatasetSpec, FrameSource
from perception_core.datasets.cache import CachedSource, FrameCache
from perception_core.datasets.relabel import DROP, RelabeledSource

OLD = DatasetSpec(("a", "b", "c"), ("x", "y"), name="old")
NEW = DatasetSpec(("p", "q"), ("u",), ignore_label=250, name="new")


def old_source():
    """One 2x3 frame: mask ids 0,1,2 and the old ignore label; detections of classes 0 and 1."""
    mask = np.array([[0, 1, 2], [255, 0, 1]], np.uint8)
    boxes = np.array([[0, 0, 1, 1], [1, 0, 2, 2]], np.float32)
    frames = FrameCache(np.zeros((1, 2, 3, 3), np.uint8), mask[None], boxes, np.array([0, 1], np.int32),
                        np.array([0, 2], np.int64))
    return CachedSource(frames, OLD, "old frames")


def test_tables_map_masks_and_detections():
    source = RelabeledSource(old_source(), NEW, seg_map=[1, 0, 250], det_map=[DROP, 0])
    (sample,) = list(source)
    assert isinstance(source, FrameSource) and source.spec == NEW and len(source) == 1
    assert sample.class_mask.tolist() == [[1, 0, 250], [250, 1, 0]]  # 2 -> ignored, old ignore -> new ignore
    assert sample.detections.class_id.tolist() == [0] and sample.detections.xyxy.tolist() == [[1, 0, 2, 2]]
    assert sample.validated(NEW) is sample


def test_a_missing_table_leaves_that_task_unlabelled():
    (sample,) = list(RelabeledSource(old_source(), NEW, seg_map=[0, 1, 1], det_map=None))
    assert sample.tasks == frozenset({"segmentation"})


@pytest.mark.parametrize("seg_map, det_map, message", [
    ([0, 1], [0, 0], "one entry per class"),
    ([0, 1, 2], [0, 0], "class ids of 2 classes"),
    ([0, 1, 1], [0, 0, 0], "one entry per detection class"),
    ([0, 1, 1], [0, 3], "detection class ids"),
])
def test_bad_tables_are_refused(seg_map, det_map, message):
    with pytest.raises(ValueError, match=message):
        RelabeledSource(old_source(), NEW, seg_map, det_map)


def test_relabeled_simulator_frames_use_the_new_ids():
    sim_frames = list(relabeled_sim_source(3).source)
    for sample, original in zip(relabeled_sim_source(3), sim_frames):
        sample.validated(RELABELED_SPEC)
        assert np.array_equal(sample.image, original.image)
        assert set(np.unique(sample.class_mask)) <= {0, 2, 4, 5, 8, 10, 11}  # where the 7 simulator classes went
        assert (sample.class_mask != original.class_mask).any()
        assert len(sample.detections) == len(original.detections)


def test_a_twelve_class_model_trains_exports_and_runs(tmp_path):
    """12 segmentation / 5 detection classes that are not the simulator's, from data to a running pipeline."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    import json

    from perception_core.model_spec import ModelSpec, sidecar_path
    from perception_core.pipeline.pipeline import Pipeline

    path = export_tiny_model(tmp_path, relabeled_sim_source(8))
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["seg_classes"] == list(RELABELED_SPEC.seg_classes) and len(sidecar["seg_classes"]) == 12
    assert sidecar["det_classes"] == list(RELABELED_SPEC.det_classes) and len(sidecar["det_classes"]) == 5
    assert sidecar["dataset"] == "relabeled-simulator" and sidecar["ignore_label"] == 255
    assert sidecar["training"]["dataset"] == RELABELED_SPEC.to_dict()
    assert ModelSpec.load(path).dataset == RELABELED_SPEC and ModelSpec.load(path).input_hw == TINY_HW

    pipeline = Pipeline.from_model_files([path], threads=1, score_threshold=0.0)
    assert pipeline.seg_classes == RELABELED_SPEC.seg_classes and pipeline.det_classes == RELABELED_SPEC.det_classes
    for sample in relabeled_sim_source(2, "validation"):
        result = pipeline.run_bgr(sample.image)
        assert result.class_mask.shape == sample.image.shape[:2] and result.class_mask.max() < 12
        assert len(result.detections) and result.detections.class_id.max() < 5
