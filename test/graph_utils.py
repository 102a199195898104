"""Helpers for tests that run real nodes: wait for matching, call their parameter services.

Processes are started and stopped with the package's own helper, perception_nodes.processes.NodeProcess,
the one the demo and the benchmark use.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python


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
