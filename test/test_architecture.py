"""Rules that keep the layout honest: the core stays free of ROS, the node free of TensorFlow."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def python_files(package: str, exclude: str = "") -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    return [f for f in files if not (exclude and exclude in f.relative_to(ROOT).parts)]


ROS_MODULES = {"rclpy", "sensor_msgs", "std_msgs", "vision_msgs", "diagnostic_msgs", "geometry_msgs",
               "rcl_interfaces", "builtin_interfaces", "launch", "launch_ros"}


@pytest.mark.parametrize("path", python_files("perception_core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_never_imports_ros(path):
    assert not imported_modules(path) & ROS_MODULES, f"{path} imports ROS"


@pytest.mark.parametrize("path", python_files("perception_core", exclude="training") + python_files("perception_nodes"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_tensorflow_only_in_training(path):
    assert not imported_modules(path) & {"tensorflow", "keras", "tf2onnx"}, f"{path} imports TensorFlow"


def test_the_check_can_fail(tmp_path):
    offender = tmp_path / "offender.py"
    offender.write_text("def f():\n    from rclpy.node import Node\n    return Node\n")
    assert "rclpy" in imported_modules(offender)


@pytest.mark.parametrize("path", python_files("perception_core") + python_files("perception_nodes"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_syntax_is_python_3_10(path):
    """The robot's ROS 2 Jazzy runs Python 3.10+ even though the dev venv may be newer."""
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
