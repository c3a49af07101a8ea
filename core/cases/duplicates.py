"""Duplicate suggestions: open cases of the same category, near in space and time.

Radius and window are per category (``Category.duplicate_radius_m/_window_hours``): a dark
street light is seen by many people along one road; a neighbour quarrel is one door.
Suggestions only: merging is an operator's decision (``actions.merge``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

from sqlmodel import Session, select

from core.cases import catalogue
from core.cases.models import OPEN_STATUSES, Case

EARTH_RADIUS_M = 6_371_000.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine); plenty for a few hundred metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class DuplicateCandidate:
    case: Case
    distance_m: float | None
    hours_apart: float
    reason: str  # a code the edges say: ``reasons.<reason>`` of the catalogues, with ``params``
    params: dict = field(default_factory=dict)


def suggest_duplicates(session: Session, case: Case, limit: int = 5) -> list[DuplicateCandidate]:
    if case.category_id is None:
        return []
    category = catalogue.category_by_id(session, case.category_id)
    window = timedelta(hours=category.duplicate_window_hours)
    stmt = select(Case).where(
        Case.category_id == case.category_id,
        Case.id != case.id,
        Case.status.in_(list(OPEN_STATUSES)),
        Case.created_at >= case.created_at - window,
        Case.created_at <= case.created_at + window,
    )
    located = case.latitude is not None and case.longitude is not None
    if located:
        # A bounding box the database can use before the exact distance below.
        dlat = category.duplicate_radius_m / 111_320.0
        dlon = dlat / max(math.cos(math.radians(case.latitude)), 0.01)
        stmt = stmt.where(
            Case.latitude.between(case.latitude - dlat, case.latitude + dlat),
            Case.longitude.between(case.longitude - dlon, case.longitude + dlon),
        )
    elif case.grid_id is not None:
        stmt = stmt.where(Case.grid_id == case.grid_id)
    else:
        return []
    found: list[DuplicateCandidate] = []
    for other in session.exec(stmt.limit(200)).all():
        hours = abs((other.created_at - case.created_at).total_seconds()) / 3600
        if located:
            d = distance_m(case.latitude, case.longitude, other.latitude, other.longitude)
            if d > category.duplicate_radius_m:
                continue
            found.append(DuplicateCandidate(other, d, hours, "duplicate.near",
                                            {"category": category.name, "metres": f"{d:.0f}", "hours": f"{hours:.1f}"}))
        else:
            found.append(DuplicateCandidate(other, None, hours, "duplicate.same_grid",
                                            {"category": category.name, "hours": f"{hours:.1f}"}))
    found.sort(key=lambda c: (c.distance_m if c.distance_m is not None else 0.0, c.hours_apart))
    return found[:limit]
