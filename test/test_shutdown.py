"""Stopping nodes as the real tools do: a terminal Ctrl-C, a launcher's second SIGINT, SIGTERM.

A terminal's Ctrl-C under ``ros2 launch`` (or ``ros2 run``) sends SIGINT to the whole process
group, and the launcher then forwards one more SIGINT to each child; a service manager sends
SIGTERM. Every node must then exit with status 0 and print no traceback.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack

import pytest
from vision_msgs.msg import Detection2DArray

from graph_utils import spin_until
from perception_core.resources import package_file
from perception_nodes.processes import NodeProcess

pytestmark = pytest.mark.ros
# the nodes of launch/simulation.launch.xml, with their parameter files
GRAPH = [
    ("perception_nodes.multitask_node", "multitask_node.param.yaml"),
    ("perception_nodes.synthetic_camera_node", "synthetic_camera.param.yaml"),
    ("perception_nodes.latency_monitor_node", "latency_monitor.param.yaml"),
    ("perception_nodes.evaluator_node", "evaluator.param.yaml"),
]
CRASH_SIGNS = ("Traceback", "terminate called", "Segmentation fault", "KeyboardInterrupt")


def send(processes: list[NodeProcess], how: str) -> None:
    group = processes[0].pid
    if how == "terminal ctrl-c under launch":  # the group, then launch's own SIGINT to each child
        os.killpg(group, signal.SIGINT)
        time.sleep(0.1)
        for p in processes:
            p.interrupt()
    elif how == "two ctrl-c at once":
        os.killpg(group, signal.SIGINT)
        os.killpg(group, signal.SIGINT)
    elif how == "sigterm":
        os.killpg(group, signal.SIGTERM)


@pytest.mark.parametrize("how", ["terminal ctrl-c under launch", "two ctrl-c at once", "sigterm"])
def test_every_node_exits_cleanly(ros_peer, how):
    node, executor = ros_peer
    answers = []
    node.create_subscription(Detection2DArray, "detections", answers.append, 10)
    with ExitStack() as stack:
        processes = []
        for module, params_file in GRAPH:
            group = processes[0].pid if processes else 0  # one process group, as launch's children
            extra = ("loop_frames:=3",) if "camera" in module else ()
            processes.append(stack.enter_context(NodeProcess(
                module, *extra, params_file=package_file("config", params_file), process_group=group)))
        assert spin_until(executor, lambda: len(answers) >= 3, timeout=90), "the graph never answered"
        # every node is running (past its imports and constructor), as after a launch has come up
        names = {"multitask_perception", "synthetic_camera", "latency_monitor", "evaluator"}
        assert spin_until(executor, lambda: names <= set(node.get_node_names()), timeout=60), node.get_node_names()
        send(processes, how)
        codes = [p.stop(timeout=20) for p in processes]  # stop() only waits: they are already stopping
    for (module, _), code, p in zip(GRAPH, codes, processes):
        assert code == 0, f"{module} exited {code} after {how}:\n{p.output}"
        assert not any(sign in p.output for sign in CRASH_SIGNS), f"{module} after {how}:\n{p.output}"


def test_a_missing_parameter_file_is_refused_with_one_line(tmp_path):
    code, output = NodeProcess("perception_nodes.latency_monitor_node",
                               params_file=tmp_path / "nonexistent.yaml").run_to_exit()
    assert code == 1, output
    assert "parameter file not found" in output and "nonexistent.yaml" in output and "Traceback" not in output


def test_a_stop_during_the_nodes_imports_ends_it_quietly(tmp_path, monkeypatch):
    """The entry points handle stop signals before importing the node: a Ctrl-C in that second is noted,
    and the node is never started (no KeyboardInterrupt out of an import)."""
    import signal as signals

    from perception_nodes import entry, stop

    module = tmp_path / "slow_to_import_node.py"
    module.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while importing\n"
                      "def main():\n    raise AssertionError('a stopped node must not start')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(stop, "requested", [])
    previous = {s: signals.getsignal(s) for s in stop.STOP_SIGNALS}
    try:
        assert entry.run("slow_to_import_node") == 0
        assert stop.requested == [signals.SIGINT]
    finally:
        for s, handler in previous.items():
            signals.signal(s, handler)


def test_every_executable_goes_through_the_entry_points():
    from launch_reader import ROOT, entry_points
    from perception_nodes.entry import NODES

    assert set(entry_points()) == set(NODES)
    assert all(f"perception_nodes.entry:{exe}" in (ROOT / "setup.py").read_text() for exe in NODES)
