"""``gridline demo``: the fictional demo district, and the grid's part on a demo case."""

from __future__ import annotations

import typer

from core import actions
from core.actions.reference import load_demo, load_district_year
from core.cases.models import CaseStatus as S
from core.errors import DomainError
from core.platform.db import session_scope
from core.platform.migrations import upgrade
from core.reference.history import DISTRICT_YEAR_CASES
from gridline.commands.common import cli_actor, console, fail, open_database

demo_app = typer.Typer(help="The fictional demo district.", no_args_is_help=True)

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
    if size not in DEMO_SIZES:
        fail(f"--size {size!r}: one of {', '.join(DEMO_SIZES)}")
    if cases is not None and size != "district-year":
        fail("--cases goes with --size district-year")
    engine = open_database(migrated=False)
    upgrade(engine)
    if size == "district-year":
        count = cases or DISTRICT_YEAR_CASES
        console.print(f"loading the demo district with a year of history: {count:,} cases "
                      "(a few minutes per million on PostgreSQL) ...")
        try:
            data = load_district_year(engine, cases=count, actor=cli_actor())
        except DomainError as exc:
            fail(exc.message)
        console.print(f"loaded {data}")
        return
    try:
        with session_scope(engine) as session:
            summary = load_demo(session, actor=cli_actor())
    except DomainError as exc:
        fail(exc.message)
    console.print(f"demo district loaded: {summary}")


@demo_app.command("handle")
def demo_handle(
    number: str = typer.Argument(..., help="the case number"),
    category: str = typer.Option("", help="category code for a case that has none yet (e.g. streetlight)"),
) -> None:
    """The grid's part on a demo case, so its follow-up becomes due: classify (when it has no
    category yet), dispatch to its grid, accept, report done and verify, each through the
    core's actions as `demo:operator`, `demo:worker` and `demo:leader`."""
    engine = open_database()
    try:
        with session_scope(engine) as session:
            case = actions.get_case(session, number)
            if case.status in (S.received, S.returned, S.reopened):
                if case.category_id is None:
                    if not category:
                        fail(f"case {number} has no category yet: say --category (e.g. streetlight)")
                    actions.classify(session, case, actor="demo:operator", category_code=category)
                if case.grid_id is None:
                    fail(f"case {number} has no grid yet: an operator places it in the console's triage first")
                actions.dispatch(session, case, actor="demo:operator", reason="demo")
            if case.status == S.dispatched:
                actions.accept(session, case, actor="demo:worker")
            if case.status in (S.accepted, S.in_progress):
                actions.report_done(session, case, actor="demo:worker", note="演示：已处理完毕")
            if case.status == S.reported_done:
                actions.verify(session, case, actor="demo:leader")
            status = case.status.value
    except DomainError as exc:
        fail(exc.message)
    console.print(f"case {number}: {status}; its follow-up is queued (`gridline simulate-survey --case {number}`)")
