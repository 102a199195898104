"""Test session setup: a private loopback ROS graph for every run (see perception_nodes.ros_env)."""

import os
import tempfile

import pytest

from perception_nodes.ros_env import local_graph_env

# Set before any test imports rclpy, so this process and every child it starts share the graph.
os.environ.update(local_graph_env(log_dir=tempfile.mkdtemp(prefix="ros_test_log_")))


@pytest.fixture
def ros_peer():
    """A node of the test's own, in its own context, and an executor to spin it: (node, executor)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("test_peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=context)


@pytest.fixture
def context():
    """An rclpy context of the test's own, for nodes built in-process."""
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


@pytest.fixture(scope="session")
def geometry_model(tmp_path_factory):
    """The geometry model (test/model_fixtures.py): known outputs in closed form."""
    from model_fixtures import make_geometry_model

    return make_geometry_model(tmp_path_factory.mktemp("geometry"))
