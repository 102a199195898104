"""The one evaluation path: any FrameSource, one or several pipelines, worst frames, one report writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perception_core.codec import EncodedImage
from perception_core.datasets import Sample
from perception_core.evaluation.evaluate import (
    SCORE_FLOOR,
    evaluate,
    evaluate_interleaved,
    evaluation_pipelines,
)
from perception_core.evaluation.report import results_json, write_report
from perception_core.pipeline.pipeline import STAGES, TOTAL, Pipeline
from perception_core.types import Detections

HW = (240, 320)


class ListSource:
    """A FrameSource over samples held in memory."""

    def __init__(self, samples, spec, name="list"):
        self.samples, self.spec, self.name = list(samples), spec, name

    def __len__(self):
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)



@pytest.fixture(scope="module")
def pipeline(geometry_model):
    return evaluation_pipelines([geometry_model], threads=1)[geometry_model.name]


def red_frame() -> np.ndarray:
    """The geometry model labels every pixel with red >= 128 as class 1: this frame is class 1 everywhere."""
    image = np.zeros((*HW, 3), np.uint8)
    image[..., 2] = 200
    return image


def truth(left_class: int) -> np.ndarray:
    mask = np.ones(HW, np.uint8)
    mask[:, :HW[1] // 2] = left_class
    return mask


def test_frames_are_scored_and_the_worst_drawn_first(pipeline):
    boxes = Detections.from_lists([[0, 0, 10, 10]], [0])
    samples = [Sample(red_frame(), "perfect", truth(1), boxes), Sample(red_frame(), "half wrong", truth(0), boxes),
               Sample(red_frame(), "unlabelled"), Sample(red_frame(), "unlabelled too")]
    result = evaluate(pipeline, ListSource(samples, pipeline.spec), overlays=3)
    assert result.frames == result.evaluated == 4 and result.decode_errors == []
    assert result.scored_frames == {"segmentation": 2, "detection": 2}
    assert [f["key"] for f in result.worst_frames] == ["half wrong", "perfect", "unlabelled"]
    assert [f["miou"] for f in result.worst_frames] == [0.25, 1.0, None]
    assert result.worst_frames[0]["picture"].shape == (HW[0], 2 * HW[1], 3)  # ground truth | prediction
    assert result.worst_frames[2]["picture"].shape == (*HW, 3)  # prediction only
    iou = result.as_dict()["iou"]
    assert iou[pipeline.spec.seg_classes[0]] == 0.0 and iou[pipeline.spec.seg_classes[1]] == pytest.approx(0.75)
    assert set(result.latency_samples_ms) == {*STAGES, TOTAL} and result.latency_ms()[TOTAL].count == 4


def test_interleaved_pipelines_score_as_each_alone(geometry_model, pipeline):
    samples = [Sample(red_frame(), str(i), truth(i % 2), Detections.from_lists([[8, 8, 40, 40]], [i % 3]))
               for i in range(3)]
    source = ListSource(samples, pipeline.spec)
    pipelines = {"a": pipeline, "b": evaluation_pipelines([geometry_model], threads=1)[geometry_model.name]}
    together = evaluate_interleaved(pipelines, source)
    alone = evaluate(pipeline, source).as_dict()
    for result in together.values():
        r = result.as_dict()
        assert {k: r[k] for k in ("miou", "iou", "map50", "map50_95", "ap50")} == {
            k: alone[k] for k in ("miou", "iou", "map50", "map50_95", "ap50")}


def test_evaluation_keeps_every_peak_above_the_floor_while_the_node_keeps_its_threshold(geometry_model, pipeline):
    node = Pipeline.from_model_files([geometry_model], threads=1)  # the node's default threshold, 0.3
    frame = red_frame()
    assert pipeline.score_threshold == SCORE_FLOOR
    assert len(pipeline.run_bgr(frame).detections) == 2 and len(node.run_bgr(frame).detections) == 1
    node.score_threshold = 0.1  # assignable, as the node's live parameter does
    assert len(node.run_bgr(frame).detections) == 2


def test_frames_labelled_in_other_classes_are_refused(pipeline):
    other = pipeline.spec.relabeled([f"c{i}" for i in range(12)], [f"d{i}" for i in range(5)])
    with pytest.raises(ValueError, match="labelled in"):
        evaluate(pipeline, ListSource([Sample(red_frame(), "x")], other))


def test_a_segmentation_only_set_scores_the_segmentation_head_only(pipeline):
    seg_only = pipeline.spec.relabeled(pipeline.spec.seg_classes, ())
    result = evaluate(pipeline, ListSource([Sample(red_frame(), "x", truth(1))], seg_only))
    assert result.segmentation is not None and result.segmentation.miou == 1.0
    assert result.detection is None and result.scored_frames["detection"] == 0


def test_decode_errors_are_counted(pipeline):
    corrupt = EncodedImage(b"\x00" * 10, "bgr8", 320, 240, 960)
    result = evaluate(pipeline, ListSource([Sample(corrupt, "bad"), Sample(red_frame(), "good")], pipeline.spec))
    assert result.evaluated == 1 and [e["key"] for e in result.decode_errors] == ["bad"]


def test_one_report_for_several_models(tmp_path, geometry_model, pipeline):
    samples = [Sample(red_frame(), str(i), truth(i % 2), Detections.from_lists([[8, 8, 40, 40]], [0]))
               for i in range(2)]
    source = ListSource(samples, pipeline.spec, name="two frames")
    results = evaluate_interleaved({"one.onnx": pipeline, "two.onnx": pipeline}, source, overlays=1)
    report = write_report(tmp_path, results, {"name": source.name}, threads=1)
    names = {f.name for f in tmp_path.iterdir()}
    for stem in ("one", "two"):
        assert {f"{stem}_confusion.png", f"{stem}_pr_curves.png", f"{stem}_latency_histogram.png",
                f"{stem}_overlay_1.png"} <= names
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert data == json.loads(json.dumps(results_json(results, {"name": source.name}, threads=1)))
    assert set(data["models"]) == {"one.onnx", "two.onnx"} and data["models"]["one.onnx"]["threads"] == 1
    text = report.read_text()
    assert "### one.onnx" in text and "### two.onnx" in text and "two frames" in text
