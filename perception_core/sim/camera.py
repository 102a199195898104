"""The simulated camera's optics: an ideal pinhole (no distortion, square pixels, centred principal point)."""

from __future__ import annotations

import math
from typing import Union


def camera_info_fields(width: int, height: int,
                       horizontal_fov_deg: float = 90.0) -> dict[str, Union[int, str, list[float]]]:
    """sensor_msgs/CameraInfo's size, distortion model and ``d``, ``k``, ``r``, ``p`` (row-major lists).

    The one source of the simulator's intrinsics: the synthetic camera (rclpy) and the bag recorder
    (rosbags) fill their own CameraInfo classes from it.
    """
    if not 0.0 < horizontal_fov_deg < 180.0:
        raise ValueError(f"horizontal_fov_deg must be in (0, 180), got {horizontal_fov_deg}")
    focal = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return {"width": width, "height": height, "distortion_model": "plumb_bob", "d": [0.0] * 5,
            "k": [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0],
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]}
