"""Tables of places: the grid ladder, households, the gazetteer and the routing indexes' version.
"""

from __future__ import annotations

import enum

from pydantic import NaiveDatetime
from sqlmodel import Field, SQLModel

from core.platform.clock import utcnow
from core.platform.models import enum_type, json_column


class GridLevel(enum.StrEnum):
    district = "district"
    street = "street"
    community = "community"
    area = "area"
    micro = "micro"


# Ownership climbs this ladder when a deadline passes or a handler escalates.
GRID_LEVELS: tuple[GridLevel, ...] = (
    GridLevel.micro,
    GridLevel.area,
    GridLevel.community,
    GridLevel.street,
    GridLevel.district,
)


class Grid(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(index=True, unique=True, max_length=32)
    name: str = Field(max_length=128)
    level: GridLevel = Field(index=True, sa_type=enum_type(GridLevel))
    parent_id: int | None = Field(default=None, foreign_key="grid.id", index=True)
    # GeoJSON geometry (WGS84, lon/lat order) or None for grids without a drawn boundary.
    geometry: dict | None = json_column()


class Household(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, max_length=32)
    address: str = Field(max_length=256)
    grid_id: int = Field(foreign_key="grid.id", index=True)


class GazetteerEntry(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, index=True)
    kind: str = Field(max_length=16)  # community, building, street, landmark, alias
    grid_id: int = Field(foreign_key="grid.id", index=True)


class IndexVersion(SQLModel, table=True):
    """Bumped in the same transaction as every change to what the routing indexes are built
    from (grids, gazetteer, households, calendar), so every process knows when to rebuild
    its copy (``core.places.indexes``)."""

    name: str = Field(primary_key=True, max_length=32)
    version: int = 0
    changed_at: NaiveDatetime = Field(default_factory=utcnow)
