"""The memory comparison as the team lives with it (perception_nodes.memory_bench): its pure parts, the
seg_only and det_only models in the real node publishing only their own head, and a short real run."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from graph_utils import spin_until
from perception_core.engines.onnxruntime_engine import OnnxRuntimeEngine
from perception_core.model_spec import ModelSpec
from perception_core.resources import package_file
from perception_nodes import memory_bench
from perception_nodes.processes import NodeProcess, stop_nodes

MODELS = package_file("models", "multitask.onnx").parent


@pytest.mark.parametrize("variant", memory_bench.VARIANTS)
def test_weightless_twin_has_the_models_inputs_outputs_and_sidecar_but_no_weights(tmp_path, variant):
    model_path = MODELS / f"{variant}.onnx"
    twin_path = memory_bench.weightless_twin(model_path, tmp_path)
    model, twin = onnx.load(model_path), onnx.load(twin_path)
    assert [(v.name, v.type) for v in twin.graph.input] == [(v.name, v.type) for v in model.graph.input]
    assert [(v.name, v.type) for v in twin.graph.output] == [(v.name, v.type) for v in model.graph.output]
    assert sum(np.prod(i.dims) for i in twin.graph.initializer) <= 3 * len(twin.graph.output)  # output shapes only
    spec, twin_spec = ModelSpec.load(model_path), ModelSpec.load(twin_path)  # sha256 of the twin checked
    assert (twin_spec.outputs, twin_spec.dataset, twin_spec.input_shape) == (spec.outputs, spec.dataset,
                                                                            spec.input_shape)
    outputs = OnnxRuntimeEngine(twin_path).infer({spec.input_name: np.full(spec.input_shape, 90, np.uint8)})
    assert set(outputs) == set(spec.outputs) and not any(a.any() for a in outputs.values())


def test_process_memory_reads_vmrss_pss_and_uss_of_a_process():
    held = np.ones(64 << 20, np.uint8)  # 64 MiB this process has written: private, resident
    got = memory_bench.process_memory_mib(os.getpid())
    assert set(got) == {"vmrss", "vmhwm", "rss_anon", "rss_file", "rss_shmem", "pss", "uss"}
    assert got["uss"] <= got["pss"] <= got["vmrss"] <= got["vmhwm"]
    assert got["rss_anon"] >= 64 and got["uss"] >= 64
    assert held[-1] == 1


@pytest.mark.ros
def test_seg_only_and_det_only_models_run_in_the_node_and_publish_only_their_head(ros_peer):
    node, executor = ros_peer
    got = {(ns, head): [] for ns in ("seg", "det") for head in ("segmentation", "detections", "label_info")}
    for ns in ("seg", "det"):
        node.create_subscription(Image, f"{ns}/segmentation", got[ns, "segmentation"].append, 10)
        node.create_subscription(Detection2DArray, f"{ns}/detections", got[ns, "detections"].append, 10)
        node.create_subscription(LabelInfo, f"{ns}/segmentation/label_info", got[ns, "label_info"].append,
                                 QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    processes = {"camera": NodeProcess("perception_nodes.synthetic_camera_node", "rate:=10.0", "loop_frames:=2")}
    for ns, variant in (("seg", "seg_only"), ("det", "det_only")):
        processes[ns] = NodeProcess("perception_nodes.multitask_node", f"model:={MODELS / variant}.onnx",
                                    "threads:=1", namespace=f"/{ns}")
        processes[ns].cmd += ["-r", "image:=/image"]
    try:
        for process in processes.values():
            process.start()
        assert spin_until(executor, lambda: len(got["seg", "segmentation"]) >= 3 and len(got["det", "detections"]) >= 3,
                          timeout=90), {k: len(v) for k, v in got.items()}
        spin_until(executor, lambda: False, timeout=1.0)  # one more second for a stray message of the other head
    finally:
        failures = stop_nodes(processes)
    assert failures == []
    assert got["seg", "detections"] == [] and got["det", "segmentation"] == []
    assert {(m.height, m.width, m.encoding) for m in got["seg", "segmentation"]} == {(480, 640, "mono8")}
    names = ModelSpec.load(MODELS / "seg_only.onnx").seg_classes
    assert [c.class_name for c in got["seg", "label_info"][-1].class_map] == list(names)
    assert list(got["det", "label_info"][-1].class_map) == []  # no segmentation classes: scored as detection only


@pytest.mark.ros
@pytest.mark.slow
def test_a_short_real_run_reports_every_node_and_the_ratios():
    got = memory_bench.run_memory(MODELS, threads=1, frames=5, samples=2, interval=0.5)
    assert got["process_failures"] == []
    assert set(got["nodes"]) == set(memory_bench.VARIANTS)
    for node in got["nodes"].values():
        assert node["processed"] >= 5
        assert set(node["memory_mib"]) >= {"vmrss", "pss", "uss"} and node["memory_mib"]["vmrss"] > 50
        # the twin is the same node without the network: it must cost less than the model does
        assert 0 < node["model_mib"]["vmrss"] < node["memory_mib"]["vmrss"]
    published = {name: {h for h, n in node["published_in_window"].items() if n} for name, node in got["nodes"].items()}
    assert published == {"multitask": {"segmentation", "detections"}, "seg_only": {"segmentation"},
                         "det_only": {"detections"}}
    assert set(got["ratios"]) == {f"{p}{k}_node_over_two_nodes" for p in ("", "model_") for k in ("rss", "pss", "uss")}
    assert all(0 < v < 1 for v in got["ratios"].values())
    assert got["tensorrt"]["source"].startswith(("estimate", "read from plans"))
    assert 0 < got["tensorrt"]["fp16"]["multitask_over_separate"] < 1
