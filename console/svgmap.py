"""An inline SVG map of grid polygons and a point: no tiles, no network, no JavaScript.

Grid boundaries are GeoJSON (WGS84, lon/lat) in ``Grid.geometry``; they are projected
equirectangularly (longitude scaled by cos(latitude)), which is exact enough at the size
of a community, and fitted into the drawing with a margin."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    grid_id: int
    code: str
    name: str
    rings: tuple[tuple[tuple[float, float], ...], ...]
    highlight: bool = False


@dataclass(frozen=True)
class DrawnShape:
    code: str
    name: str
    path: str
    label_x: float
    label_y: float
    highlight: bool


@dataclass(frozen=True)
class Drawing:
    width: int
    height: int
    shapes: tuple[DrawnShape, ...]
    point: tuple[float, float] | None


def rings_of(geometry: dict | None) -> tuple[tuple[tuple[float, float], ...], ...]:
    if not geometry:
        return ()
    kind, coords = geometry.get("type"), geometry.get("coordinates") or []
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    out = []
    for polygon in polygons:
        for ring in polygon[:1]:  # the outer ring; holes are too small to matter here
            out.append(tuple((float(x), float(y)) for x, y, *_ in ring))
    return tuple(out)


def draw(shapes: list[Shape], point: tuple[float, float] | None, width: int = 480, height: int = 320,
         margin: float = 16) -> Drawing | None:
    """``point`` is (lon, lat). None when there is nothing to draw."""
    xs = [x for s in shapes for ring in s.rings for x, _ in ring]
    ys = [y for s in shapes for ring in s.rings for _, y in ring]
    if point is not None:
        xs.append(point[0])
        ys.append(point[1])
    if not xs:
        return None
    lat0 = math.radians((min(ys) + max(ys)) / 2)
    kx = math.cos(lat0)
    span_x = max((max(xs) - min(xs)) * kx, 1e-6)
    span_y = max(max(ys) - min(ys), 1e-6)
    scale = min((width - 2 * margin) / span_x, (height - 2 * margin) / span_y)
    x0, y1 = min(xs), max(ys)
    off_x = (width - span_x * scale) / 2
    off_y = (height - span_y * scale) / 2

    def project(lon: float, lat: float) -> tuple[float, float]:
        return (off_x + (lon - x0) * kx * scale, off_y + (y1 - lat) * scale)

    drawn = []
    for s in shapes:
        parts, cx, cy, n = [], 0.0, 0.0, 0
        for ring in s.rings:
            pts = [project(x, y) for x, y in ring]
            parts.append("M" + " L".join(f"{px:.1f},{py:.1f}" for px, py in pts) + " Z")
            for px, py in pts[:-1] or pts:
                cx, cy, n = cx + px, cy + py, n + 1
        if parts:
            drawn.append(DrawnShape(s.code, s.name, " ".join(parts), cx / n, cy / n, s.highlight))
    drawn.sort(key=lambda d: d.highlight)  # the case's grid on top
    return Drawing(width, height, tuple(drawn), project(*point) if point else None)
