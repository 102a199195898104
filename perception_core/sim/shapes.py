"""Objects as lists of flat-coloured polygons in metres, so one description renders at any scale.

Coordinates: x to the right of the object's ground contact point, y up from the ground. The
renderer scales them by the pixels-per-metre of the object's distance, so the perspective size
comes from the camera model alone.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Part:
    polygon: np.ndarray  # (N, 2) float64 metres, y up
    color: Color  # BGR


@dataclass(frozen=True)
class Shape:
    """An object's silhouette and look, drawn part by part in list order (later parts on top)."""

    kind: str  # a detection class name of SIM_SPEC
    parts: tuple[Part, ...]

    @property
    def width_m(self) -> float:
        xs = np.concatenate([p.polygon[:, 0] for p in self.parts])
        return float(xs.max() - xs.min())


def hsv_bgr(hue: float, saturation: float, value: float) -> Color:
    """BGR 0-255 from hue in [0, 1) and saturation/value in [0, 1]."""
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, float(np.clip(saturation, 0, 1)), float(np.clip(value, 0, 1)))
    return int(b * 255), int(g * 255), int(r * 255)


def shade(color: Color, factor: float) -> Color:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color)  # type: ignore[return-value]


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def ellipse(cx: float, cy: float, rx: float, ry: float, start_deg: float = 0.0, end_deg: float = 360.0,
            points: int = 28) -> np.ndarray:
    angles = np.radians(np.linspace(start_deg, end_deg, points, endpoint=end_deg - start_deg < 360))
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def mirrored(polygon: np.ndarray) -> np.ndarray:
    return polygon * np.array([-1.0, 1.0])


SKIN_TONES: tuple[Color, ...] = ((190, 210, 245), (150, 180, 225), (110, 145, 200), (70, 105, 160), (45, 70, 110))
HAIR_COLORS: tuple[Color, ...] = ((20, 20, 25), (30, 45, 70), (40, 70, 110), (90, 160, 200), (150, 150, 150))
PAINT_COLORS: tuple[Color, ...] = (
    (235, 235, 235), (25, 25, 25), (185, 185, 180), (110, 110, 110), (40, 40, 190),
    (150, 70, 20), (50, 90, 30), (30, 200, 230), (120, 30, 30), (60, 110, 170),
)


def _pick(rng: np.random.Generator, colors: tuple[Color, ...], jitter: float = 0.12) -> Color:
    return shade(colors[rng.integers(len(colors))], 1.0 + rng.uniform(-jitter, jitter))


def _clothing(rng: np.random.Generator) -> Color:
    """Saturated or muted garment colours, including the dark and white ones that are common."""
    if rng.random() < 0.3:
        return hsv_bgr(0.0, 0.0, rng.choice([0.12, 0.25, 0.55, 0.9]))
    return hsv_bgr(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.25, 0.9))


