"""The ``gridline`` command: serve, database, demo data, imports, cases, speech, simulator."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.errors import DomainError, NotFound
from core.platform.i18n import DEFAULT as DEFAULT_LANGUAGE
from core.platform.i18n import case_routing_text, reason_text
from core.platform.settings import SettingsInvalid, get_settings
from gridline.commands import register_all
from gridline.commands.common import console, fail, open_database
from gridline.wiring import wire

# Lazy on purpose: each command imports in its body what it runs, so `gridline --help` and a
# command load only their own modules (all of them take several times longer to import).


def explain(error: BaseException) -> str | None:
    """What a person should read instead of a traceback: one line that says what is wrong
    and what to do, for the problems of configuration, database and files that a
    newcomer meets. ``None`` for anything else (a bug keeps its traceback)."""
    from core.platform.db import explain_error
    from core.platform.media import MediaSettingInvalid
    from core.platform.rules import RulesError

    if isinstance(error, SettingsInvalid | RulesError | MediaSettingInvalid):
        return str(error)
    try:
        database = get_settings().effective_database_url
    except SettingsInvalid:
        database = None
    message = explain_error(error, database)
    if message is not None:
        return message
    if isinstance(error, OSError) and error.filename:
        return f"cannot use {error.filename}: {error.strerror or error}"
    return None


class _ExplainingGroup(typer.core.TyperGroup):
    """Turns the problems :func:`explain` knows into one ``error:`` line and exit status 1."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201
        wire()  # any command may change a case: what follows a change is wired first
        try:
            return super().invoke(ctx)
        except Exception as error:  # explain() picks what it knows; the rest goes on up
            message = explain(error)
            if message is None:
                raise
            Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(help="Gridline: grid-based community governance (网格化管理) hotline and chat petitions.",
                  no_args_is_help=True, add_completion=False, cls=_ExplainingGroup,
                  pretty_exceptions_show_locals=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
demo_app = typer.Typer(help="The fictional demo district.", no_args_is_help=True)
grids_app = typer.Typer(help="Grids, workers and households.", no_args_is_help=True)
cases_app = typer.Typer(help="Look at cases.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(grids_app, name="grids")
app.add_typer(cases_app, name="cases")

# `cases list` and `grids households` print at most this many rows at once.
MAX_ROWS = 1000


def _engine(*, migrated: bool = True):
    return open_database(migrated=migrated)


def _fail(message: str) -> None:
    fail(message)


@app.command()
def serve(
    host: str = typer.Option(None, help="interface to listen on (GRIDLINE_HOST, default 127.0.0.1)"),
    port: int = typer.Option(None, help="port (GRIDLINE_PORT, default 8080)"),
    no_demo: bool = typer.Option(False, "--no-demo", help="do not load the demo district into an empty database"),
    listen_fd: int = typer.Option(None, "--listen-fd", help="serve on this already listening socket, "
                                  "inherited from a supervisor (socket activation); --host/--port are then ignored"),
    processes: int = typer.Option(1, "--processes", min=1,
                                  help="processes serving the one port, to use every core (e.g. the number of "
                                  "cores); a process that dies is started again"),
    workers: int = typer.Option(None, "--workers", min=1, hidden=True,
                                help="deprecated name of --processes (a worker is a grid worker)"),
    process_index: int = typer.Option(None, "--process-index", hidden=True,
                                      help="set by `serve --processes` for each process it starts"),
) -> None:
    """Upgrade the database, load the demo district if it is empty, and serve everything."""
    if workers is not None:
        if processes not in (1, workers):
            _fail(f"--workers {workers} and --processes {processes}: --workers is the old name of --processes; "
                  "give only --processes")
        from gridline.commands.common import deprecated

        deprecated("serve --workers", "serve --processes")
        processes = workers
    from aiohttp import web

    from gridline.access_log import RedactingAccessLogger
    from gridline.app import build_app, prepare_database
    from gridline.logs import configure as configure_logging

    several = processes > 1 or process_index is not None
    settings = get_settings()
    # text, or one JSON object per line; ids on each line (and, under --processes, the process)
    configure_logging(settings.log_format, with_process=several)
    # With JSON logs every line the server writes is a log record, for the log shipper.
    say = _log_line if settings.log_format == "json" else console.print
    if process_index is None:  # a served process's supervisor prepared the database for all of them
        engine = _engine(migrated=False)
        from core.platform.media import media_store

        store = media_store(settings)
        store.check()  # a wrong bucket, endpoint or key: one line naming the setting, before anything starts
        if prepare_database(engine, load_demo=settings.load_demo_on_empty and not no_demo):
            say("loaded the demo district into the empty database")
    if processes > 1:
        import socket

        from gridline.processes import Supervisor, listening_socket

        if settings.telegram_token and settings.telegram_mode == "polling":
            _fail("--processes needs GRIDLINE_TELEGRAM_MODE=webhook: a bot is polled by one process only")
        engine.dispose()  # the processes open their own connections
        sock = socket.socket(fileno=listen_fd) if listen_fd is not None else \
            listening_socket(host or settings.host, port if port is not None else settings.port)
        raise typer.Exit(Supervisor(processes, sock).run())
    if process_index is not None:
        engine = _engine()
    from gridline.speech import build_speech

    app_ = build_app(settings, engine=engine, speech=build_speech(settings), server_gc=True)
    banner = _log_line if settings.log_format == "json" else print
    if process_index is not None:
        from gridline.processes import stop_with_supervisor

        stop_with_supervisor(app_)
    if listen_fd is not None:
        import socket

        # The supervisor keeps the socket across restarts of this process: callers who
        # connect while it restarts wait in the backlog instead of being refused.
        web.run_app(app_, sock=socket.socket(fileno=listen_fd), access_log_class=RedactingAccessLogger,
                    print=banner)
        return
    web.run_app(app_, host=host or settings.host, port=port if port is not None else settings.port,
                access_log_class=RedactingAccessLogger, print=banner)  # the path and a redacted query


def _log_line(*parts: object) -> None:
    import logging

    logging.getLogger("gridline.serve").info(" ".join(str(p) for p in parts).strip())


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from core.platform.db import current_revision, schema_lock, upgrade

    engine = _engine(migrated=False)
    with schema_lock(engine):
        upgrade(engine, revision)
    console.print(f"database at revision {current_revision(engine)}")


@db_app.command("revision")
def db_revision(message: str = typer.Option(..., "-m", "--message", help="what the migration changes")) -> None:
    """Write a new migration from the difference between the tables (gridline/tables.py) and the database."""
    from alembic import command

    from core.platform.db import alembic_config, upgrade

    engine = _engine(migrated=False)
    upgrade(engine)  # compare against the newest schema, not an old one
    command.revision(alembic_config(engine), message=message, autogenerate=True)


DEMO_SIZES = ("demo", "district-year")


@demo_app.command("load")
def demo_load(
    size: str = typer.Option("demo", "--size", help="demo: the district alone; district-year: the district with a "
                             "year of its history (1,000,000 cases with their events and surveys, a household "
                             "registry), into an empty database"),
    cases: int = typer.Option(None, "--cases", min=1, help="with --size district-year: this many cases instead"),
) -> None:
    """Load the demo district (grids, workers, 500 households, categories, 2026 calendar),
    with --size district-year a year of its history too."""
    from core.actions.reference import load_demo
    from core.platform.db import session_scope, upgrade

    if size not in DEMO_SIZES:
        _fail(f"--size {size!r}: one of {', '.join(DEMO_SIZES)}")
    if cases is not None and size != "district-year":
        _fail("--cases goes with --size district-year")
    engine = _engine(migrated=False)
    upgrade(engine)
    if size == "district-year":
        from core.actions.reference import load_district_year
        from core.reference.history import DISTRICT_YEAR_CASES

        count = cases or DISTRICT_YEAR_CASES
        console.print(f"loading the demo district with a year of history: {count:,} cases "
                      "(a few minutes per million on PostgreSQL) ...")
        try:
            data = load_district_year(engine, cases=count, actor=_cli_actor())
        except DomainError as exc:
            _fail(exc.message)
        console.print(f"loaded {data}")
        return
    try:
        with session_scope(engine) as session:
            summary = load_demo(session, actor=_cli_actor())
    except DomainError as exc:
        _fail(exc.message)
    console.print(f"demo district loaded: {summary}")


def _import(kind: str, path: Path) -> None:
    from core.actions import reference
    from core.platform.db import session_scope, upgrade

    engine = _engine(migrated=False)
    upgrade(engine)
    func = {"grids": reference.import_grids, "workers": reference.import_workers,
            "households": reference.import_households}[kind]
    try:
        with session_scope(engine) as session:
            count = func(session, path, actor=_cli_actor())
    except DomainError as exc:
        _fail(exc.message)
    console.print(f"imported {count} {kind} from {path}")


@grids_app.command("import")
def grids_import(path: Path = typer.Argument(..., exists=True, dir_okay=False, help="a GeoJSON FeatureCollection")) -> None:
    """Import or update grids from GeoJSON (properties code, name, level, parent_code)."""
    _import("grids", path)


@grids_app.command("export")
def grids_export(path: Path = typer.Argument(..., dir_okay=False, help="GeoJSON file to write")) -> None:
    """Write every grid as a GeoJSON FeatureCollection (re-importable with `grids import`)."""
    from core.platform.db import session_scope
    from core.reference.importers import export_grids_geojson

    path = path.expanduser()
    if not path.parent.is_dir():
        _fail(f"cannot write {path}: the folder {path.parent} does not exist")
    with session_scope(_engine()) as session:
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


@cases_app.command("list")
def cases_list(
    status: str = typer.Option(None, help="only cases in this status"),
    limit: int = typer.Option(30, min=1, max=MAX_ROWS, help=f"how many, newest first (1–{MAX_ROWS})"),
) -> None:
    """The newest cases."""
    from sqlmodel import select

    from core.cases.models import Case, CaseStatus, Category
    from core.places.models import Grid
    from core.platform.db import session_scope

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
    """One case: its details, what the resident said, its files, the survey and its history."""
    from sqlmodel import select

    from core.actions import get_case
    from core.cases.models import CaseEvent, Category
    from core.cases.queries import case_files
    from core.followup.models import Survey
    from core.places.models import Grid
    from core.platform.db import session_scope
    from core.platform.storage import resolve

    settings = get_settings()
    with session_scope(_engine()) as session:
        try:
            case = get_case(session, number)
        except NotFound as exc:
            _fail(exc.message)
        events = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all()
        files = case_files(session, case.id)
        surveys = session.exec(select(Survey).where(Survey.case_id == case.id).order_by(Survey.id)).all()
        category = session.get(Category, case.category_id) if case.category_id else None
        grid = session.get(Grid, case.grid_id) if case.grid_id else None
    info = Table(show_header=False)
    named = {"category": f"{category.name} ({category.code})" if category else "",
             "grid": f"{grid.name} ({grid.code})" if grid else "",
             # Said in the district's language: the words the console shows by default.
             "routing": case_routing_text(DEFAULT_LANGUAGE, case.routing_trace, case.routing_reason) or ""}
    for key in ("number", "status", "channel", "description", "address_text", "category", "grid", "owner_level",
                "worker_id", "department_id", "response_due", "resolution_due", "routing", "flags"):
        value = named[key] if key in named else getattr(case, key)
        info.add_row(key, escape(str(value.value if hasattr(value, "value") else value or "")))
    console.print(info)

    if case.transcript:
        words = Table("from (s)", "to (s)", "confidence", "heard", title="transcript (as recognised)")
        for seg in case.transcript:
            conf = seg.get("confidence")
            words.add_row(_seconds(seg.get("start")), _seconds(seg.get("end")),
                          f"{conf:.2f}" if isinstance(conf, int | float) else "", escape(str(seg.get("text", ""))))
        console.print(words)
        if case.transcript_confidence is not None:
            console.print(f"mean confidence {case.transcript_confidence:.2f}")
    else:
        console.print("transcript: none (typed, or not recognised yet)")

    if files:
        # One line per file, never cut or wrapped, so a path can be copied as printed.
        console.print("recordings and attachments:")
        from core.platform.media import MediaUnavailable, media_store

        store = media_store(settings)
        for f in files:
            try:
                there = f.upload_pending or store.stat(f.path) is not None
            except MediaUnavailable:
                there = True  # cannot tell now; `gridline media check` will
            state = ("  (waiting in a spool for upload)" if f.upload_pending
                     else "" if there else "  [red](missing from the media store)[/red]")
            shown = resolve(f.path, settings.data_dir) if store.spool_is_store else f.path
            console.print(f"  {f.kind:<9} {f.mime_type or '':<11} {_size(f.size):>8}  {escape(str(shown))}{state}",
                          soft_wrap=True)
    else:
        console.print("recordings and attachments: none")

    if surveys:
        table = Table("channel", "status", "attempts", "solved", "satisfied", "comment", "answered (UTC)",
                      title="follow-up survey")
        for sv in surveys:
            table.add_row(sv.channel, sv.status.value, str(sv.attempts), sv.solved or "", sv.satisfied or "",
                          escape(sv.comment or ""), sv.answered_at.strftime("%Y-%m-%d %H:%M") if sv.answered_at else "")
        console.print(table)
    else:
        console.print("follow-up survey: none yet")

    history = Table("at (UTC)", "action", "from", "to", "actor", "reason", title="history")
    for ev in events:
        history.add_row(ev.at.strftime("%Y-%m-%d %H:%M:%S"), ev.action,
                        ev.from_status.value if ev.from_status else "", ev.to_status.value, ev.actor,
                        escape(reason_text(DEFAULT_LANGUAGE, ev.reason, ev.data) or ""))
    console.print(history)


def _seconds(value) -> str:  # noqa: ANN001
    return f"{value:.1f}" if isinstance(value, int | float) else ""


def _size(size: int | None) -> str:
    if size is None:
        return ""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB" if size >= 1e3 else f"{size} B"


@grids_app.command("households")
def grids_households(
    grid: str = typer.Option(None, help="only households of this grid code (or of the grids under it)"),
    limit: int = typer.Option(50, min=1, max=MAX_ROWS, help=f"how many (1–{MAX_ROWS})"),
) -> None:
    """Registered households and their residents' phone numbers (a caller from one of these
    numbers is routed by their household). The view is written to the audit trail."""
    from sqlmodel import select

    from core.people import audit
    from core.people.models import Resident
    from core.places.models import Grid, Household
    from core.platform.db import session_scope

    with session_scope(_engine()) as session:
        stmt = (select(Household, Grid, Resident).join(Grid, Grid.id == Household.grid_id)
                .outerjoin(Resident, Resident.household_id == Household.id)
                .order_by(Household.code, Resident.id))
        if grid:
            root = session.exec(select(Grid).where(Grid.code == grid)).first()
            if root is None:
                _fail(f"no grid has code {grid!r} (gridline grids export FILE lists them)")
            stmt = stmt.where(Grid.id.in_(_grid_and_below(session, root.id)))
        rows = session.exec(stmt.limit(limit)).all()
        audit.record(session, actor=_cli_actor(), action="view_households", target_type="grid",
                     target_id=grid, detail={"rows": len(rows)})
    table = Table("household", "address", "grid", "resident", "phone")
    for household, g, resident in rows:
        table.add_row(household.code, escape(household.address), f"{g.name} ({g.code})",
                      escape(resident.name or "") if resident else "", resident.phone or "" if resident else "")
    console.print(table)
    if len(rows) == limit:
        console.print(f"(the first {limit}; --limit shows more, --grid narrows)")


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in a bare container
        return "cli"


def _grid_and_below(session, grid_id: int) -> list[int]:  # noqa: ANN001
    from sqlmodel import select

    from core.places.models import Grid

    ids, frontier = [grid_id], [grid_id]
    while frontier:
        frontier = list(session.exec(select(Grid.id).where(Grid.parent_id.in_(frontier))).all())
        ids += frontier
    return ids


def _register_optional_commands() -> None:
    """Commands that live beside their channel's composition code."""

    register_all(app)


_register_optional_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
