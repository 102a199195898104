"""Declared parameters -> one frozen dataclass per node.

Each node describes its parameters once, as dataclass fields whose metadata carries the
description, the allowed range or values, and whether the value may change while the node runs.
``declare_params`` declares them all with ``ParameterDescriptor``s (rclpy enforces numeric
ranges and types, at startup and under ``ros2 param set``) and returns the validated dataclass;
string choices are checked here because rclpy has no descriptor for them.

Live parameters (``live=True``) take effect on the next frame or report: the node passes
``on_change``, which receives the new dataclass. Everything else is read-only: it shapes
subscriptions, engines or pre-rendered data, so changing it means restarting the node, and
rclpy refuses ``ros2 param set`` with "Trying to set a read-only parameter".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

T = TypeVar("T")


class ParameterError(ValueError):
    """A parameter value that the node refuses; the message names the parameter and the rule."""


def param(default: Any, description: str, *, range: Optional[tuple[float, float]] = None,
          choices: Optional[Sequence[str]] = None, live: bool = False) -> Any:
    """A dataclass field that is also a ROS parameter; ``live`` ones may change while the node runs."""
    return dataclasses.field(default=default, metadata={
        "description": description, "range": range, "choices": tuple(choices) if choices else None, "live": live})


def live_fields(params_cls: type) -> tuple[str, ...]:
    """Names of the parameters that ``ros2 param set`` may change at run time."""
    return tuple(f.name for f in dataclasses.fields(params_cls) if f.metadata["live"])


def _descriptor(name: str, field: dataclasses.Field) -> ParameterDescriptor:
    meta = field.metadata
    descriptor = ParameterDescriptor(name=name, description=meta["description"], read_only=not meta["live"])
    low_high = meta["range"]
    if low_high is not None:
        if isinstance(field.default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(low_high[0]), to_value=float(low_high[1]), step=0.0)]
        else:
            descriptor.integer_range = [IntegerRange(
                from_value=int(low_high[0]), to_value=int(low_high[1]), step=1)]
    if meta["choices"]:
        descriptor.additional_constraints = "Must be one of: " + ", ".join(meta["choices"])
    return descriptor


def _check_choice(field: dataclasses.Field, value: Any) -> None:
    choices = field.metadata["choices"]
    if choices and value not in choices:
        raise ParameterError(f"parameter '{field.name}' is {value!r}; must be one of: {', '.join(choices)}")


def declare_params(node: Node, params_cls: type[T], on_change: Optional[Callable[[T], None]] = None) -> T:
    """Declare every field of ``params_cls`` on ``node`` and return the validated values.

    Raises rclpy's InvalidParameterValueException / InvalidParameterTypeException for a
    value out of range or of the wrong type, and ParameterError for a string not in its choices.
    With ``on_change``, a successful ``ros2 param set`` of live parameters calls it with the new
    dataclass; if it raises ValueError, the change is refused with that message and nothing changes.
    """
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    node.declare_parameters("", [(f.name, f.default, _descriptor(f.name, f)) for f in fields.values()])
    values = {name: node.get_parameter(name).value for name in fields}
    for name, field in fields.items():
        _check_choice(field, values[name])
    current = [params_cls(**values)]

    def on_set(parameters: list[Parameter]) -> SetParametersResult:
        # rclpy has already refused read-only parameters, wrong types and out-of-range numbers.
        changes = {p.name: p.value for p in parameters if p.name in fields}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            for name, value in changes.items():
                _check_choice(fields[name], value)
            updated = dataclasses.replace(current[0], **changes)
            if on_change is not None:
                on_change(updated)
        except ValueError as exc:
            node.get_logger().warning(f"refused parameter change {changes}: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        current[0] = updated
        node.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    if live_fields(params_cls):
        node.add_on_set_parameters_callback(on_set)
    return current[0]


def qos_from_params(reliability: str, depth: int) -> QoSProfile:
    """A keep-last QoS profile from the 'reliability' / 'depth' parameter pair."""
    policy = ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)


RELIABILITY_CHOICES = ("best_effort", "reliable")