def make_person(rng: np.random.Generator) -> Shape:
    """Front-facing pedestrian: legs, arms, torso (optionally a dress or coat), head with hair or hat."""
    height = rng.uniform(1.05, 1.35) if rng.random() < 0.12 else rng.uniform(1.5, 1.92)
    s = height / 1.75
    build = rng.uniform(0.85, 1.2)
    skin, shirt, trousers = _pick(rng, SKIN_TONES), _clothing(rng), _clothing(rng)
    shoes = hsv_bgr(rng.random(), rng.uniform(0, 0.4), rng.uniform(0.08, 0.5))
    y_shoulder, y_hip = height - 0.26 * s, 0.5 * height
    stride, swing = rng.uniform(0.0, 0.14) * s, rng.uniform(0.0, 0.12) * s
    parts: list[Part] = []
    for side, step in ((-1, stride), (1, -stride)):
        foot_x = side * 0.085 * s + step * 0.5
        hip_x = side * 0.085 * s * build
        leg = np.array([[hip_x - 0.07 * s, y_hip + 0.03], [hip_x + 0.07 * s, y_hip + 0.03],
                        [foot_x + 0.05 * s, 0.05 * s], [foot_x - 0.05 * s, 0.05 * s]])
        parts += [Part(leg, trousers), Part(rect(foot_x - 0.065 * s, 0.0, foot_x + 0.065 * s, 0.07 * s), shoes)]
    sleeve = shirt if rng.random() < 0.6 else skin
    for side in (-1, 1):
        hand_x = side * (0.25 * s * build + swing)
        arm = np.array([[side * 0.17 * s * build, y_shoulder], [side * 0.23 * s * build, y_shoulder - 0.04 * s],
                        [hand_x + side * 0.035 * s, y_hip - 0.02 * s], [hand_x - side * 0.035 * s, y_hip - 0.02 * s]])
        parts += [Part(arm, sleeve), Part(ellipse(hand_x, y_hip - 0.05 * s, 0.04 * s, 0.05 * s, points=12), skin)]
    torso_bottom = rng.uniform(0.3, 0.4) * height if rng.random() < 0.18 else y_hip - 0.04 * s
    torso_half = 0.16 * s * build if torso_bottom > 0.45 * height else 0.23 * s * build
    torso = np.array([[-0.16 * s * build, y_shoulder + 0.02 * s], [0.16 * s * build, y_shoulder + 0.02 * s],
                      [0.2 * s * build, y_shoulder - 0.05 * s], [torso_half, torso_bottom],
                      [-torso_half, torso_bottom], [-0.2 * s * build, y_shoulder - 0.05 * s]])
    head_y = height - 0.12 * s
    parts += [Part(rect(-0.035 * s, y_shoulder, 0.035 * s, head_y - 0.08 * s), skin), Part(torso, shirt),
              Part(ellipse(0.0, head_y, 0.09 * s, 0.12 * s), skin)]
    if rng.random() < 0.2:
        hat = _clothing(rng)
        parts += [Part(rect(-0.13 * s, head_y + 0.05 * s, 0.13 * s, head_y + 0.08 * s), hat),
                  Part(ellipse(0.0, head_y + 0.07 * s, 0.095 * s, 0.07 * s, 0, 180, points=14), hat)]
    else:
        parts.append(Part(ellipse(0.0, head_y + 0.015 * s, 0.1 * s, 0.115 * s, -15, 195, points=16),
                          _pick(rng, HAIR_COLORS)))
    return Shape("person", tuple(parts))


def make_vehicle(rng: np.random.Generator) -> Shape:
    """A car, SUV or van seen from behind/in front (the usual view on a road) or from the side."""
    paint = _pick(rng, PAINT_COLORS)
    glass = hsv_bgr(rng.uniform(0.5, 0.65), rng.uniform(0.1, 0.4), rng.uniform(0.15, 0.4))
    tall = rng.random() < 0.35
    height = rng.uniform(1.75, 2.3) if tall else rng.uniform(1.35, 1.6)
    if rng.random() < 0.65:
        return Shape("vehicle", _vehicle_end_view(rng, paint, glass, height, tall))
    return Shape("vehicle", _vehicle_side_view(rng, paint, glass, height, tall))


def _vehicle_end_view(rng: np.random.Generator, paint: Color, glass: Color, height: float,
                      tall: bool) -> tuple[Part, ...]:
    half = rng.uniform(0.8, 1.02)
    belt = height * rng.uniform(0.5, 0.58)
    roof_half = half * (rng.uniform(0.85, 0.95) if tall else rng.uniform(0.7, 0.8))
    tyre = (25, 25, 28)
    lamp = (40, 40, 210) if rng.random() < 0.7 else (200, 235, 245)
    parts = [Part(rect(-half + 0.08, 0.0, -half + 0.36, 0.45), tyre),
             Part(rect(half - 0.36, 0.0, half - 0.08, 0.45), tyre)]
    body = np.array([[-half, 0.22], [half, 0.22], [half, belt - 0.06], [half - 0.06, belt],
                     [-half + 0.06, belt], [-half, belt - 0.06]])
    cabin = np.array([[-half + 0.07, belt], [half - 0.07, belt], [roof_half, height - 0.05],
                      [roof_half - 0.08, height], [-roof_half + 0.08, height], [-roof_half, height - 0.05]])
    window = np.array([[-half + 0.18, belt + 0.06], [half - 0.18, belt + 0.06],
                       [roof_half - 0.1, height - 0.1], [-roof_half + 0.1, height - 0.1]])
    parts += [Part(body, paint), Part(rect(-half, 0.2, half, 0.36), shade(paint, 0.55)),
              Part(cabin, paint), Part(window, glass),
              Part(rect(-half + 0.05, belt - 0.22, -half + 0.32, belt - 0.07), lamp),
              Part(rect(half - 0.32, belt - 0.22, half - 0.05, belt - 0.07), lamp),
              Part(rect(-0.26, 0.4, 0.26, 0.52), (225, 225, 225) if rng.random() < 0.7 else (40, 200, 240))]
    return tuple(parts)


