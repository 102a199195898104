"""Every argument ``ros2 launch <file> --show-args`` advertises takes effect.

For each launch file, all advertised arguments are changed at once from their defaults, the
nodes the file describes are started as ``ros2 launch`` would start them (test/launch_reader.py,
real processes), and each argument is checked where it must land: a parameter value, the topic a
node publishes or subscribes to, or the DDS profile in a process's environment. An argument that
a launch file advertises but ignores or overrides fails here, and so does an advertised argument
this test does not know how to check.
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from graph_utils import get_remote_params, spin_until
from launch_reader import ROOT, launch, show_args
from perception_nodes.processes import NodeProcess

pytestmark = pytest.mark.ros
LAUNCH = ROOT / "launch"
PROFILE_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
TFLITE = ROOT / "models" / "multitask.tflite"


def param_is(node_name: str, name: str, value):
    def check(graph, started):
        got = get_remote_params(graph.node, graph.executor, f"/{node_name}", name)[name]
        assert got == value, f"{node_name}.{name} is {got!r}, launch asked for {value!r}"
    return check


def topic_used(node_name: str, topic: str, side: str):
    def check(graph, started):
        node, executor = graph.node, graph.executor
        info = node.get_publishers_info_by_topic if side == "publishes" else node.get_subscriptions_info_by_topic
        found = spin_until(executor, lambda: node_name in {i.node_name for i in info(topic)}, timeout=20)
        assert found, f"{node_name} does not {'publish' if side == 'publishes' else 'subscribe to'} {topic}"
    return check


def environment_has(variables: tuple[str, ...], value: str):
    def check(graph, started):
        for name, process in started.items():
            environ = dict(item.split("=", 1) for item in
                           Path(f"/proc/{process.process.pid}/environ").read_text().split("\0") if "=" in item)
            for variable in variables:
                assert environ.get(variable) == value, f"{name}: {variable}={environ.get(variable)!r}"
    return check


@pytest.fixture(scope="module")
def changed(tmp_path_factory):
    """Non-default values: a parameter file with a tell-tale threshold, a copy of the loopback profile."""
    folder = tmp_path_factory.mktemp("launch_args")
    params = yaml.safe_load((ROOT / "config" / "multitask_node.param.yaml").read_text())
    params["/**"]["ros__parameters"]["score_threshold"] = 0.77
    (folder / "node.param.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"], folder / "profile.xml")  # tests stay on loopback
    return {"image": "/launch_test/camera", "model": str(TFLITE), "engine": "litert", "precision": "int8",
            "params_file": str(folder / "node.param.yaml"), "dds_profile": str(folder / "profile.xml"),
            "rate": "12.5", "frames": "7"}


def perception_checks(values: dict, use_sim_time: bool) -> dict:
    return {
        "image": topic_used("multitask_perception", values["image"], "subscribes"),
        "model": param_is("multitask_perception", "model", values["model"]),
        "engine": param_is("multitask_perception", "engine", values["engine"]),
        "precision": param_is("multitask_perception", "precision", values["precision"]),
        "params_file": param_is("multitask_perception", "score_threshold", 0.77),
        "use_sim_time": param_is("multitask_perception", "use_sim_time", use_sim_time),
        "dds_profile": environment_has(PROFILE_VARS, values["dds_profile"]),
    }


CASES = {
    # launch file -> (arguments that differ from the file's defaults, extra checks per argument)
    "perception.launch.xml": ({"use_sim_time": "true"}, lambda v: {}),
    "simulation.launch.xml": ({"use_sim_time": "true"}, lambda v: {
        "rate": param_is("synthetic_camera", "rate", 12.5),
        "image": [topic_used("synthetic_camera", v["image"], "publishes"),
                  topic_used("latency_monitor", v["image"], "subscribes")],
        "use_sim_time": param_is("synthetic_camera", "use_sim_time", False)}),
    "replay.launch.xml": ({"use_sim_time": "false"}, lambda v: {
        "use_sim_time": param_is("evaluator", "use_sim_time", False)}),
    "profiling.launch.xml": ({"use_sim_time": "true"}, lambda v: {
        "frames": param_is("stage_profiler", "frames", 7),
        "image": [topic_used("latency_monitor", v["image"], "subscribes"),
                  topic_used("stage_profiler", v["image"], "subscribes")],
        "use_sim_time": [param_is("latency_monitor", "use_sim_time", True),
                         param_is("stage_profiler", "use_sim_time", True)]}),
}


class Graph:
    def __init__(self, node, executor) -> None:
        self.node, self.executor = node, executor


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_advertised_argument_takes_effect(ros_peer, tmp_path, changed, name):
    path = LAUNCH / name
    overrides, extra = CASES[name]
    advertised = show_args(path)
    values = {**{k: v for k, v in changed.items() if k in advertised}, **overrides}
    checks = perception_checks(values, values["use_sim_time"] == "true")
    for argument, more in extra(values).items():
        checks[argument] = [*([checks[argument]] if argument in checks else []),
                            *(more if isinstance(more, list) else [more])]
    assert set(values) == set(advertised), f"{name}: an advertised argument has no changed value to check"
    assert set(checks) >= set(advertised), f"{name}: no check for {set(advertised) - set(checks)}"

    reader = launch(path, **values)
    graph = Graph(*ros_peer)
    with ExitStack() as stack:
        started = {}
        for node in reader.nodes:
            env = {**os.environ, **node.env}
            started[node.name] = stack.enter_context(NodeProcess.of_command(node.command(tmp_path), env=env))
        for argument in advertised:
            for check in checks[argument] if isinstance(checks[argument], list) else [checks[argument]]:
                check(graph, started)
        for node_name, process in started.items():
            assert process.process.poll() is None, f"{node_name} exited:\n{process.stop()}{process.output}"


@pytest.mark.parametrize("name", ["perception.launch.xml", "simulation.launch.xml"])
def test_precision_int8_alone_runs_the_bundled_int8_model(ros_peer, tmp_path, name):
    """With model left empty, precision:=int8 is what picks the file: /diagnostics names the int8 model."""
    from diagnostic_msgs.msg import DiagnosticArray

    node, executor = ros_peer
    seen = {}
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda msg: seen.update(
        {s.name: {v.key: v.value for v in s.values} for s in msg.status}), 10)
    perception = next(n for n in launch(LAUNCH / name, precision="int8").nodes if n.name == "multitask_perception")
    assert perception.param_value("model") == "" and perception.param_value("precision") == "int8"
    with NodeProcess.of_command(perception.command(tmp_path), env={**os.environ, **perception.env}) as process:
        found = spin_until(executor, lambda: any(v.get("model") for v in seen.values()), timeout=60)
        assert found, f"no /diagnostics from the node:\n{process.output}"
    identity = next(v for v in seen.values() if v.get("model"))
    assert (identity["model"], identity["precision"]) == ("multitask_int8", "int8"), identity


@pytest.mark.parametrize("exported,expected", [
    ({}, "fastdds_robot.xml"),
    ({"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"}, "/etc/mine.xml"),
    ({"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/kilted.xml"}, "/etc/kilted.xml"),
])
def test_the_dds_profile_defaults_to_the_robot_one_and_never_overwrites_the_users(exported, expected):
    for path in sorted(LAUNCH.glob("*.launch.xml")):
        for node in launch(path, environ=exported).nodes:
            for variable in PROFILE_VARS:
                assert node.env[variable].endswith(expected), (path.name, node.name, node.env)


def test_the_robot_profile_talks_on_every_interface_and_the_loopback_one_does_not():
    import xml.etree.ElementTree as ET

    ns = {"dds": "http://www.eprosima.com"}
    for profile, whitelisted in (("fastdds_robot.xml", False), ("fastdds_loopback.xml", True)):
        root = ET.parse(ROOT / "config" / profile).getroot()
        shm = root.find(".//dds:transport_descriptor[dds:type='SHM']", ns)
        assert int(shm.find("dds:segment_size", ns).text) == 64 << 20
        udp = root.find(".//dds:transport_descriptor[dds:type='UDPv4']", ns)
        assert (udp.find("dds:interfaceWhiteList", ns) is not None) == whitelisted, profile
        assert root.find(".//dds:useBuiltinTransports", ns).text == "false"


def test_a_missing_params_file_stops_the_launch(tmp_path):
    """launch_ros reads a file given with allow_substs, so a missing one ends ``ros2 launch`` with an error."""
    with pytest.raises(FileNotFoundError):
        launch(LAUNCH / "perception.launch.xml", params_file=str(tmp_path / "missing.yaml"))
    reader = launch(LAUNCH / "replay.launch.xml")  # the files' own parameter files are all there
    assert all(Path(item).is_file() for node in reader.nodes for item in node.params if isinstance(item, str))
