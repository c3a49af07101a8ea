"""``gridline grids``: grids, workers and households: imports, export, the household list."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from sqlmodel import select

from core.actions import reference
from core.errors import DomainError
from core.people import audit
from core.people.models import Resident
from core.places.models import Grid, Household
from core.platform.db import session_scope
from core.platform.migrations import upgrade
from core.reference.importers import export_grids_geojson
from gridline.commands import terminal
from gridline.commands.common import MAX_ROWS, cli_actor, console, fail, open_database

grids_app = typer.Typer(help="Grids, workers and households.", no_args_is_help=True)

def _import(kind: str, path: Path) -> None:
    engine = open_database(migrated=False)
    upgrade(engine)
    func = {"grids": reference.import_grids, "workers": reference.import_workers,
            "households": reference.import_households}[kind]
    try:
        with session_scope(engine) as session:
            count = func(session, path, actor=cli_actor())
    except DomainError as exc:
        fail(exc.message)
    console.print(f"imported {count} {kind} from {path}")


@grids_app.command("import")
def grids_import(path: Path = typer.Argument(..., exists=True, dir_okay=False, help="a GeoJSON FeatureCollection")) -> None:
    """Import or update grids from GeoJSON (properties code, name, level, parent_code)."""
    _import("grids", path)


@grids_app.command("export")
def grids_export(path: Path = typer.Argument(..., dir_okay=False, help="GeoJSON file to write")) -> None:
    """Write every grid as a GeoJSON FeatureCollection (re-importable with `grids import`)."""
    path = path.expanduser()
    if not path.parent.is_dir():
        fail(f"cannot write {path}: the folder {path.parent} does not exist")
    with session_scope(open_database()) as session:
        count = export_grids_geojson(session, path)
    console.print(f"wrote {count} grids to {path}", soft_wrap=True)


@grids_app.command("import-workers")
def workers_import(path: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Import workers from CSV (code,name,role,phone,grid_codes,is_leader)."""
    _import("workers", path)


@grids_app.command("import-households")
def households_import(path: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Import households from CSV (code,address,grid_code,resident_name,phone)."""
    _import("households", path)


@grids_app.command("households")
def grids_households(
    grid: str = typer.Option(None, help="only households of this grid code (or of the grids under it)"),
    limit: int = typer.Option(50, min=1, max=MAX_ROWS, help=f"how many (1–{MAX_ROWS})"),
) -> None:
    """Registered households and their residents' phone numbers (a caller from one of these
    numbers is routed by their household). The view is written to the audit trail."""
    with session_scope(open_database()) as session:
        stmt = (select(Household, Grid, Resident).join(Grid, Grid.id == Household.grid_id)
                .outerjoin(Resident, Resident.household_id == Household.id)
                .order_by(Household.code, Resident.id))
        if grid:
            root = session.exec(select(Grid).where(Grid.code == grid)).first()
            if root is None:
                fail(f"no grid has code {grid!r} (gridline grids export FILE lists them)")
            stmt = stmt.where(Grid.id.in_(_grid_and_below(session, root.id)))
        rows = session.exec(stmt.limit(limit)).all()
        audit.record(session, actor=cli_actor(), action="view_households", target_type="grid",
                     target_id=grid, detail={"rows": len(rows)})
    table = terminal.table("household", "address", "grid", "resident", "phone")
    for household, g, resident in rows:
        table.add_row(household.code, escape(household.address), f"{g.name} ({g.code})",
                      escape(resident.name or "") if resident else "", resident.phone or "" if resident else "")
    console.print(table)
    if len(rows) == limit:
        console.print(f"(the first {limit}; --limit shows more, --grid narrows)")


def _grid_and_below(session, grid_id: int) -> list[int]:  # noqa: ANN001
    ids, frontier = [grid_id], [grid_id]
    while frontier:
        frontier = list(session.exec(select(Grid.id).where(Grid.parent_id.in_(frontier))).all())
        ids += frontier
    return ids

