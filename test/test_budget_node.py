"""The latency budget in the node: a real node process with a budget it cannot hold switches to the int8 model,
says so on /diagnostics and in its log, keeps publishing, and comes back when the budget is raised live.

The decision rule itself is tested on synthetic latency sequences in test_budget.py.
"""

from __future__ import annotations

import json

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from vision_msgs.msg import Detection2DArray

from graph_utils import set_remote_params, spin_until
from model_fixtures import make_geometry_model
from perception_core.model_spec import ModelSpec, write_sidecar
from perception_core.resources import package_file
from perception_nodes.multitask_node import MultitaskNode
from perception_nodes.processes import NodeProcess

pytestmark = pytest.mark.ros
TARGET = "/multitask_perception"
STATUS = "/multitask_perception: pipeline"


def test_a_budget_it_cannot_hold_switches_to_the_fallback_and_a_raised_budget_brings_the_primary_back(ros_peer):
    node, executor = ros_peer
    status: dict[str, str] = {}
    outputs = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name == STATUS:
                status.clear()
                status.update({kv.key: kv.value for kv in s.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    node.create_subscription(Detection2DArray, "detections", outputs.append, 10)
    primary = ModelSpec.load(package_file("models", "multitask.onnx")).name
    fallback = ModelSpec.load(package_file("models", "multitask_int8.onnx")).name
    # 0.5 ms is below the cost of either model: the node must switch, and can never come back
    with NodeProcess("perception_nodes.synthetic_camera_node", "rate:=15.0", "loop_frames:=3"), \
            NodeProcess("perception_nodes.multitask_node", "latency_budget_ms:=0.5",
                        "diagnostics_period:=0.3") as process:
        assert spin_until(executor, lambda: status.get("budget_switches") == "1", timeout=90), (status,
                                                                                                process.output)
        assert {k: status[k] for k in ("model", "precision", "budget_ms", "budget_running")} == {
            "model": fallback, "precision": "int8", "budget_ms": "0.5", "budget_running": "fallback"}
        assert status["budget_last_switch"].startswith("p95 ") and "> budget 0.50 ms" in status["budget_last_switch"]
        assert float(status["budget_cost_ratio"]) >= 1.0
        assert f"latency budget: {primary} -> {fallback}: p95 " in process.output
        before = len(outputs)
        assert spin_until(executor, lambda: len(outputs) >= before + 15, timeout=30), "no outputs after the switch"
        assert all(d.class_id in ModelSpec.load(package_file("models", "multitask.onnx")).det_classes
                   for msg in outputs for d in (r.hypothesis for det in msg.detections for r in det.results))
        assert spin_until(executor, lambda: status.get("budget_window_p95_ms", "nan") != "nan", timeout=10)
        assert float(status["budget_window_p95_ms"]) > 0.5
        assert status["budget_switches"] == "1", "a budget under the fallback's cost must not bring the primary back"

        assert set_remote_params(node, executor, TARGET, latency_budget_ms=5000.0)[0].successful
        assert spin_until(executor, lambda: status.get("budget_running") == "primary", timeout=30), status
        assert (status["model"], status["budget_switches"], status["budget_ms"]) == (primary, "2", "5000")
        assert "cost ratio" in status["budget_last_switch"] and "< 0.8 x budget 5000.00 ms" in \
            status["budget_last_switch"]
        assert status["errors"] == "0" and status["malformed"] == "0", (status["last_error"], process.output)
        assert process.poll() is None, process.output
    assert f"latency budget: {fallback} -> {primary}: p95 " in process.output


def test_a_fallback_in_other_classes_is_refused_at_start_with_one_line(geometry_model, tmp_path):
    other = make_geometry_model(tmp_path)
    fields = json.loads(other.with_suffix(".onnx.json").read_text())
    fields["det_classes"] = ["pedestrian", "car", "bicycle"]
    write_sidecar(other, {k: v for k, v in fields.items() if k not in ("format_version", "model_file", "sha256")})
    code, output = NodeProcess("perception_nodes.multitask_node", f"model:={geometry_model}",
                               "latency_budget_ms:=20.0", f"fallback_model:={other}").run_to_exit()
    assert code == 1, output
    assert "classes differ" in output and "pedestrian" in output and "Traceback" not in output


def test_the_model_itself_is_no_fallback(context, geometry_model):
    with pytest.raises(ValueError, match="is the model itself"):
        MultitaskNode(context=context, parameter_overrides=[
            Parameter("model", value=str(geometry_model)), Parameter("latency_budget_ms", value=20.0),
            Parameter("fallback_model", value=str(geometry_model))])


def test_a_node_started_without_a_budget_refuses_one_live_and_loads_no_fallback(context, geometry_model):
    node = MultitaskNode(context=context, parameter_overrides=[Parameter("model", value=str(geometry_model))])
    try:
        assert node.fallback is None and node.governor is None
        result = node.set_parameters([Parameter("latency_budget_ms", value=20.0)])[0]
        assert not result.successful and "restart" in result.reason
        assert node.params.latency_budget_ms == 0.0 and node.get_parameter("latency_budget_ms").value == 0.0
        assert node.set_parameters([Parameter("score_threshold", value=0.5)])[0].successful  # others still apply
    finally:
        node.destroy_node()
