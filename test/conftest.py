"""Test session setup: a private loopback ROS graph for every run (see perception_nodes.ros_env)."""

import os
import tempfile

from perception_nodes.ros_env import local_graph_env

# Set before any test imports rclpy, so this process and every child it starts share the graph.
os.environ.update(local_graph_env(log_dir=tempfile.mkdtemp(prefix="ros_test_log_")))
