"""``gridline report weekly|monthly|quarterly`` (周汇总、月通报、季考核 as HTML, CSV, XLSX or
PDF) and ``gridline report scores`` (the quarter's worker scores with their inputs)."""

from __future__ import annotations

import csv
from pathlib import Path

import typer
from rich.console import Console

from console import report_files
from core.errors import DomainError
from core.people import audit
from core.platform.db import session_scope
from core.platform.rules import load_rules
from core.platform.settings import get_settings
from core.reporting import reports
from core.reporting.scores import quarter_scores
from gridline.commands import terminal
from gridline.commands.common import console, fail, open_database

report_app = typer.Typer(help="Reports: weekly, monthly and quarterly reports, worker scores.",
                         no_args_is_help=True)

DASH = "—"


def _write_report(kind: str, period: str | None, grid: str | None, fmt: str, out: Path) -> None:
    if fmt not in report_files.FORMATS:
        fail(f"--format must be one of {', '.join(report_files.FORMATS)}, not {fmt!r}")
    if not out.parent.is_dir():
        fail(f"cannot write {out}: the folder {out.parent} does not exist")
    tz = get_settings().timezone
    try:
        with session_scope(open_database()) as session:
            chosen = reports.period_for_report(kind, period, reports.local_today(tz))
            filters = reports.make_filters(session, grid_code=grid)
            data = reports.report(session, kind, chosen, filters, tz=tz)
            audit.record(session, actor="cli", action="report.write", target_type="report",
                         target_id=f"{kind}:{chosen.label}", detail={"grid": grid, "format": fmt, "out": str(out)})
    except DomainError as exc:
        fail(exc.message)
    rendered = report_files.render(data, fmt, tz=tz)
    out.write_bytes(rendered.body)
    rates = "  ".join(f"{name} {r.numerator}/{r.denominator} {report_files.pct(r.value)}"
                      for name, r in data.rates.items())
    console.print(f"{data.title}: {data.totals.received} received; {rates}", soft_wrap=True, highlight=False)
    console.print(f"wrote {out} ({len(rendered.body):,} bytes)", highlight=False, soft_wrap=True)  # a path to copy


def _report_command(kind: str, example: str):  # noqa: ANN202
    def command(
        period: str = typer.Option(None, "--period", help=f"e.g. {example} (default: the last whole one)"),
        grid: str = typer.Option(None, "--grid", help="a grid's code: the report covers it and every grid below"),
        fmt: str = typer.Option("pdf", "--format", help="html, csv, xlsx or pdf"),
        out: Path = typer.Option(..., "--out", dir_okay=False, help="the file to write"),
    ) -> None:
        _write_report(kind, period, grid, fmt, out)

    command.__doc__ = {"weekly": "The weekly summary (周汇总).", "monthly": "The monthly report (月通报).",
                       "quarterly": "The quarterly assessment (季考核), with the worker scores."}[kind]
    return command


report_app.command("weekly")(_report_command("weekly", "2026-W48"))
report_app.command("monthly")(_report_command("monthly", "2026-11"))
report_app.command("quarterly")(_report_command("quarterly", "2026Q4"))


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


def _num(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


@report_app.command("scores")
def scores(
    quarter: str = typer.Option(..., "--quarter", help="e.g. 2026Q4 (local time of the district)"),
    csv_file: Path = typer.Option(None, "--csv", dir_okay=False, help="also write the table as CSV"),
) -> None:
    """Quarterly worker scores (70 % work, 30 % residents' evaluation) with their inputs."""
    try:
        with session_scope(open_database()) as session:
            rows = quarter_scores(session, quarter, tz=get_settings().timezone)
    except DomainError as exc:
        fail(exc.message)
    rules = load_rules()["scores"]
    header = ["code", "name", "assignments", "response_on_time", "response_counted", "response_rate",
              "resolution_on_time", "resolution_counted", "resolution_rate", "closed", "closure_rate",
              "work_score", "evaluated", "evaluation_points", "evaluation_score", "score", "too_few"]
    lines = [[r.code, r.name, r.assignments, r.response_on_time, r.response_counted, _pct(r.response_rate),
              r.resolution_on_time, r.resolution_counted, _pct(r.resolution_rate), r.closed, _pct(r.closure_rate),
              _num(r.work_score), r.evaluated, f"{r.points:g}", _num(r.evaluation_score), _num(r.standing_score),
              "yes" if r.too_few else ""]
             for r in rows]
    table = terminal.table("worker", "cases", "on-time response", "on-time resolution", "closed", "work",
                  "evaluated", "evaluation", "score", title=f"worker scores {quarter.strip().upper()}")
    for r in rows:
        table.add_row(f"{r.code} {r.name}", str(r.assignments),
                      f"{r.response_on_time}/{r.response_counted} {_pct(r.response_rate)}",
                      f"{r.resolution_on_time}/{r.resolution_counted} {_pct(r.resolution_rate)}",
                      f"{r.closed}/{r.assignments} {_pct(r.closure_rate)}", _num(r.work_score),
                      str(r.evaluated), f"{r.points:g}/{r.evaluated} = {_num(r.evaluation_score)}",
                      f"too few cases (<{r.min_cases})" if r.too_few else _num(r.score))
    # Wide enough for every column whatever the terminal says: a report is read whole.
    Console(width=max(console.width, 150)).print(table)
    work = rules["work"]
    console.print(
        f"score = {rules['work_weight']} × work + {rules['evaluation_weight']} × evaluation; "
        f"work = weighted mean of on-time response ({work['response_on_time']}), on-time resolution "
        f"({work['resolution_on_time']}) and closure ({work['closure']}) over the rates that have cases; "
        f"evaluation = mean points per survey answer {rules['points']}; {DASH} = no evaluated case; "
        f"fewer than {rules.get('min_cases', 0)} cases: too few to score (not ranked)",
        soft_wrap=True, highlight=False)
    if csv_file is not None:
        with csv_file.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(lines)
        console.print(f"wrote {len(lines)} worker(s) to {csv_file}", soft_wrap=True)
