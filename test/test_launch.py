"""Launch files: a static check that always runs, and launch_pytest runs where launch_pytest exists.

The static check reads each XML file the way ros2 launch would resolve it: executables must be
entry points, parameter files must name only parameters the node declares (with the right type),
remaps must name topics the node really uses, included files must exist, and every $(var)
must be declared.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from perception_nodes.evaluator_node import EvaluatorParams
from perception_nodes.latency_monitor_node import LatencyMonitorParams
from perception_nodes.multitask_node import MultitaskNodeParams
from perception_nodes.stage_profiler_node import StageProfilerParams
from perception_nodes.synthetic_camera_node import SyntheticCameraParams

ROOT = Path(__file__).resolve().parents[1]
SHARE = "$(find-pkg-share multitask_perception)"
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.xml"))
PARAMS = {"multitask_node": MultitaskNodeParams, "synthetic_camera": SyntheticCameraParams,
          "latency_monitor": LatencyMonitorParams, "evaluator": EvaluatorParams,
          "stage_profiler": StageProfilerParams}
MODULES = {"multitask_node": "multitask_node", "synthetic_camera": "synthetic_camera_node",
           "latency_monitor": "latency_monitor_node", "evaluator": "evaluator_node",
           "stage_profiler": "stage_profiler_node"}
ROS_PARAMS = {"use_sim_time"}


def entry_points() -> set[str]:
    return set(re.findall(r'"(\w+) = perception_nodes\.\w+:main"', (ROOT / "setup.py").read_text()))


def resolve(value: str, variables: dict[str, str]) -> str:
    value = value.replace(SHARE, str(ROOT))
    return re.sub(r"\$\(var (\w+)\)", lambda m: variables[m.group(1)], value)


def declared_variables(root: ET.Element) -> dict[str, str]:
    variables = {a.get("name"): a.get("default", "") for a in root.iter("arg")}
    variables.update({a.get("name"): a.get("value") for a in root.iter("let")})
    return {k: v.replace(SHARE, str(ROOT)) for k, v in variables.items()}


def python_type(value) -> type:
    return tuple if isinstance(value, list) else type(value)


def test_there_are_the_four_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {"perception.launch.xml", "simulation.launch.xml",
                                              "profiling.launch.xml", "replay.launch.xml"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_is_consistent(path):
    root = ET.parse(path).getroot()
    assert root.tag == "launch"
    variables = declared_variables(root)
    for used in re.findall(r"\$\(var (\w+)\)", path.read_text()):
        assert used in variables, f"{path.name}: $(var {used}) is not declared"
    for arg in root.iter("arg"):
        if arg.get("default") is not None:
            assert arg.get("description"), f"{path.name}: arg {arg.get('name')} has no description"
    for include in root.iter("include"):
        assert Path(resolve(include.get("file"), variables)).is_file(), include.get("file")
    for node in root.iter("node"):
        exe = node.get("exec")
        assert node.get("pkg") == "multitask_perception" and exe in entry_points(), exe
        fields = {f.name: f for f in dataclasses.fields(PARAMS[exe])}
        for p in node.findall("param"):
            if p.get("from"):
                param_file = Path(resolve(p.get("from"), variables))
                check_param_file(param_file, fields)
            else:
                assert p.get("name") in fields or p.get("name") in ROS_PARAMS, f"{exe} has no parameter {p.get('name')}"
        source = (ROOT / "perception_nodes" / f"{MODULES[exe]}.py").read_text()
        for remap in node.findall("remap"):
            assert f'"{remap.get("from")}"' in source, f"{exe} does not use topic {remap.get('from')}"


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
