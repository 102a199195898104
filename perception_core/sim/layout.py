"""Random scene descriptions, independent of the output resolution.

Everything random about a scene is drawn here from one generator, before any pixel exists, so a
(seed, index) pair describes the same scene at every resolution. Screen positions use ``u`` (right
of the image centre) and ``v`` (down from the top), both in image heights: at one aspect ratio the
layout is identical at any size; a wider image shows more of the sides instead of stretching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception_core.sim.shapes import SHAPE_MAKERS, Color, Shape, hsv_bgr, shade

# Horizontal half-extent (image heights) of the 4:3 reference view that objects are placed into.
REFERENCE_HALF_WIDTH = 4 / 3 / 2
# Buildings are laid out over the half-extent of a 2:1 view so wide formats still see a skyline.
SKYLINE_HALF_WIDTH = 1.0
MAX_OBJECTS = 8
DASH_PERIOD_M = 9.0
DASH_LENGTH_M = 3.0


@dataclass(frozen=True)
class Camera:
    """Pinhole camera over flat ground: ground point (x, z) metres -> u = vp + f*x/z, v = horizon + f*h/z."""

    horizon: float  # v of the horizon
    vanishing_u: float  # u of the road's vanishing direction
    focal: float  # focal length in image heights
    height_m: float  # camera height above the ground

    def ground_to_uv(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.vanishing_u + self.focal * x / z, self.horizon + self.focal * self.height_m / z

    def distance_at(self, v: np.ndarray) -> np.ndarray:
        """Ground distance seen at image row ``v`` (v below the horizon)."""
        return self.focal * self.height_m / (v - self.horizon)


@dataclass(frozen=True)
class Road:
    """Road centre line x(z) = -offset + curvature*z^2 (a parabolic bend) with painted markings."""

    half_width_m: float
    offset_m: float  # camera's lateral position relative to the road centre
    curvature: float
    color: Color
    texture: np.ndarray  # low-resolution noise grid for wear and patches
    centre_line: str  # "dashed", "solid", "double" or "none"
    dash_phase_m: float
    edge_lines: bool
    line_color: Color

    def centre_x(self, z: np.ndarray) -> np.ndarray:
        return -self.offset_m + self.curvature * z * z


@dataclass(frozen=True)
class Building:
    u0: float
    u1: float
    top_v: float  # v of the roof line (the base is on the horizon)
    color: Color
    distance_m: float  # sets the aerial-perspective haze
    pitched_roof: bool
    window_color: Color
    window_grid: np.ndarray | None  # (rows, cols) brightness per window; None: no windows


@dataclass(frozen=True)
class PlacedObject:
    shape: Shape
    x_m: float  # lateral ground position (camera at 0)
    z_m: float  # distance along the ground


@dataclass(frozen=True)
class Look:
    """Weather, lighting and camera imperfections."""

    sky_top: Color
    sky_horizon: Color  # also the haze colour the ground fades into
    cloud_color: Color
    clouds: np.ndarray  # low-resolution cloud density grid
    cloud_cover: float
    grass_color: Color
    grass_texture: np.ndarray
    visibility_m: float
    shadow_strength: float
    gain_bgr: tuple[float, float, float]  # brightness times colour cast
    contrast: float
    noise_sigma: float
    blur_sigma: float  # Gaussian blur in pixels at 480 rows; 0 for a sharp frame
    motion_blur: float  # horizontal motion-blur length in pixels at 480 rows; 0 for none


@dataclass(frozen=True)
class Scene:
    camera: Camera
    road: Road
    buildings: tuple[Building, ...]
    objects: tuple[PlacedObject, ...]  # far to near: drawing order
    look: Look


def sample_scene(rng: np.random.Generator) -> Scene:
    camera = Camera(horizon=rng.uniform(0.3, 0.58), vanishing_u=rng.uniform(-0.12, 0.12),
                    focal=rng.uniform(0.9, 1.25), height_m=rng.uniform(1.0, 2.0))
    road = _sample_road(rng)
    look = _sample_look(rng)
    buildings = _sample_buildings(rng, camera) if rng.random() < 0.8 else ()
    return Scene(camera, road, buildings, _sample_objects(rng, camera, road), look)


def _sample_road(rng: np.random.Generator) -> Road:
    paved = rng.random() < 0.85
    half_width = rng.uniform(2.2, 5.5) if paved else rng.uniform(1.2, 2.4)
    if rng.random() < 0.15:
        offset = rng.choice([-1, 1]) * (half_width + rng.uniform(1.0, 5.0))
    else:
        offset = rng.uniform(-0.7, 0.7) * half_width
    curvature = rng.uniform(-0.004, 0.004) if rng.random() < 0.5 else rng.uniform(-0.0005, 0.0005)
    if paved:
        color = hsv_bgr(rng.uniform(0.55, 0.7), rng.uniform(0.0, 0.12), rng.uniform(0.25, 0.5))
        centre_line = str(rng.choice(["dashed", "solid", "double", "none"], p=[0.5, 0.15, 0.15, 0.2]))
        edge_lines = bool(rng.random() < 0.6)
    else:
        color = hsv_bgr(rng.uniform(0.06, 0.1), rng.uniform(0.3, 0.5), rng.uniform(0.4, 0.6))
        centre_line, edge_lines = "none", False
    line_color = (40, 200, 235) if centre_line in ("solid", "double") else (225, 225, 225)
    return Road(half_width, offset, curvature, color, rng.standard_normal((6, 8)), centre_line,
                rng.uniform(0.0, DASH_PERIOD_M), edge_lines, line_color)


SKY_PRESETS = {  # (top, horizon) BGR
    "clear": ((200, 130, 50), (235, 215, 190)),
    "overcast": ((185, 180, 175), (215, 212, 210)),
    "dusk": ((140, 90, 80), (140, 185, 240)),
}


def _sample_look(rng: np.random.Generator) -> Look:
    weather = str(rng.choice(list(SKY_PRESETS), p=[0.55, 0.3, 0.15]))
    top, horizon = (shade(c, rng.uniform(0.9, 1.08)) for c in SKY_PRESETS[weather])
    cloud_cover = {"clear": rng.uniform(0.0, 0.45), "overcast": rng.uniform(0.5, 0.9),
                   "dusk": rng.uniform(0.0, 0.5)}[weather]
    brightness = rng.uniform(0.6, 1.25) * (0.8 if weather == "dusk" else 1.0)
    cast = rng.uniform(0.9, 1.1, 3)
    grass = hsv_bgr(rng.uniform(0.17, 0.33), rng.uniform(0.35, 0.75), rng.uniform(0.3, 0.6))
    blur = rng.uniform(0.6, 1.8) if rng.random() < 0.2 else 0.0
    motion = rng.uniform(3.0, 9.0) if rng.random() < 0.1 else 0.0
    return Look(
        sky_top=top, sky_horizon=horizon, cloud_color=shade(horizon, rng.uniform(0.9, 1.1)),
        clouds=rng.standard_normal((5, 8)), cloud_cover=cloud_cover,
        grass_color=grass, grass_texture=rng.standard_normal((8, 12)),
        visibility_m=rng.uniform(150.0, 700.0),
        shadow_strength=rng.uniform(0.15, 0.3) if weather == "overcast" else rng.uniform(0.25, 0.45),
        gain_bgr=tuple(float(g) for g in brightness * cast), contrast=rng.uniform(0.8, 1.15),
        noise_sigma=rng.uniform(1.0, 7.0), blur_sigma=blur, motion_blur=motion,
    )


BUILDING_COLORS: tuple[Color, ...] = ((150, 150, 150), (110, 115, 120), (60, 80, 140), (140, 180, 200),
                                      (215, 215, 210), (130, 110, 90), (90, 100, 80))


def _sample_buildings(rng: np.random.Generator, camera: Camera) -> tuple[Building, ...]:
    """A back row of tall hazy blocks and a front row of lower houses and blocks, each left to right."""
    buildings: list[Building] = []
    for distance, max_height in ((rng.uniform(600, 1200), 0.28), (rng.uniform(250, 500), 0.16)):
        u = -SKYLINE_HALF_WIDTH - rng.uniform(0.0, 0.1)
        while u < SKYLINE_HALF_WIDTH:
            width = rng.uniform(0.04, 0.22)
            if rng.random() < 0.7:
                height = rng.uniform(0.02, max_height)
                top_v = max(camera.horizon - height, 0.02)
                pitched = bool(height < 0.07 and rng.random() < 0.5)
                color = shade(BUILDING_COLORS[rng.integers(len(BUILDING_COLORS))], rng.uniform(0.75, 1.15))
                rows = max(1, int((camera.horizon - top_v) / rng.uniform(0.012, 0.025)))
                cols = max(1, int(width / rng.uniform(0.012, 0.03)))
                grid = rng.uniform(0.6, 1.3, (rows, cols)) if rng.random() < 0.85 else None
                window = hsv_bgr(rng.uniform(0.5, 0.65), rng.uniform(0.1, 0.5), rng.uniform(0.2, 0.55))
                buildings.append(Building(u, u + width, top_v, color, distance, pitched, window, grid))
            u += width + (rng.uniform(0.0, 0.15) if rng.random() < 0.5 else 0.0)
    return tuple(buildings)


def _sample_objects(rng: np.random.Generator, camera: Camera, road: Road) -> tuple[PlacedObject, ...]:
    """0-8 objects on the visible ground, far to near, clustered around a per-scene typical distance.

    The per-scene distance makes some scenes hold mostly small far objects and others large near
    ones. Vehicles and cones stay on the road; people walk anywhere.
    """
    count = int(rng.choice(MAX_OBJECTS + 1, p=[0.06, 0.12, 0.14, 0.14, 0.13, 0.12, 0.11, 0.1, 0.08]))
    nearest = camera.distance_at(1.0) * 1.05  # the object's foot must be inside the frame
    typical = np.exp(rng.uniform(np.log(5.0), np.log(35.0)))
    placed: list[PlacedObject] = []
    for _ in range(count):
        kind = str(rng.choice(["person", "vehicle", "cone"], p=[0.4, 0.32, 0.28]))
        shape = SHAPE_MAKERS[kind](rng)
        z = float(np.clip(typical * np.exp(rng.normal(0.0, 0.5)), max(nearest, 2.5), 70.0))
        for _attempt in range(8):
            x = float(road.centre_x(z) + _lateral_offset(rng, kind, road.half_width_m))
            u = camera.vanishing_u + camera.focal * x / z
            half_width_u = camera.focal * shape.width_m / (2 * z)
            in_view = abs(u) < REFERENCE_HALF_WIDTH + 0.5 * half_width_u
            collides = any(abs(z - o.z_m) < 2.0 and abs(x - o.x_m) < 0.5 * (shape.width_m + o.shape.width_m)
                           for o in placed)
            if in_view and not collides:
                placed.append(PlacedObject(shape, x, z))
                break
    return tuple(sorted(placed, key=lambda o: -o.z_m))


def _lateral_offset(rng: np.random.Generator, kind: str, half_width: float) -> float:
    """Position across the road: vehicles in a lane, cones on the road, people mostly beside it."""
    if kind == "vehicle":
        return rng.uniform(-0.75, 0.75) * max(half_width - 0.9, 0.2)
    if kind == "cone":
        return rng.uniform(-1.0, 1.0) * half_width
    if rng.random() < 0.35:
        return rng.uniform(-0.9, 0.9) * half_width
    return rng.choice([-1, 1]) * (half_width + rng.uniform(0.3, 8.0))
