"""The simulated camera's optics: an ideal pinhole (no distortion, square pixels, centred principal point)."""

from __future__ import annotations

import math


def pinhole_intrinsics(width: int, height: int, horizontal_fov_deg: float = 90.0) -> dict[str, list[float]]:
    """CameraInfo's ``d``, ``k``, ``r`` and ``p`` (row-major lists) for a ``width`` x ``height`` pinhole camera."""
    if not 0.0 < horizontal_fov_deg < 180.0:
        raise ValueError(f"horizontal_fov_deg must be in (0, 180), got {horizontal_fov_deg}")
    focal = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return {"d": [0.0] * 5, "k": [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0],
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]}
