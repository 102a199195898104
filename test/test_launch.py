"""Launch files: a static check that always runs, and launch_pytest runs where launch_pytest exists.

The static check resolves each XML file the way ros2 launch would (test/launch_reader.py):
executables must be entry points, parameter files must name only parameters the node declares
(with the right type), remaps must name topics the node really uses, included files must exist,
every $(var) must be set and every argument described. test_launch_args.py starts the nodes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from launch_reader import ROOT, entry_points, launch
from perception_nodes.evaluator_node import EvaluatorParams
from perception_nodes.latency_monitor_node import LatencyMonitorParams
from perception_nodes.multitask_node import MultitaskNodeParams
from perception_nodes.stage_profiler_node import StageProfilerParams
from perception_nodes.synthetic_camera_node import SyntheticCameraParams

PARAMS = {"multitask_node": MultitaskNodeParams, "synthetic_camera": SyntheticCameraParams,
          "latency_monitor": LatencyMonitorParams, "evaluator": EvaluatorParams,
          "stage_profiler": StageProfilerParams}
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.xml"))
ROS_PARAMS = {"use_sim_time"}


def python_type(value) -> type:
    return tuple if isinstance(value, list) else type(value)


def test_there_are_the_four_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {"perception.launch.xml", "simulation.launch.xml",
                                              "profiling.launch.xml", "replay.launch.xml"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_is_consistent(path):
    reader = launch(path, environ={})  # every substitution, include and node resolved as ros2 launch does
    for name, arg in reader.declared.items():
        assert arg.get("description"), f"{path.name}: arg {name} has no description"
    modules = entry_points()
    for node in reader.nodes:
        assert node.executable in modules, node.executable
        fields = {f.name: f for f in dataclasses.fields(PARAMS[node.executable])}
        for item in node.params:
            if isinstance(item, tuple):
                assert item[0] in fields or item[0] in ROS_PARAMS, f"{node.executable} has no parameter {item[0]}"
            else:
                check_param_file(Path(item), fields)
        source = (ROOT / (modules[node.executable].replace(".", "/") + ".py")).read_text()
        for topic, _ in node.remaps:
            assert f'"{topic}"' in source, f"{node.executable} does not use topic {topic}"


def check_param_file(path: Path, fields: dict) -> None:
    assert path.is_file(), path
    params = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    for name, value in params.items():
        assert name in fields, f"{path.name}: {name} is not a declared parameter"
        expected = type(fields[name].default)
        assert python_type(value) is expected, f"{path.name}: {name} is {type(value).__name__}, not {expected.__name__}"


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.param.yaml")), ids=lambda p: p.name)
def test_every_param_file_belongs_to_a_node(path):
    matches = [exe for exe, cls in PARAMS.items() if path.name.startswith(exe)]
    assert matches, f"{path.name} matches no executable"
    check_param_file(path, {f.name: f for f in dataclasses.fields(PARAMS[matches[0]])})


def test_the_check_catches_a_wrong_type(tmp_path):
    bad = tmp_path / "bad.param.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    threads: 2.5\n")
    with pytest.raises(AssertionError, match="threads"):
        check_param_file(bad, {f.name: f for f in dataclasses.fields(MultitaskNodeParams)})
