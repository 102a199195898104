"""Declared parameters -> one frozen dataclass per node.

Each node describes its parameters once, as dataclass fields whose metadata carries the
description and the allowed range or values. ``declare_params`` declares them all with
``ParameterDescriptor``s (rclpy enforces numeric ranges and types) and returns the validated
dataclass; string choices are checked here because rclpy has no descriptor for them.
Parameters are read-only after startup: a node is reconfigured by restarting it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

T = TypeVar("T")


class ParameterError(ValueError):
    """A parameter value that the node refuses; the message names the parameter and the rule."""


def param(default: Any, description: str, *, range: Optional[tuple[float, float]] = None,
          choices: Optional[Sequence[str]] = None) -> Any:
    """A dataclass field that is also a ROS parameter."""
    return dataclasses.field(default=default, metadata={
        "description": description, "range": range, "choices": tuple(choices) if choices else None})


def _descriptor(name: str, field: dataclasses.Field) -> ParameterDescriptor:
    meta = field.metadata
    descriptor = ParameterDescriptor(name=name, description=meta["description"], read_only=True)
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


def declare_params(node: Node, params_cls: type[T]) -> T:
    """Declare every field of ``params_cls`` on ``node`` and return the validated values.

    Raises rclpy's InvalidParameterValueException / InvalidParameterTypeException for a
    value out of range or of the wrong type, and ParameterError for a string not in its choices.
    """
    fields = dataclasses.fields(params_cls)
    node.declare_parameters("", [(f.name, f.default, _descriptor(f.name, f)) for f in fields])
    values = {f.name: node.get_parameter(f.name).value for f in fields}
    for f in fields:
        choices = f.metadata["choices"]
        if choices and values[f.name] not in choices:
            raise ParameterError(
                f"parameter '{f.name}' is {values[f.name]!r}; must be one of: {', '.join(choices)}")
    return params_cls(**values)


def qos_from_params(reliability: str, depth: int) -> QoSProfile:
    """A keep-last QoS profile from the 'reliability' / 'depth' parameter pair."""
    policy = ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)


RELIABILITY_CHOICES = ("best_effort", "reliable")
