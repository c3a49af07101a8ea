"""Who owns a case at a grid level: the responsible worker of a grid, climbing the
ladder past levels with nobody on duty. Read-only; the actions that hand a case over
(dispatch, escalate) call these."""

from __future__ import annotations

from sqlalchemy import bindparam
from sqlmodel import Session, select

from core.errors import InvalidInput
from core.people.models import Worker, WorkerGrid
from core.places.models import GRID_LEVELS, Grid, GridLevel
from core.platform.rules import load_rules


def grid_at_level(session: Session, grid: Grid, level: GridLevel) -> Grid | None:
    """The ancestor (or the grid itself) at ``level``."""
    node: Grid | None = grid
    while node is not None and node.level != level:
        node = session.get(Grid, node.parent_id) if node.parent_id else None
    return node


# Built once (every dispatch asks it); the grid is its parameter.
_ON_DUTY = select(Worker, WorkerGrid.is_leader).join(WorkerGrid, WorkerGrid.worker_id == Worker.id) \
    .where(WorkerGrid.grid_id == bindparam("grid_id"), Worker.active == True)  # noqa: E712


def responsible_worker(session: Session, grid_id: int) -> Worker | None:
    """Who takes a case in this grid: by the role order of rules.toml ``[dispatch]`` (the
    paid grid worker before a volunteer micro-grid leader), then leaders first, then code."""
    rank = {role: i for i, role in enumerate(load_rules()["dispatch"]["role_order"])}
    rows = session.execute(_ON_DUTY, {"grid_id": grid_id}).all()
    if not rows:
        return None
    return min(rows, key=lambda r: (rank.get(r[0].role.value, len(rank)), not r[1], r[0].code))[0]


def owner_for(session: Session, grid: Grid, level: GridLevel) -> tuple[Grid, GridLevel, Worker]:
    """The grid and worker that own a case at ``level``; climbs the ladder past levels
    with nobody on duty, because a case must never sit with no owner."""
    start = GRID_LEVELS.index(level)
    for lvl in GRID_LEVELS[start:]:
        owner_grid = grid_at_level(session, grid, lvl)
        if owner_grid is None:
            continue
        worker = responsible_worker(session, owner_grid.id)
        if worker is not None:
            return owner_grid, lvl, worker
    raise InvalidInput(f"no worker is responsible for grid {grid.code} or any grid above it",
                       code="routing.no_owner", grid=grid.code)
