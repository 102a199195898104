"""Declared parameters: ranges, choices and types are enforced with messages that name the parameter."""

from contextlib import nullcontext as does_not_raise

import pytest
import rclpy
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter

from perception_nodes.params import ParameterError, declare_params
from perception_nodes.processes import NodeProcess
from perception_nodes.synthetic_camera_node import SyntheticCameraParams


def make_node(context, **overrides):
    params = [Parameter(k, value=v) for k, v in overrides.items()]
    return rclpy.create_node("params_test", context=context, parameter_overrides=params)


@pytest.mark.parametrize("overrides,expectation", [
    ({}, does_not_raise()),
    ({"width": 1920, "height": 1080, "encoding": "mono8", "transport": "compressed"}, does_not_raise()),
    ({"width": 0}, pytest.raises(InvalidParameterValueException)),
    ({"rate": 1000.0}, pytest.raises(InvalidParameterValueException)),
    ({"jpeg_quality": 101}, pytest.raises(InvalidParameterValueException)),
    ({"encoding": "yuv422"}, pytest.raises(ParameterError, match="encoding.*must be one of")),
    ({"reliability": "sometimes"}, pytest.raises(ParameterError, match="reliability")),
    ({"width": "wide"}, pytest.raises(InvalidParameterTypeException)),
    ({"rate": 30}, pytest.raises(InvalidParameterTypeException)),
])
def test_camera_parameters_are_validated(context, overrides, expectation):
    node = make_node(context, **overrides)
    with expectation:
        params = declare_params(node, SyntheticCameraParams)
        for key, value in overrides.items():
            assert getattr(params, key) == value
    node.destroy_node()


def test_descriptors_carry_ranges_and_are_read_only(context):
    node = make_node(context)
    declare_params(node, SyntheticCameraParams)
    descriptor = node.describe_parameter("width")
    assert descriptor.integer_range[0].from_value == 16 and descriptor.read_only
    assert "bgr8" in node.describe_parameter("encoding").additional_constraints
    result = node.set_parameters([Parameter("width", value=800)])[0]
    assert not result.successful
    node.destroy_node()


@pytest.mark.ros
@pytest.mark.parametrize("bad,needle", [("width:=0", "width"), ("encoding:=yuv422", "must be one of"),
                                        ("rate:=fast", "rate")])
def test_camera_refuses_bad_parameters_with_one_line(bad, needle):
    code, output = NodeProcess("perception_nodes.synthetic_camera_node", bad).run_to_exit()
    assert code == 1, output
    assert needle in output and "Traceback" not in output, output
