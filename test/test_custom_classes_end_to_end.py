"""A label set that is not the simulator's, from data to model to node to evaluator to report.

12 segmentation and 5 detection classes (the simulator's frames relabelled through lookup tables,
test/dataset_fixtures.py): a tiny model trains a few steps on them and is exported; the multitask
node runs it and latches LabelInfo with those 12 names; the evaluator node, told nothing about the
classes, scores it from the latched LabelInfo with zero malformed frames; the offline evaluation
reports per-class figures under those names.
"""

from __future__ import annotations

import json

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from dataset_fixtures import RELABELED_SPEC, export_tiny_model, relabeled_sim_source
from graph_utils import spin_until
from perception_core.evaluation.evaluate import SCORE_FLOOR, evaluate
from perception_core.evaluation.report import write_report
from perception_core.pipeline.pipeline import Pipeline
from perception_nodes.conversions import array_to_image_msg, class_mask_to_image_msg, detections_to_msg, ns_to_stamp
from perception_nodes.processes import NodeProcess

pytest.importorskip("tensorflow", reason="training the tiny model needs the training requirements")
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
FRAMES = 6


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp("custom_classes"), relabeled_sim_source(32))


def test_the_offline_evaluation_reports_the_datasets_class_names(tiny_model, tmp_path):
    source = relabeled_sim_source(FRAMES, split="validation")
    result = evaluate(Pipeline.from_model_files([tiny_model], threads=1, score_threshold=SCORE_FLOOR), source)
    report = write_report(tmp_path, {"tiny": result}, {"name": source.name})
    data = result.as_dict()
    assert list(data["iou"]) == list(RELABELED_SPEC.seg_classes)
    assert list(data["ap50"]) == list(RELABELED_SPEC.det_classes)
    written = json.loads((tmp_path / "evaluation.json").read_text())
    assert "traffic_cone" in json.dumps(written) and "sky" not in json.dumps(written)
    text = (report if report.suffix == ".md" else tmp_path / "report.md").read_text()
    assert all(name in text for name in ("lane_marking", "overhead", "cyclist"))


@pytest.mark.ros
def test_the_node_and_the_evaluator_run_a_model_with_other_classes(ros_peer, tiny_model):
    node, executor = ros_peer
    label_info, answers, statuses = [], set(), {}
    node.create_subscription(LabelInfo, "segmentation/label_info", label_info.append, LATCHED)
    node.create_subscription(Detection2DArray, "detections", lambda m: answers.add(m.header.stamp.sec), 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.update(
        {s.name.lstrip("/"): {kv.key: kv.value for kv in s.values} for s in m.status}), 10)
    reliable = QoSProfile(depth=FRAMES)
    image_pub = node.create_publisher(Image, "image", reliable)
    mask_pub = node.create_publisher(Image, "ground_truth/segmentation", reliable)
    truth_pub = node.create_publisher(Detection2DArray, "ground_truth/detections", reliable)
    evaluator = lambda: statuses.get("evaluator: accuracy", {})  # noqa: E731
    with NodeProcess("perception_nodes.multitask_node", f"model:={tiny_model}", "reliability:=reliable",
                     "depth:=10", "threads:=1") as perception, NodeProcess(
            "perception_nodes.evaluator_node", "report_period:=0.5") as scorer:
        assert spin_until(executor, lambda: label_info and mask_pub.get_subscription_count()
                          and image_pub.get_subscription_count(), timeout=90), "nodes did not come up"
        assert [c.class_name for c in label_info[-1].class_map] == list(RELABELED_SPEC.seg_classes)
        samples = list(relabeled_sim_source(FRAMES, split="validation"))

        def send(stamp_s: int, sample) -> None:
            header = Header(stamp=ns_to_stamp(stamp_s * 1_000_000_000), frame_id="camera")
            mask_pub.publish(class_mask_to_image_msg(sample.class_mask, header, RELABELED_SPEC.num_seg_classes))
            truth_pub.publish(detections_to_msg(sample.detections, header, RELABELED_SPEC.det_classes))
            image_pub.publish(array_to_image_msg(sample.image, "bgr8", header))
            assert spin_until(executor, lambda: stamp_s in answers, timeout=30), f"no answer to frame {stamp_s}"

        # Endpoints visible in the graph are not yet matched pairwise: warm up until one frame is scored.
        for warm_up in range(100, 130):
            send(warm_up, samples[0])
            if spin_until(executor, lambda: int(evaluator().get("paired", 0)) >= 1, timeout=2):
                break
        scored_before = int(evaluator()["paired"])
        for index, sample in enumerate(samples, start=1):
            send(index, sample)
        assert spin_until(executor, lambda: int(evaluator().get("paired", 0)) == scored_before + FRAMES,
                          timeout=30), evaluator()
        assert evaluator()["malformed"] == "0", evaluator()
        assert {f"iou_{name}" for name in RELABELED_SPEC.seg_classes} <= set(evaluator())
        assert perception.process.poll() is None and scorer.process.poll() is None
