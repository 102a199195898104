"""Helpers for tests that run real nodes in real processes: start, wait for matching, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python


class NodeProcess:
    """``python -m module --ros-args ...`` in its own process; stopped with SIGINT like Ctrl-C.

    ``params_file`` is loaded first (as the launch files load config/*.param.yaml), so the
    "name:=value" ``params`` override it.
    """

    def __init__(self, module: str, *params: str, params_file: str | Path | None = None,
                 process_group: int | None = None, env: dict | None = None) -> None:
        args = ["--params-file", str(params_file)] if params_file is not None else []
        args += [a for p in params for a in ("-p", p)]
        self.cmd = [sys.executable, "-m", module, "--ros-args", *args]
        self.process_group = process_group  # 0: lead a new group; a pid: join that group
        self.env = env
        self.process: subprocess.Popen | None = None
        self.output = ""

    @classmethod
    def of_command(cls, cmd: list[str], env: dict | None = None) -> NodeProcess:
        """A command line built elsewhere (e.g. what a launch file would start)."""
        process = cls("", env=env)
        process.cmd = list(cmd)
        return process

    def __enter__(self) -> NodeProcess:
        group = self.process_group
        self.process = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=self.env,
                                        preexec_fn=None if group is None else lambda: os.setpgid(0, group))
        return self

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.output, _ = self.process.communicate()
        return self.process.returncode

    def __exit__(self, *exc) -> None:
        self.stop()

    def run_to_exit(self, timeout: float = 60.0) -> tuple[int, str]:
        """For nodes expected to exit on their own (bad configuration)."""
        self.__enter__()
        self.output, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, self.output


def spin_until(executor: SingleThreadedExecutor, condition: Callable[[], bool], timeout: float) -> bool:
    """Spin until ``condition()`` holds or ``timeout`` seconds pass; never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return condition()


def _call(node: Node, executor: SingleThreadedExecutor, srv_type, service: str, request, timeout: float = 20.0):
    client = node.create_client(srv_type, service)
    try:
        assert spin_until(executor, client.service_is_ready, timeout), f"no service {service}"
        future = client.call_async(request)
        assert spin_until(executor, future.done, timeout), f"{service} did not answer"
        return future.result()
    finally:
        node.destroy_client(client)


def set_remote_params(node: Node, executor: SingleThreadedExecutor, target: str, **values):
    """What ``ros2 param set`` does: the target's set_parameters service; returns the SetParametersResults."""
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return _call(node, executor, SetParameters, f"{target}/set_parameters", request).results


def get_remote_params(node: Node, executor: SingleThreadedExecutor, target: str, *names: str) -> dict:
    """What ``ros2 param get`` does: the target's get_parameters service."""
    response = _call(node, executor, GetParameters, f"{target}/get_parameters", GetParameters.Request(names=names))
    return {name: parameter_value_to_python(value) for name, value in zip(names, response.values)}
