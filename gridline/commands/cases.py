"""``gridline cases``: look at cases from the command line."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.markup import escape
from sqlmodel import select

from core.actions import get_case
from core.cases.models import Case, CaseEvent, CaseStatus, Category
from core.cases.queries import case_files
from core.errors import NotFound
from core.followup.models import Survey
from core.places.models import Grid
from core.platform.clock import local_text, zone_label
from core.platform.db import session_scope
from core.platform.i18n import DEFAULT as DEFAULT_LANGUAGE
from core.platform.i18n import case_routing_text, reason_text
from core.platform.media import MediaUnavailable
from core.platform.media_stores import media_store
from core.platform.settings import get_settings
from core.platform.storage import resolve
from gridline.commands import terminal
from gridline.commands.common import MAX_ROWS, console, fail, open_database

cases_app = typer.Typer(help="Look at cases.", no_args_is_help=True)

@cases_app.command("list")
def cases_list(
    status: str = typer.Option(None, help="only cases in this status"),
    limit: int = typer.Option(30, min=1, max=MAX_ROWS, help=f"how many, newest first (1–{MAX_ROWS})"),
) -> None:
    """The newest cases."""
    with session_scope(open_database()) as session:
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
                fail(f"unknown status {status!r}; one of {', '.join(s.value for s in CaseStatus)}")
        rows = session.exec(stmt).all()
    table = terminal.table("number", "status", "channel", "category", "grid", f"due ({zone_label()})", "description")
    for case, category, grid in rows:
        due = local_text(case.resolution_due, "%m-%d %H:%M", label=False)
        table.add_row(case.number, case.status.value, case.channel.value, category or "", grid or "",
                      due, escape(case.description or ""))
    console.print(table)


@cases_app.command("show")
def cases_show(number: str) -> None:
    """One case: its details, what the resident said, its files, the survey and its history."""
    settings = get_settings()
    with session_scope(open_database()) as session:
        try:
            case = get_case(session, number)
        except NotFound as exc:
            fail(exc.message)
        events = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all()
        files = case_files(session, case.id)
        surveys = session.exec(select(Survey).where(Survey.case_id == case.id).order_by(Survey.id)).all()
        # a merged duplicate's caller asked on this case: the duplicate's number
        asked = {sv.id: session.get(Case, sv.caller_case_id).number for sv in surveys if sv.caller_case_id}
        category = session.get(Category, case.category_id) if case.category_id else None
        grid = session.get(Grid, case.grid_id) if case.grid_id else None
    info = terminal.table("", "", show_header=False)
    named = {"category": f"{category.name} ({category.code})" if category else "",
             "grid": f"{grid.name} ({grid.code})" if grid else "",
             # Said in the district's language: the words the console shows by default.
             "routing": case_routing_text(DEFAULT_LANGUAGE, case.routing_trace, case.routing_reason) or ""}
    for key in ("number", "status", "channel", "description", "address_text", "category", "grid", "owner_level",
                "worker_id", "department_id", "response_due", "resolution_due", "routing", "flags"):
        value = named[key] if key in named else getattr(case, key)
        if isinstance(value, datetime):
            value = local_text(value)
        info.add_row(key, escape(str(value.value if hasattr(value, "value") else value or "")))
    console.print(info)

    if case.transcript:
        words = terminal.table("from (s)", "to (s)", "confidence", "heard", title="transcript (as recognised)")
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
        table = terminal.table("asked", "channel", "status", "attempts", "solved", "satisfied", "comment",
                               f"answered ({zone_label()})",
                      title="follow-up survey")
        for sv in surveys:
            table.add_row(f"caller of {asked[sv.id]}" if sv.id in asked else "own caller", sv.channel,
                          sv.status.value, str(sv.attempts), sv.solved or "", sv.satisfied or "",
                          escape(sv.comment or ""), local_text(sv.answered_at, label=False))
        console.print(table)
    else:
        console.print("follow-up survey: none yet")

    history = terminal.table(f"at ({zone_label()})", "action", "from", "to", "actor", "reason", title="history")
    for ev in events:
        history.add_row(local_text(ev.at, "%Y-%m-%d %H:%M:%S", label=False), ev.action,
                        ev.from_status.value if ev.from_status else "", ev.to_status.value, ev.actor,
                        escape(reason_text(DEFAULT_LANGUAGE, ev.reason, ev.data) or ""))
    console.print(history)


def _seconds(value) -> str:  # noqa: ANN001
    return f"{value:.1f}" if isinstance(value, int | float) else ""


def _size(size: int | None) -> str:
    if size is None:
        return ""
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB" if size >= 1e3 else f"{size} B"

