"""The environment a local ROS graph needs here: one place for tests, the demo and the bench.

- LOCALHOST discovery and a domain id of its own, so parallel runs never see each other;
- the Fast DDS profile with large shared-memory segments, named in BOTH variables (Fast DDS 2.x
  on Jazzy reads FASTRTPS_..., 3.x reads FASTDDS_...), without which big images are dropped;
- ROS_LOG_DIR in a writable place (rclpy.init fails without HOME or ROS_LOG_DIR).
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional

from perception_core.resources import package_file


def local_graph_env(domain_id: Optional[int] = None, log_dir: Optional[str] = None) -> dict[str, str]:
    """Variables for a private, loopback-only ROS graph with the big-image DDS profile."""
    profile = str(package_file("config", "fastdds_loopback.xml"))
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(domain_id if domain_id is not None else 1 + os.getpid() % 100),
        "ROS_LOG_DIR": log_dir or tempfile.mkdtemp(prefix="ros_log_"),
        "FASTRTPS_DEFAULT_PROFILES_FILE": profile,
        "FASTDDS_DEFAULT_PROFILES_FILE": profile,
        "RMW_IMPLEMENTATION": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
        "PYTHONUNBUFFERED": "1",
    }
