"""Rasterise a Scene at one resolution: image, class mask and visible-instance boxes together.

Every region is drawn into the image and the class mask with the same polygon (or the same slice
or sprite alpha), without anti-aliasing, so the mask is pixel-exact with the image. Only the final
camera stage (blur, noise) is image-only, as in a real camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from perception_core.sim.classes import SIM_SPEC
from perception_core.sim.layout import DASH_LENGTH_M, DASH_PERIOD_M, Building, Camera, Look, Road, Scene
from perception_core.sim.shapes import Shape, shade
from perception_core.types import Detections, Frame, validate_class_mask

SKY, ROAD, GRASS, BUILDING = (SIM_SPEC.seg_classes.index(name) for name in ("sky", "road", "grass", "building"))
SHIFT = 4  # fractional bits of cv2 polygon coordinates: sub-pixel geometry at small sizes
ONE = 1 << SHIFT
REFERENCE_ROWS = 480  # resolution at which pixel-sized parameters (blur, minimum box side) are given
MIN_BOX_SIDE_PX = 4.0
MIN_VISIBLE_FRACTION = 0.25
MAX_ROAD_DISTANCE_M = 2000.0
CENTRE_LINE, EDGE_LINE = 1, 2  # values in the road-marking layer
EDGE_LINE_GREY = 225  # edge lines are white


class Raster:
    """The camera at one resolution: ground points -> cv2 pixel coordinates (pixel centres at integers)."""

    def __init__(self, camera: Camera, width: int, height: int):
        self.camera, self.width, self.height = camera, width, height
        self.horizon_row = int(np.clip(round(camera.horizon * height), 0, height))

    def ground_px(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(N, 2) pixel points of ground points, clamped to a range cv2's fixed point can hold."""
        u, v = self.camera.ground_to_uv(x, z)
        points = np.stack([0.5 * self.width + u * self.height, v * self.height], axis=1) - 0.5
        return np.clip(points, -1e5, 1e5)

    def pixels_per_metre(self, z: float) -> float:
        return self.camera.focal * self.height / z

    @property
    def nearest_visible_m(self) -> float:
        """Distance seen just below the bottom edge (so ground polygons cover the last row)."""
        return float(self.camera.distance_at(1.0 + 2.0 / self.height))

    @property
    def farthest_ground_m(self) -> float:
        """Distance seen at the first ground row, so no ground is drawn into the sky rows."""
        v = (self.horizon_row + 0.5) / self.height
        return float(min(self.camera.distance_at(v) if v > self.camera.horizon else np.inf, MAX_ROAD_DISTANCE_M))


def fixed_point(points: np.ndarray) -> np.ndarray:
    return np.round(points * ONE).astype(np.int32)


@dataclass
class LabeledFrame:
    """A rendered scene: the frame with its pixel-exact ground truth in the simulator's classes."""

    frame: Frame
    class_mask: np.ndarray
    detections: Detections = field(default_factory=Detections.empty)

    def __post_init__(self) -> None:
        validate_class_mask(self.class_mask, SIM_SPEC.num_seg_classes)
        if self.class_mask.shape != self.frame.image.shape[:2]:
            raise ValueError(
                f"class mask {self.class_mask.shape} does not match image {self.frame.image.shape[:2]}")


def render(scene: Scene, width: int, height: int, pixel_rng: np.random.Generator) -> LabeledFrame:
    """Draw ``scene``; ``pixel_rng`` only feeds resolution-dependent noise, never the layout."""
    raster = Raster(scene.camera, width, height)
    mask = np.full((height, width), GRASS, np.uint8)
    mask[:raster.horizon_row] = SKY
    image = np.empty((height, width, 3), np.float32)
    _paint_sky(image[:raster.horizon_row], scene.look)
    _paint_ground(image, mask, scene, raster, pixel_rng)
    _paint_buildings(image, mask, scene.buildings, scene.look, raster)
    detections = _paint_objects(image, mask, scene, raster)
    return LabeledFrame(Frame(_apply_camera(image, scene.look, pixel_rng)), mask, detections)


def _resize(grid: np.ndarray, width: int, height: int, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    return cv2.resize(grid.astype(np.float32), (width, height), interpolation=interpolation)


def _paint_sky(sky: np.ndarray, look: Look) -> None:
    """Vertical gradient towards the haze colour at the horizon, with soft clouds."""
    rows, width = sky.shape[:2]
    if rows == 0:
        return
    t = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None] ** 0.7
    density = np.clip((_resize(look.clouds, width, rows) + 1.6 * look.cloud_cover - 1.0) * 1.5, 0.0, 0.9)
    channels = zip(look.sky_top, look.sky_horizon, look.cloud_color, strict=True)
    sky[:] = _merge([(top * (1 - t) + horizon * t) * (1 - density) + cloud * density
                     for top, horizon, cloud in channels])


