"""The ``gridline`` command: serve, database, demo data, imports, cases, speech, simulator."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from core.settings import get_settings

app = typer.Typer(help="Gridline: grid-based community governance (网格化管理) hotline and chat petitions.",
                  no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
demo_app = typer.Typer(help="The fictional demo district.", no_args_is_help=True)
grids_app = typer.Typer(help="Grids, workers and households.", no_args_is_help=True)
cases_app = typer.Typer(help="Look at cases.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(grids_app, name="grids")
app.add_typer(cases_app, name="cases")

console = Console()


def _engine():
    from core.db import make_engine

    return make_engine(get_settings().effective_database_url)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)  # file:line stays copyable
    raise typer.Exit(1)


@app.command()
def serve(
    host: str = typer.Option(None, help="interface to listen on (GRIDLINE_HOST, default 127.0.0.1)"),
    port: int = typer.Option(None, help="port (GRIDLINE_PORT, default 8080)"),
    no_demo: bool = typer.Option(False, "--no-demo", help="do not load the demo district into an empty database"),
    listen_fd: int = typer.Option(None, "--listen-fd", help="serve on this already listening socket, "
                                  "inherited from a supervisor (socket activation); --host/--port are then ignored"),
) -> None:
    """Upgrade the database, load the demo district if it is empty, and serve everything."""
    from aiohttp import web

    from gridline.app import build_app, prepare_database

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    engine = _engine()
    if prepare_database(engine, load_demo=settings.load_demo_on_empty and not no_demo):
        console.print("loaded the demo district into the empty database")
    from gridline.speech import build_speech

    app_ = build_app(settings, engine=engine, speech=build_speech(settings))
    if listen_fd is not None:
        import socket

        # The supervisor keeps the socket across restarts of this process: callers who
        # connect while it restarts wait in the backlog instead of being refused.
        web.run_app(app_, sock=socket.socket(fileno=listen_fd))
        return
    web.run_app(app_, host=host or settings.host, port=port if port is not None else settings.port)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from core.db import current_revision, upgrade

    engine = _engine()
    upgrade(engine, revision)
    console.print(f"database at revision {current_revision(engine)}")


@db_app.command("revision")
def db_revision(message: str = typer.Option(..., "-m", "--message", help="what the migration changes")) -> None:
    """Write a new migration from the difference between core/models.py and the database."""
    from alembic import command

    from core.db import alembic_config, upgrade

    engine = _engine()
    upgrade(engine)  # compare against the newest schema, not an old one
    command.revision(alembic_config(engine), message=message, autogenerate=True)


@demo_app.command("load")
def demo_load() -> None:
    """Load the demo district (grids, workers, 500 households, categories, 2026 calendar)."""
    from core.db import session_scope, upgrade
    from core.demo import load_demo
    from core.errors import DomainError

    engine = _engine()
    upgrade(engine)
    try:
        with session_scope(engine) as session:
            summary = load_demo(session)
    except DomainError as exc:
        _fail(exc.message)
    console.print(f"demo district loaded: {summary}")


def _import(kind: str, path: Path) -> None:
    from core import importers
    from core.db import session_scope, upgrade
    from core.errors import DomainError

    engine = _engine()
    upgrade(engine)
    func = {"grids": importers.import_grids_geojson, "workers": importers.import_workers_csv,
            "households": importers.import_households_csv}[kind]
    try:
        with session_scope(engine) as session:
            count = func(session, path)
    except DomainError as exc:
        _fail(exc.message)
    from core.intake import invalidate_routing

    invalidate_routing()
    console.print(f"imported {count} {kind} from {path}")


@grids_app.command("import")
def grids_import(path: Path = typer.Argument(..., exists=True, dir_okay=False, help="a GeoJSON FeatureCollection")) -> None:
    """Import or update grids from GeoJSON (properties code, name, level, parent_code)."""
    _import("grids", path)


@grids_app.command("export")
def grids_export(path: Path = typer.Argument(..., dir_okay=False, help="GeoJSON file to write")) -> None:
    """Write every grid as a GeoJSON FeatureCollection (re-importable with `grids import`)."""
    from core.db import session_scope
    from core.importers import export_grids_geojson

    with session_scope(_engine()) as session:
        count = export_grids_geojson(session, path)
    console.print(f"wrote {count} grids to {path}")


@grids_app.command("import-workers")
def workers_import(path: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Import workers from CSV (code,name,role,phone,grid_codes,is_leader)."""
    _import("workers", path)


@grids_app.command("import-households")
def households_import(path: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Import households from CSV (code,address,grid_code,resident_name,phone)."""
    _import("households", path)


@cases_app.command("list")
def cases_list(
    status: str = typer.Option(None, help="only cases in this status"),
    limit: int = typer.Option(30, help="how many, newest first"),
) -> None:
    """The newest cases."""
    from sqlmodel import select

    from core.db import session_scope
    from core.models import Case, CaseStatus, Category, Grid

    with session_scope(_engine()) as session:
        stmt = (
            select(Case, Category.name, Grid.name)
            .outerjoin(Category, Category.id == Case.category_id)
            .outerjoin(Grid, Grid.id == Case.grid_id)
            .order_by(Case.created_at.desc(), Case.id.desc())
            .limit(limit)
        )
        if status:
            try:
                stmt = stmt.where(Case.status == CaseStatus(status))
            except ValueError:
                _fail(f"unknown status {status!r}; one of {', '.join(s.value for s in CaseStatus)}")
        rows = session.exec(stmt).all()
    table = Table("number", "status", "channel", "category", "grid", "due", "description")
    for case, category, grid in rows:
        due = case.resolution_due.strftime("%m-%d %H:%M") if case.resolution_due else ""
        table.add_row(case.number, case.status.value, case.channel.value, category or "", grid or "",
                      due, (case.description or "")[:40])
    console.print(table)


@cases_app.command("show")
def cases_show(number: str) -> None:
    """One case with its history."""
    from sqlmodel import select

    from core.actions import get_case
    from core.db import session_scope
    from core.errors import NotFound
    from core.models import CaseEvent

    with session_scope(_engine()) as session:
        try:
            case = get_case(session, number)
        except NotFound as exc:
            _fail(exc.message)
        events = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all()
    info = Table(show_header=False)
    for key in ("number", "status", "channel", "description", "address_text", "grid_id", "owner_level",
                "worker_id", "department_id", "response_due", "resolution_due", "routing_reason", "flags"):
        value = getattr(case, key)
        info.add_row(key, str(value.value if hasattr(value, "value") else value or ""))
    console.print(info)
    history = Table("at (UTC)", "action", "from", "to", "actor", "reason")
    for ev in events:
        history.add_row(ev.at.strftime("%Y-%m-%d %H:%M:%S"), ev.action,
                        ev.from_status.value if ev.from_status else "", ev.to_status.value, ev.actor, ev.reason or "")
    console.print(history)


def _register_optional_commands() -> None:
    """Commands that live beside their channel's composition code."""
    from gridline.commands import register_all

    register_all(app)


_register_optional_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