def _vehicle_side_view(rng: np.random.Generator, paint: Color, glass: Color, height: float,
                       tall: bool) -> tuple[Part, ...]:
    half = rng.uniform(1.9, 2.5)
    belt = height * rng.uniform(0.5, 0.58)
    if tall:
        rear_base, rear_roof, front_roof, front_base = -half + 0.05, -half + 0.12, 0.45 * half, 0.75 * half
    else:
        rear_base, rear_roof, front_roof, front_base = -0.72 * half, -0.5 * half, 0.2 * half, 0.5 * half
    body = np.array([[-half, 0.3], [half, 0.3], [half, belt - 0.15], [half - 0.2, belt],
                     [-half + 0.1, belt], [-half, belt - 0.08]])
    cabin = np.array([[rear_base, belt], [front_base, belt], [front_roof, height], [rear_roof, height]])
    inset = 0.08
    window = np.array([[rear_base + inset * 1.5, belt + inset], [front_base - inset * 2.5, belt + inset],
                       [front_roof - inset * 0.5, height - inset], [rear_roof + inset * 0.5, height - inset]])
    pillar_x = 0.5 * (rear_base + front_base) + rng.uniform(-0.1, 0.1)
    radius = rng.uniform(0.3, 0.36)
    wheel_x = half - rng.uniform(0.65, 0.85)
    parts = [Part(body, paint), Part(cabin, paint), Part(window, glass),
             Part(rect(pillar_x - 0.05, belt, pillar_x + 0.05, height - inset * 0.8), paint),
             Part(rect(half - 0.12, belt - 0.2, half, belt - 0.08), (170, 220, 240)),
             Part(rect(-half, belt - 0.22, -half + 0.08, belt - 0.1), (40, 40, 200))]
    for x in (-wheel_x, wheel_x):
        parts += [Part(ellipse(x, radius, radius, radius), (25, 25, 28)),
                  Part(ellipse(x, radius, radius * 0.55, radius * 0.55, points=16), (150, 150, 155))]
    if rng.random() < 0.5:
        parts = [Part(mirrored(p.polygon), p.color) for p in parts]
    return tuple(parts)


def make_cone(rng: np.random.Generator) -> Shape:
    """Traffic cone: dark base plate, orange frustum, one or two white reflective bands."""
    height = rng.uniform(0.45, 0.9)
    base_half, top_half = 0.28 * height, 0.05 * height
    orange = hsv_bgr(rng.uniform(0.02, 0.075), rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0))

    def band(y0: float, y1: float) -> np.ndarray:
        def half_at(y: float) -> float:
            return base_half + (top_half - base_half) * (y - 0.06 * height) / (0.94 * height)
        return np.array([[-half_at(y0), y0], [half_at(y0), y0], [half_at(y1), y1], [-half_at(y1), y1]])

    parts = [Part(rect(-0.36 * height, 0.0, 0.36 * height, 0.06 * height), (30, 30, 35)),
             Part(band(0.06 * height, height), orange),
             Part(band(0.5 * height, 0.64 * height), (235, 235, 235))]
    if rng.random() < 0.4:
        parts.append(Part(band(0.26 * height, 0.36 * height), (235, 235, 235)))
    return Shape("cone", tuple(parts))


SHAPE_MAKERS = {"person": make_person, "vehicle": make_vehicle, "cone": make_cone}