def _merge(planes: list[np.ndarray]) -> np.ndarray:
    """Interleave B, G, R planes: per-channel maths on planes avoids numpy's slow 3-wide broadcasting."""
    return cv2.merge([np.ascontiguousarray(p, np.float32) for p in planes])


def _paint_ground(image: np.ndarray, mask: np.ndarray, scene: Scene, raster: Raster,
                  pixel_rng: np.random.Generator) -> None:
    """Grass and road textures below the horizon, lane markings, then haze that grows with distance."""
    road, look, top = scene.road, scene.look, raster.horizon_row
    rows, width = raster.height - top, raster.width
    if rows == 0:
        return
    cv2.fillPoly(mask, [fixed_point(_road_polygon(road, raster))], ROAD, cv2.LINE_8, SHIFT)
    paint = np.zeros(mask.shape, np.uint8)
    _paint_markings(paint, road, raster)
    centre_line, edge_line = paint[top:] == CENTRE_LINE, paint[top:] == EDGE_LINE
    on_road = mask[top:] == ROAD
    # Grass detail is stretched sideways, as a field seen at a grazing angle looks.
    detail = _resize(pixel_rng.standard_normal((rows // 2 + 2, width // 6 + 2)), width, rows, cv2.INTER_LINEAR)
    grass_light = 1.0 + 0.15 * _resize(look.grass_texture, width, rows) + 0.12 * detail
    road_light = 1.0 + 0.07 * _resize(road.texture, width, rows) + 0.03 * detail
    v = (np.arange(top, raster.height, dtype=np.float32) + 0.5) / raster.height
    haze = _haze(scene.camera.distance_at(np.maximum(v, scene.camera.horizon + 1e-4)), look)[:, None]
    planes = []
    for road_c, grass_c, line_c, haze_c in zip(road.color, look.grass_color, road.line_color, look.sky_horizon,
                                               strict=True):
        plane = np.where(on_road, road_light * np.float32(road_c), grass_light * np.float32(grass_c))
        plane[centre_line] = line_c
        plane[edge_line] = EDGE_LINE_GREY
        planes.append(plane * (1 - haze) + haze_c * haze)
    image[top:] = _merge(planes)


def _haze(distance_m: np.ndarray, look: Look) -> np.ndarray:
    return (1.0 - np.exp(-np.asarray(distance_m, np.float32) / look.visibility_m)).astype(np.float32)


def _road_polygon(road: Road, raster: Raster) -> np.ndarray:
    z = np.geomspace(raster.nearest_visible_m, raster.farthest_ground_m, 96)
    centre = road.centre_x(z)
    left = raster.ground_px(centre - road.half_width_m, z)
    right = raster.ground_px(centre + road.half_width_m, z)
    return np.concatenate([left, right[::-1]])


def _paint_markings(paint: np.ndarray, road: Road, raster: Raster) -> None:
    """Label painted lines (CENTRE_LINE, EDGE_LINE) as ground strips, until thinner than a pixel."""
    strips: list[tuple[float, float, bool]] = []  # (lateral offset, width, dashed)
    if road.centre_line == "dashed":
        strips.append((0.0, 0.12, True))
    elif road.centre_line == "solid":
        strips.append((0.0, 0.12, False))
    elif road.centre_line == "double":
        strips += [(-0.12, 0.1, False), (0.12, 0.1, False)]
    centre = [polygon for offset, width, dashed in strips for polygon in _strip(road, raster, offset, width, dashed)]
    if centre:
        cv2.fillPoly(paint, centre, CENTRE_LINE, cv2.LINE_8, SHIFT)
    if road.edge_lines:
        edge = road.half_width_m - 0.3
        edges = _strip(road, raster, -edge, 0.15, False) + _strip(road, raster, edge, 0.15, False)
        if edges:
            cv2.fillPoly(paint, edges, EDGE_LINE, cv2.LINE_8, SHIFT)


def _strip(road: Road, raster: Raster, offset: float, width: float, dashed: bool) -> list[np.ndarray]:
    near = raster.nearest_visible_m
    far = min(raster.farthest_ground_m, width * raster.camera.focal * raster.height / 0.7)
    if far <= near:
        return []
    if dashed:
        first = road.dash_phase_m + DASH_PERIOD_M * np.floor((near - road.dash_phase_m) / DASH_PERIOD_M)
        spans = [(max(s, near), min(s + DASH_LENGTH_M, far)) for s in np.arange(first, far, DASH_PERIOD_M)]
        spans = [(a, b) for a, b in spans if b > a]
    else:
        spans = [(near, far)]
    polygons = []
    for start, end in spans:
        z = np.geomspace(start, end, 4 if dashed else 48)
        centre = road.centre_x(z) + offset
        left = raster.ground_px(centre - 0.5 * width, z)
        right = raster.ground_px(centre + 0.5 * width, z)
        polygons.append(fixed_point(np.concatenate([left, right[::-1]])))
    return polygons


def _paint_buildings(image: np.ndarray, mask: np.ndarray, buildings: tuple[Building, ...], look: Look,
                     raster: Raster) -> None:
    """Blocks standing on the horizon with window grids and optional pitched roofs, back to front."""
    base = raster.horizon_row
    for building in buildings:
        # Continuous image coordinates: the image spans [0, width] x [0, height].
        left, right = 0.5 * raster.width + np.array([building.u0, building.u1]) * raster.height
        top = building.top_v * raster.height
        c0, c1 = max(int(round(left)), 0), min(int(round(right)), raster.width)
        r0 = max(int(round(top)), 0)
        if c1 <= c0 or base <= r0:
            continue
        haze = 0.8 * float(_haze(building.distance_m, look))
        color = np.float32(building.color) * (1 - haze) + np.float32(look.sky_horizon) * haze
        image[r0:base, c0:c1] = color
        mask[r0:base, c0:c1] = BUILDING
        if building.window_grid is not None:
            glass = np.float32(building.window_color) * (1 - haze) + np.float32(look.sky_horizon) * haze
            down = (np.arange(r0, base) + 0.5 - top) / (base - top)
            across = (np.arange(c0, c1) + 0.5 - left) / (right - left)
            _paint_windows(image[r0:base, c0:c1], building.window_grid, glass, down, across)
        if building.pitched_roof:
            width = right - left
            peak = max(top - 0.4 * width, 0.02 * raster.height)
            roof = fixed_point(np.array([[left - 0.05 * width, top], [right + 0.05 * width, top],
                                         [0.5 * (left + right), peak]]) - 0.5)
            cv2.fillPoly(image, [roof], shade(tuple(int(c) for c in color), 0.6), cv2.LINE_8, SHIFT)
            cv2.fillPoly(mask, [roof], BUILDING, cv2.LINE_8, SHIFT)


def _paint_windows(facade: np.ndarray, grid: np.ndarray, glass: np.ndarray, down: np.ndarray,
                   across: np.ndarray) -> None:
    """Windows as the outer product of floor and column duty cycles, skipped when under 3 px.

    ``down``/``across`` are the facade pixels' relative positions (0 to 1) from top-left.
    """
    rows, cols = grid.shape
    if len(down) < 3 * rows or len(across) < 3 * cols:
        return
    floor, column = down * rows, across * cols
    in_floor = (floor % 1 > 0.3) & (floor % 1 < 0.75) & (floor < rows - 0.3)
    in_column = (column % 1 > 0.25) & (column % 1 < 0.75)
    windows = in_floor[:, None] & in_column[None, :]
    light = grid[np.clip(floor.astype(int), 0, rows - 1)][:, np.clip(column.astype(int), 0, cols - 1)]
    facade[windows] = (light[..., None] * glass)[windows]


def _paint_objects(image: np.ndarray, mask: np.ndarray, scene: Scene, raster: Raster) -> Detections:
    """Composite object sprites far to near and box each one's visible pixels (instance-id map)."""
    instances = np.zeros(mask.shape, np.uint8)
    placed = []  # (instance id, class name, unoccluded area, clipped region)
    for instance, obj in enumerate(scene.objects, start=1):
        ppm = raster.pixels_per_metre(obj.z_m)
        (anchor,) = raster.ground_px(np.array([obj.x_m]), np.array([obj.z_m]))
        _cast_shadow(image, mask, anchor, 0.6 * obj.shape.width_m * ppm, scene.look.shadow_strength)
        sprite, alpha, (ox, oy) = _rasterise(obj.shape, anchor, ppm)
        sprite = _shade_sprite(sprite, float(_haze(obj.z_m, scene.look)), scene.look)
        top, left = max(oy, 0), max(ox, 0)
        bottom, right = min(oy + alpha.shape[0], raster.height), min(ox + alpha.shape[1], raster.width)
        if top >= bottom or left >= right:
            continue
        region = (slice(top, bottom), slice(left, right))
        in_sprite = (slice(top - oy, bottom - oy), slice(left - ox, right - ox))
        inside = alpha[in_sprite].astype(bool)
        image[region][inside] = sprite[in_sprite][inside]
        mask[region][inside] = SIM_SPEC.seg_classes.index(obj.shape.kind)
        instances[region][inside] = instance
        placed.append((instance, obj.shape.kind, int(np.count_nonzero(alpha)), region))
    min_side = MIN_BOX_SIDE_PX * raster.height / REFERENCE_ROWS
    boxes, classes = [], []
    for instance, kind, area, (ys, xs) in placed:
        visible = instances[ys, xs] == instance  # far-to-near drawing: nearer objects overwrote it
        if np.count_nonzero(visible) < MIN_VISIBLE_FRACTION * area:
            continue
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        box = (xs.start + cols[0], ys.start + rows[0], xs.start + cols[-1] + 1, ys.start + rows[-1] + 1)
        if min(box[2] - box[0], box[3] - box[1]) >= min_side:
            boxes.append(box)
            classes.append(SIM_SPEC.det_classes.index(kind))
    return Detections.from_lists(boxes, classes)


def _rasterise(shape: Shape, anchor: np.ndarray, ppm: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Draw the parts into a tight patch; returns (BGR patch, alpha 0/1, patch origin x, y)."""
    polygons = [anchor + part.polygon * np.array([ppm, -ppm]) for part in shape.parts]
    points = np.concatenate(polygons)
    ox, oy = np.floor(points.min(axis=0)).astype(int) - 1
    w, h = np.ceil(points.max(axis=0)).astype(int) - (ox, oy) + 2
    sprite = np.zeros((h, w, 3), np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    for part, polygon in zip(shape.parts, polygons, strict=True):
        local = fixed_point(polygon - (ox, oy))
        cv2.fillPoly(sprite, [local], part.color, cv2.LINE_8, SHIFT)
        cv2.fillPoly(alpha, [local], 1, cv2.LINE_8, SHIFT)
    return sprite, alpha, (int(ox), int(oy))


def _shade_sprite(sprite: np.ndarray, haze: float, look: Look) -> np.ndarray:
    """Light from above (tops brighter) and the same distance haze as the ground behind."""
    light = np.linspace(1.12, 0.82, sprite.shape[0], dtype=np.float32)[:, None, None]
    return sprite * (light * (1 - haze)) + np.float32(look.sky_horizon) * haze


def _cast_shadow(image: np.ndarray, mask: np.ndarray, anchor: np.ndarray, radius: float, strength: float) -> None:
    """Soft contact shadow on the ground under an object (image only: a shadowed road is still road)."""
    rx, ry = radius, 0.12 * radius + 1.0
    x0, x1 = max(int(anchor[0] - rx) - 2, 0), min(int(anchor[0] + rx) + 3, image.shape[1])
    y0, y1 = max(int(anchor[1] - ry) - 2, 0), min(int(anchor[1] + ry) + 3, image.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    shadow = np.zeros((y1 - y0, x1 - x0), np.float32)
    centre = fixed_point(anchor - (x0, y0))
    cv2.ellipse(shadow, tuple(int(c) for c in centre), (int(rx * ONE), int(ry * ONE)), 0, 0, 360, 1.0, -1,
                cv2.LINE_AA, SHIFT)
    ground = np.isin(mask[y0:y1, x0:x1], (ROAD, GRASS))
    image[y0:y1, x0:x1] *= (1.0 - strength * shadow * ground)[..., None]


def _apply_camera(image: np.ndarray, look: Look, pixel_rng: np.random.Generator) -> np.ndarray:
    """Exposure, colour cast, contrast, optional blur, sensor noise; returns BGR uint8."""
    scale = image.shape[0] / REFERENCE_ROWS
    # Triangular noise (sum of two uniform bytes, std 104) is ~6x cheaper to draw than Gaussian.
    noise_gain = look.noise_sigma / 104.0
    offset = 128.0 * (1.0 - look.contrast) - 255.0 * noise_gain + 0.5  # +0.5: round on the uint8 cast
    exposure = np.zeros((3, 4), np.float32)
    exposure[:, :3] = np.diag(np.float32(look.gain_bgr) * look.contrast)
    exposure[:, 3] = offset
    image = cv2.transform(image, exposure)
    if look.blur_sigma:
        image = cv2.GaussianBlur(image, (0, 0), look.blur_sigma * scale)
    if look.motion_blur:
        image = cv2.blur(image, (max(int(round(look.motion_blur * scale)), 2), 1))
    uniform = np.frombuffer(pixel_rng.bytes(2 * image.size), np.uint8).reshape(2, *image.shape)
    noise = np.add(uniform[0], uniform[1], dtype=np.int16).astype(np.float32)
    image = cv2.scaleAdd(noise, noise_gain, image)
    np.clip(image, 0.0, 255.0, out=image)
    return image.astype(np.uint8)
