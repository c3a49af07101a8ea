"""The grid ladder as the console shows it: a tree to open level by level (district → street →
community → area → micro), a search by name, a grid's chain of parents, its map, and the
workers who may own a case placed in it.

Who owns a case follows ``core.people.owners.owner_for``: the grid's own worker, or, where
nobody is on duty, the worker of the grid above it, up the ladder. So the workers offered for
a grid are those of the grid and of every grid above it, nearest first; a worker of a
neighbouring grid is not offered."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import Session, select

from console import svgmap
from console.access import Principal, scoped, with_descendants
from core.cases.models import Case, CaseStatus
from core.errors import InvalidInput, NotFound
from core.people.models import Worker, WorkerGrid
from core.places.models import Grid, GridLevel

# Statuses of a case nobody has to work on any more.
SETTLED = (CaseStatus.closed, CaseStatus.merged)
SEARCH_LIMIT = 30


@dataclass
class Node:
    grid: Grid
    children: list[Node] = field(default_factory=list)
    has_children: bool = False
    open: bool = False  # on the way to the grid opened: its children are listed


@dataclass
class Found:
    grid: Grid
    path: list[Grid]  # from the top of the ladder down to the grid itself


@dataclass
class Staff:
    worker: Worker
    grid: Grid  # the grid the worker answers for: the chosen one or one above it
    leader: bool


def chain(session: Session, grid: Grid | None) -> list[Grid]:
    """The grid and its parents, from the top of the ladder down."""
    path: list[Grid] = []
    node = grid
    while node is not None:
        path.insert(0, node)
        node = session.get(Grid, node.parent_id) if node.parent_id else None
    return path


def by_code(session: Session, code: str) -> Grid:
    grid = session.exec(select(Grid).where(Grid.code == code.strip())).first()
    if grid is None:
        raise NotFound(f"no grid {code!r}", code="grid.not_found", grid=code)
    return grid


def by_code_or_name(session: Session, value: str) -> Grid:
    """A grid as a person names it in a form: its code, or its name when only one grid bears it
    (two communities may each have a 一网格: then the tree or the code tells them apart)."""
    value = value.strip()
    grid = session.exec(select(Grid).where(Grid.code == value)).first()
    if grid is not None:
        return grid
    named = session.exec(select(Grid).where(Grid.name == value).limit(2)).all()
    if len(named) == 1:
        return named[0]
    if named:
        raise InvalidInput(f"several grids are named {value!r}: choose one from the tree",
                           code="console.grid_ambiguous", grid=value)
    raise NotFound(f"no grid {value!r}", code="grid.not_found", grid=value)


def visible(principal: Principal) -> frozenset[int] | None:
    """The grids an account may open pages of (None: every grid): its own and those below."""
    return None if principal.sees_all else principal.grid_ids


def tree(session: Session, principal: Principal, opened: Grid | None) -> list[Node]:
    """The top of the ladder this account sees, each level listed, and opened along the way
    down to ``opened`` (its children listed too)."""
    allowed = visible(principal)
    way = {g.id for g in chain(session, opened)} if opened is not None else set()
    rows = session.exec(select(Grid.id, Grid.parent_id)).all()
    parents = dict(rows)
    with_children = {parent for _, parent in rows if parent is not None}
    if allowed is None:
        tops = [gid for gid, parent in rows if parent is None]
    else:  # an account's own top grids: those whose parent it does not see
        tops = [gid for gid in allowed if parents.get(gid) not in allowed]

    def grids(ids: list[int]) -> list[Grid]:
        return list(session.exec(select(Grid).where(Grid.id.in_(ids)).order_by(Grid.code)).all()) if ids else []

    def nodes(ids: list[int]) -> list[Node]:
        out = []
        for grid in grids(ids):
            node = Node(grid, has_children=grid.id in with_children, open=grid.id in way)
            if node.open:
                node.children = nodes([gid for gid, parent in rows if parent == grid.id])
            out.append(node)
        return out

    return nodes(tops)


def search(session: Session, principal: Principal, words: str, limit: int = SEARCH_LIMIT) -> list[Found]:
    """Grids whose name contains ``words`` (or whose code starts with them), the highest
    level first, each with its chain of parents so that two grids of one name are told apart."""
    words = words.strip()[:64]
    if not words:
        return []
    escaped = words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    stmt = select(Grid).where(Grid.name.like(f"%{escaped}%", escape="\\") | Grid.code.like(f"{escaped}%", escape="\\"))
    allowed = visible(principal)
    if allowed is not None:
        stmt = stmt.where(Grid.id.in_(sorted(allowed) or [-1]))
    level_order = {level: i for i, level in enumerate(reversed(GridLevel.__members__.values()))}
    found = sorted(session.exec(stmt.limit(limit * 4)).all(),
                   key=lambda g: (-level_order.get(g.level, 0), len(g.name), g.code))[:limit]
    return [Found(g, chain(session, g)) for g in found]


def staff_for(session: Session, grid: Grid) -> list[Staff]:
    """The active workers who may own a case in ``grid``: its own, then those of each grid
    above it (nearest first), as ``owner_for`` climbs the ladder."""
    path = chain(session, grid)
    order = {g.id: i for i, g in enumerate(reversed(path))}
    by_id = {g.id: g for g in path}
    rows = session.exec(select(WorkerGrid, Worker).join(Worker, Worker.id == WorkerGrid.worker_id)
                        .where(WorkerGrid.grid_id.in_(list(by_id)), Worker.active == True)).all()  # noqa: E712
    rows = sorted(rows, key=lambda r: (order[r[0].grid_id], not r[0].is_leader, r[1].code))
    seen: set[int] = set()
    out = []
    for link, worker in rows:
        if worker.id not in seen:
            seen.add(worker.id)
            out.append(Staff(worker, by_id[link.grid_id], link.is_leader))
    return out


def open_cases(session: Session, principal: Principal, grid: Grid) -> int:
    """Cases in the grid or below it that are not closed or merged, as far as the account sees."""
    ids = sorted(with_descendants(session, {grid.id}))
    stmt = select(func.count()).select_from(Case).where(Case.grid_id.in_(ids), Case.status.not_in(SETTLED))
    return int(session.exec(scoped(stmt, principal)).one())


def drawing(session: Session, grid: Grid | None, point: tuple[float, float] | None = None,
            ) -> svgmap.Drawing | None:
    """The grid on its map: it and its siblings (or, for a grid with no boundary of its own,
    the grids in it), the grid highlighted; with only a point, the micro grids around it."""
    shapes: list[svgmap.Shape] = []
    if grid is not None:
        siblings = (session.exec(select(Grid).where(Grid.parent_id == grid.parent_id)).all()
                    if grid.parent_id else [grid])
        if grid.geometry is None:  # a grid above the micro level: draw what lies in it
            siblings = session.exec(select(Grid).where(Grid.parent_id == grid.id)).all() or siblings
        for g in siblings[:200]:
            rings = svgmap.rings_of(g.geometry)
            if rings:
                shapes.append(svgmap.Shape(g.id, g.code, g.name, rings, highlight=g.id == grid.id))
    elif point is not None:
        d = 0.01
        for g in session.exec(select(Grid).where(Grid.level == GridLevel.micro)).all():
            rings = svgmap.rings_of(g.geometry)
            if rings and any(abs(x - point[0]) < d and abs(y - point[1]) < d for r in rings for x, y in r):
                shapes.append(svgmap.Shape(g.id, g.code, g.name, rings))
    return svgmap.draw(shapes, point)
