"""Parameters under ``ros2 param set``: live ones apply to the next frame, refused ones keep the old value.

The node runs in its own process and is reconfigured through its set_parameters service, which is
what ``ros2 param set`` calls.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from graph_utils import get_remote_params, set_remote_params, spin_until
from model_fixtures import make_geometry_model
from perception_nodes.conversions import array_to_image_msg, ns_to_stamp, stamp_to_ns
from perception_nodes.evaluator_node import Evaluator
from perception_nodes.latency_monitor_node import LatencyMonitor
from perception_nodes.multitask_node import MultitaskNodeParams
from perception_nodes.params import live_fields
from perception_nodes.processes import NodeProcess
from perception_nodes.synthetic_camera_node import SyntheticCamera

pytestmark = pytest.mark.ros
TARGET = "/multitask_perception"
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def test_the_live_parameters_are_the_ones_a_user_tunes():
    assert set(live_fields(MultitaskNodeParams)) == {"score_threshold", "max_detections", "overlay",
                                                    "diagnostics_period", "latency_budget_ms"}


def test_ros2_param_set_reaches_the_next_frame_and_refusals_keep_the_old_value(ros_peer, tmp_path):
    """The geometry model always answers two boxes scored 0.9 and 0.2."""
    node, executor = ros_peer
    outputs: dict[int, Detection2DArray] = {}
    node.create_subscription(Detection2DArray, "detections", lambda m: outputs.__setitem__(
        stamp_to_ns(m.header.stamp), m), 10)
    pub = node.create_publisher(Image, "image", QoSProfile(depth=5))
    frame = array_to_image_msg(np.zeros((48, 64, 3), np.uint8), "bgr8", Header())

    def detections_of_next_frame(stamp: int) -> int:
        frame.header = Header(stamp=ns_to_stamp(stamp), frame_id="cam")
        pub.publish(frame)
        assert spin_until(executor, lambda: stamp in outputs, timeout=20), f"no answer to frame {stamp}"
        return len(outputs[stamp].detections)

    model = make_geometry_model(tmp_path)
    with NodeProcess("perception_nodes.multitask_node", f"model:={model}", "reliability:=reliable",
                     "score_threshold:=0.3") as process:
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, timeout=60)
        assert detections_of_next_frame(1) == 1

        assert [r.successful for r in set_remote_params(node, executor, TARGET, score_threshold=0.1)] == [True]
        assert detections_of_next_frame(2) == 2
        label_info = []
        node.create_subscription(LabelInfo, "segmentation/label_info", label_info.append, LATCHED)
        assert spin_until(executor, lambda: label_info, timeout=10)
        assert label_info[-1].threshold == pytest.approx(0.1)

        assert set_remote_params(node, executor, TARGET, max_detections=1)[0].successful
        assert detections_of_next_frame(3) == 1

        refusals = {
            "out of range": set_remote_params(node, executor, TARGET, score_threshold=1.5)[0],
            "wrong type": set_remote_params(node, executor, TARGET, score_threshold="high")[0],
            "read-only": set_remote_params(node, executor, TARGET, threads=4)[0],
        }
        for what, result in refusals.items():
            assert not result.successful and result.reason, what
        assert "read-only" in refusals["read-only"].reason
        assert get_remote_params(node, executor, TARGET, "score_threshold", "threads", "max_detections") == {
            "score_threshold": pytest.approx(0.1), "threads": 2, "max_detections": 1}
        assert detections_of_next_frame(4) == 1
        assert process.poll() is None, "the node died"


@pytest.mark.parametrize("node_cls,timer,name,value,seconds", [
    (SyntheticCamera, "timer", "rate", 5.0, 0.2),
    (LatencyMonitor, "timer", "report_period", 3.0, 3.0),
    (Evaluator, "timer", "report_period", 7.5, 7.5),
])
def test_periods_change_live_and_out_of_range_is_refused(context, node_cls, timer, name, value, seconds):
    overrides = [Parameter("loop_frames", value=1)] if node_cls is SyntheticCamera else []
    node = node_cls(context=context, parameter_overrides=overrides)
    try:
        before = getattr(node, timer).timer_period_ns
        assert node.set_parameters([Parameter(name, value=value)])[0].successful
        assert getattr(node, timer).timer_period_ns == int(seconds * 1e9) != before
        assert not node.set_parameters([Parameter(name, value=1e6)])[0].successful
        assert getattr(node, timer).timer_period_ns == int(seconds * 1e9)
        assert getattr(node.params, name) == value
    finally:
        node.destroy_node()


def test_the_readme_table_says_which_parameters_are_live():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    said = {}
    for cell, kind in re.findall(r"^\| ([^|]+) \| [^|]+ \| (live|read-only) \|", readme, re.M):
        said.update(dict.fromkeys(re.findall(r"`(\w+)`", cell), kind))
    fields = {f.name for f in dataclasses.fields(MultitaskNodeParams)}
    assert set(said) == fields
    assert {name for name, kind in said.items() if kind == "live"} == set(live_fields(MultitaskNodeParams))
