"""``gridline shred``: retention of residents' personal data."""

from __future__ import annotations

import typer

from core.cases.privacy import parse_age, shred_older_than
from core.errors import DomainError
from core.platform.clock import local_text
from core.platform.media_stores import media_store
from core.platform.settings import get_settings
from gridline.commands.common import console, fail, open_database


def shred(
    older_than: str = typer.Option("", "--older-than", help="shred cases closed more than this long ago: 365d, 52w, 1y "
                                   "(default: rules.toml [privacy] retention_days)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only count what would be shredded"),
) -> None:
    """Remove recordings, photos, voice notes, transcripts, names and phone numbers of cases
    closed before the cut-off; keep their anonymous figures (category, grid, times, outcome)."""
    try:
        age = parse_age(older_than) if older_than.strip() else None
        engine = open_database()
        settings = get_settings()
        summary = shred_older_than(engine, age, data_dir=settings.data_dir, dry_run=dry_run, actor="cli",
                                   store=media_store(settings))
    except DomainError as exc:
        fail(exc.message)
    verb = "would shred" if dry_run else "shredded"
    console.print(f"{verb} {summary.cases} case(s) closed before {local_text(summary.cutoff)}: "
                  f"{summary.files} file(s), {summary.bytes:,} bytes, {summary.calls} call record(s)"
                  + ("" if dry_run else f", {summary.residents} resident(s) forgotten")
                  + (f"; {summary.missing} file(s) already missing" if summary.missing else ""),
                  highlight=False, soft_wrap=True)
    if summary.numbers:
        shown = " ".join(summary.numbers[:20])
        more = f" … and {summary.cases - 20} more" if summary.cases > 20 else ""
        console.print(f"cases: {shown}{more}", highlight=False, soft_wrap=True)
