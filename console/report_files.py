"""A report (``core.reporting.reports.Report``) as a file: HTML, CSV, XLSX or PDF. The console's
downloads and ``gridline report`` write the same files from the same figures.

The PDF is the HTML page printed by WeasyPrint, charts included (they are SVG, see
``console.charts``), in a Chinese font installed from Debian (``fonts-wqy-zenhei``, which
``scripts/bootstrap.sh`` installs with WeasyPrint's Pango libraries)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from console import charts
from console.i18n import t
from core.cases.texts import status_name
from core.errors import InvalidInput
from core.reporting.figures import Rates
from core.reporting.reports import RATE_NAMES, Report, rate_ratios

FORMATS = {
    "html": "text/html; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}
HERE = Path(__file__).resolve().parent
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                          autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined)


@dataclass
class RenderedReport:
    body: bytes
    content_type: str
    filename: str


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def change(this: float | None, previous: float | None) -> str:
    """Percentage points between two rates."""
    if this is None or previous is None:
        return "—"
    return f"{(this - previous) * 100:+.1f}"


def local(value: datetime | None, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return ""
    return value.replace(tzinfo=UTC).astimezone(ZoneInfo(tz)).strftime(fmt)


def filename(report: Report, fmt: str) -> str:
    where = f"-{report.filters.grid.code}" if report.filters.grid is not None else ""
    return f"gridline-{report.kind}-{report.period.label}{where}.{fmt}"


def rate_cells(r: Rates) -> list[str]:
    return [f"{x.numerator}/{x.denominator} {pct(x.value)}" for x in rate_ratios(r).values()]


def report_charts(report: Report, lang: str) -> dict:
    def tr(key: str) -> str:
        return t(lang, key)

    return {
        "rates": charts.bars("rates", tr("report.summary"),
                             [(tr(f"rates.{k}"), round(100 * v.value, 1) if v.value is not None else 0)
                              for k, v in report.rates.items()], unit="%"),
        "by_grid": charts.bars("by_grid", tr("report.by_grid"),
                               [(c.name, c.this.received) for c in report.by_grid if c.this.received]),
        "by_category": charts.bars("by_category", tr("report.by_category"),
                                   [(c.name, c.this.received) for c in report.by_category if c.this.received],
                                   colour=charts.PALETTE[1]),
        "trend": charts.lines("trend", tr("report.trend"), [d.day for d in report.trend],
                              [(tr("dashboard.trend_received"), [d.received for d in report.trend]),
                               (tr("dashboard.trend_closed"), [d.closed for d in report.trend])], width=680),
        "channels": charts.shares("channels", tr("report.channels"),
                                  [(tr(f"channel.{c.code}"), c.value) for c in report.channels]),
    }


def html(report: Report, *, tz: str, lang: str = "zh", for_pdf: bool = False) -> str:
    return _env.get_template("report.html").render(
        r=report, lang=lang, tz=tz, for_pdf=for_pdf, charts=report_charts(report, lang),
        t=lambda key, **kw: t(lang, key, **kw), pct=pct, num=num, change=change,
        local=lambda v, fmt="%Y-%m-%d %H:%M": local(v, tz, fmt),
        status=lambda s: status_name(s, lang), rate_names=RATE_NAMES, rate_cells=rate_cells,
    )


def pdf(report: Report, *, tz: str, lang: str = "zh") -> bytes:
    from weasyprint import HTML  # lazy: it loads Pango (about a second), wanted only for a PDF

    return HTML(string=html(report, tz=tz, lang=lang, for_pdf=True), base_url=str(HERE)).write_pdf()


def _rate_row(label_code: str, name: str, this: Rates, previous: Rates) -> list:
    row: list = [label_code, name, this.received, previous.received]
    for key in RATE_NAMES:
        a, b = rate_ratios(this)[key], rate_ratios(previous)[key]
        row += [a.numerator, a.denominator, pct(a.value), b.numerator, b.denominator, pct(b.value)]
    return row


def tables(report: Report, *, tz: str, lang: str = "zh") -> list[tuple[str, list[str], list[list]]]:
    """The report as named tables (sheet name, header, rows): the CSV's blocks, the XLSX's
    sheets. Column names are English identifiers, so a spreadsheet formula survives a
    change of language; names of places, categories and people stay as written."""
    rate_header = ["code", "name", "received", "received_previous"]
    for key in RATE_NAMES:
        rate_header += [f"{key}_numerator", f"{key}_denominator", f"{key}_rate",
                        f"{key}_numerator_previous", f"{key}_denominator_previous", f"{key}_rate_previous"]
    summary = [_rate_row("*", report.place, report.totals, report.totals_previous)]
    case_header = ["number", "received_at", "category", "grid", "status", "due", "detail"]
    escalated_header = ["number", "received_at", "category", "grid", "status", "escalations", "owner_level"]
    out = [
        ("summary", ["title", "period", "previous_period", "generated_at"],
         [[report.title, report.period.label, report.previous.label, local(report.generated_at, tz)]]),
        ("rates", rate_header, summary),
        ("by_grid", rate_header, [_rate_row(c.code, c.name, c.this, c.previous) for c in report.by_grid]),
        ("by_category", rate_header, [_rate_row(c.code, c.name, c.this, c.previous) for c in report.by_category]),
        ("overdue", case_header, [[x.number, local(x.created_at, tz), x.category, x.grid, x.status,
                                   local(x.due, tz), x.detail] for x in report.overdue]),
        ("escalated", escalated_header, [[x.number, local(x.created_at, tz), x.category, x.grid, x.status, x.count,
                                          x.detail] for x in report.escalated]),
        ("repeats", ["category", "place", "grid", "count", "cases"],
         [[x.category, x.place, x.grid, x.count, " ".join(x.numbers)] for x in report.repeats]),
        ("scores", ["code", "name", "assignments", "response_on_time", "response_counted", "resolution_on_time",
                    "resolution_counted", "closed", "work_score", "evaluated", "evaluation_points",
                    "evaluation_score", "score"],
         [[s.code, s.name, s.assignments, s.response_on_time, s.response_counted, s.resolution_on_time,
           s.resolution_counted, s.closed, num(s.work_score), s.evaluated, f"{s.points:g}", num(s.evaluation_score),
           num(s.score)] for s in report.scores]),
        ("trend", ["day", "received", "closed"], [[d.day.isoformat(), d.received, d.closed] for d in report.trend]),
        ("channels", ["channel", "received"], [[c.code, c.value] for c in report.channels]),
    ]
    return out


def csv_bytes(report: Report, *, tz: str, lang: str = "zh") -> bytes:
    """One block per table: a line with its name, its header, its rows, a blank line. UTF-8
    with a byte-order mark, so a spreadsheet opens the Chinese right."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    for name, header, rows in tables(report, tz=tz, lang=lang):
        writer.writerow([f"# {name}"])
        writer.writerow(header)
        writer.writerows(rows)
        writer.writerow([])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def xlsx_bytes(report: Report, *, tz: str, lang: str = "zh") -> bytes:
    """One sheet per table, plus a bar chart of the rates on the first sheet."""
    from openpyxl import (  # lazy: under a second to import, wanted only for an XLSX
        Workbook,
        chart,
        styles,
    )

    book = Workbook()
    book.remove(book.active)
    for name, header, rows in tables(report, tz=tz, lang=lang):
        sheet = book.create_sheet(name[:31])
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = styles.Font(bold=True)
        for row in rows:
            sheet.append(row)
    rates = book.create_sheet("rate_chart", 1)
    rates.append(["rate", "this_period", "previous_period"])
    for key in RATE_NAMES:
        a, b = report.rates[key].value, report.rates_previous[key].value
        rates.append([t(lang, f"rates.{key}"), None if a is None else round(100 * a, 1),
                      None if b is None else round(100 * b, 1)])
    bars = chart.BarChart()
    bars.title = report.title
    bars.y_axis.title = "%"
    bars.add_data(chart.Reference(rates, min_col=2, max_col=3, min_row=1, max_row=1 + len(RATE_NAMES)), titles_from_data=True)
    bars.set_categories(chart.Reference(rates, min_col=1, min_row=2, max_row=1 + len(RATE_NAMES)))
    rates.add_chart(bars, "E2")
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def render(report: Report, fmt: str, *, tz: str, lang: str = "zh") -> RenderedReport:
    if fmt not in FORMATS:
        raise InvalidInput(f"no report format {fmt!r} (one of {', '.join(FORMATS)})",
                           code="console.no_report_format", format=fmt)
    if fmt == "html":
        body = html(report, tz=tz, lang=lang).encode("utf-8")
    elif fmt == "csv":
        body = csv_bytes(report, tz=tz, lang=lang)
    elif fmt == "xlsx":
        body = xlsx_bytes(report, tz=tz, lang=lang)
    else:
        body = pdf(report, tz=tz, lang=lang)
    return RenderedReport(body, FORMATS[fmt], filename(report, fmt))
