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
from console.i18n import has, t
from core.cases.texts import status_name
from core.errors import InvalidInput
from core.platform.clock import zone_label
from core.reporting.figures import Rates
from core.reporting.hotline import CallFigures, targets
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


def seconds(value: float | None, lang: str = "zh") -> str:
    return "—" if value is None else t(lang, "hotline_figures.seconds", value=f"{value:.1f}".removesuffix(".0"))


def met_class(met: bool | None) -> str:
    """The CSS class of a figure against its target (green met, red missed, none without calls)."""
    return "" if met is None else "met" if met else "missed"


def met_code(met: bool | None) -> str:
    return "" if met is None else "yes" if met else "no"


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
        local=lambda v, fmt="%Y-%m-%d %H:%M": local(v, tz, fmt), zone=zone_label(tz),
        status=lambda s: status_name(s, lang), rate_names=RATE_NAMES, rate_cells=rate_cells,
        rate_ratio=lambda rates, key: rate_ratios(rates)[key],
        seconds=lambda v: seconds(v, lang), met_class=met_class,
    )


def pdf(report: Report, *, tz: str, lang: str = "zh") -> bytes:
    return pdf_of_html(html(report, tz=tz, lang=lang, for_pdf=True))


def pdf_of_html(page: str) -> bytes:
    """A page of ours (a report, a grid's QR poster) as a PDF: its ``@page`` rule sets the paper."""
    from weasyprint import HTML  # lazy: it loads Pango (about a second), wanted only for a PDF

    return HTML(string=page, base_url=str(HERE)).write_pdf()


def _rate_row(label_code: str, name: str, this: Rates, previous: Rates) -> list:
    row: list = [label_code, name, this.received, previous.received]
    for key in RATE_NAMES:
        a, b = rate_ratios(this)[key], rate_ratios(previous)[key]
        row += [a.numerator, a.denominator, a.value, b.numerator, b.denominator, b.value]
    return row


# How each column's values are written: a share (0.353, shown 35.3%), a figure with two
# decimals, a local time, a whole number; anything else is text.
PERCENT = ({f"{k}_rate{p}" for k in RATE_NAMES for p in ("", "_previous")} | {"this_period", "previous_period_rate"}
           | {"connection_rate", "in_time_rate"})
DECIMAL = {"work_score", "evaluation_score", "score", "evaluation_points", "average_wait_s", "longest_wait_s",
           "average_handling_s"}
# The hotline's service figures, one column each (core.reporting.hotline), after the bucket's key.
HOTLINE_COLUMNS = ("offered", "answered", "answered_in_time", "connection_rate", "in_time_rate",
                   "ended_before_case", "filed_from_audio", "transfers", "transfers_answered",
                   "transfers_not_answered", "average_wait_s", "longest_wait_s", "average_handling_s")
TIMES = {"generated_at", "received_at", "due"}


def column_words(key: str, lang: str = "zh", tz: str | None = None, *, partial: bool = False) -> str:
    """A column's header in ``lang``: ``closure_numerator_previous`` 办结率·分子（上期）; a column of
    times names the zone they are in (受理时间（UTC+8）) when ``tz`` is given. In a partial period
    (``partial``: counted up to today) the previous period's columns are the same days of it, and
    say so: 办结率·分子（上期同期）."""
    if partial and key in SAME_DAYS:
        return t(lang, f"export.columns.{SAME_DAYS[key]}")
    previous = key.endswith("_previous")
    if partial and previous:
        return t(lang, "export.previous_same_days", what=column_words(key.removesuffix("_previous"), lang))
    if has(lang, f"export.columns.{key}"):
        words = t(lang, f"export.columns.{key}", seconds=round(targets().answer_within_s))
        if tz and key in TIMES:
            words = t(lang, "export.in_zone", what=words, zone=zone_label(tz))
        return words
    base = key.removesuffix("_previous")
    rate, _, part = base.rpartition("_")
    if rate in RATE_NAMES and part in ("numerator", "denominator", "rate"):
        words = t(lang, "export.rate_part", rate=t(lang, f"rates.{rate}"), part=t(lang, f"export.parts.{part}"))
        return t(lang, "export.previous", what=words) if previous else words
    raise KeyError(f"no words for the export column {key!r}")


# The previous period's columns, headed for a partial period (compared with the same days before).
SAME_DAYS = {"previous_period": "previous_same_days", "previous_period_rate": "previous_same_days_rate"}


def table_words(name: str, lang: str = "zh") -> str:
    return t(lang, f"export.tables.{name}")


def _detail_words(detail: str, lang: str) -> str:
    return "，".join(t(lang, f"report.{what}") for what in detail.split(",") if what)


def tables(report: Report, *, tz: str, lang: str = "zh") -> list[tuple[str, list[str], list[list]]]:
    """The report as named tables (table key, column keys, rows): the CSV's blocks, the XLSX's
    sheets, each said in ``lang`` by ``table_words`` and ``column_words``. Shares are numbers
    (0.353), times local datetimes of the district; codes (statuses, channels, levels) in words;
    names of places, categories and people stay as written."""
    zone = ZoneInfo(tz)

    def when(value: datetime | None) -> datetime | None:  # local, without a zone: what a sheet shows
        return None if value is None else value.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None, microsecond=0)

    rate_header = ["code", "name", "received", "received_previous"]
    for key in RATE_NAMES:
        rate_header += [f"{key}_numerator", f"{key}_denominator", f"{key}_rate",
                        f"{key}_numerator_previous", f"{key}_denominator_previous", f"{key}_rate_previous"]
    summary = [_rate_row("*", report.place, report.totals, report.totals_previous)]
    case_header = ["number", "received_at", "category", "grid", "status", "due", "detail"]
    escalated_header = ["number", "received_at", "category", "grid", "status", "escalations", "owner_level"]
    out = [
        ("summary", ["title", "period", "until", "previous_period", "generated_at"],
         [[report.title, report.period.label, report.until, report.previous.label, when(report.generated_at)]]),
        ("rates", rate_header, summary),
        ("by_grid", rate_header, [_rate_row(c.code, c.name, c.this, c.previous) for c in report.by_grid]),
        ("by_category", rate_header, [_rate_row(c.code, c.name, c.this, c.previous) for c in report.by_category]),
        ("overdue", case_header, [[x.number, when(x.created_at), x.category, x.grid, status_name(x.status, lang),
                                   when(x.due), _detail_words(x.detail, lang)] for x in report.overdue]),
        ("escalated", escalated_header, [[x.number, when(x.created_at), x.category, x.grid,
                                          status_name(x.status, lang), x.count,
                                          t(lang, f"levels.{x.detail}") if x.detail else ""]
                                         for x in report.escalated]),
        ("repeats", ["category", "place", "grid", "count", "cases"],
         [[x.category, x.place, x.grid, x.count, " ".join(x.numbers)] for x in report.repeats]),
        ("scores", ["code", "name", "assignments", "response_on_time", "response_counted", "resolution_on_time",
                    "resolution_counted", "closed", "work_score", "evaluated", "evaluation_points",
                    "evaluation_score", "score", "sample"],
         [[s.code, s.name, s.assignments, s.response_on_time, s.response_counted, s.resolution_on_time,
           s.resolution_counted, s.closed, s.work_score, s.evaluated, s.points, s.evaluation_score,
           s.standing_score, t(lang, "report.too_few") if s.too_few else ""] for s in report.scores]),
        ("trend", ["day", "received", "closed"], [[d.day, d.received, d.closed] for d in report.trend]),
        ("channels", ["channel", "received"], [[t(lang, f"channel.{c.code}"), c.value] for c in report.channels]),
    ]
    if report.hotline is not None:
        def hotline_row(x: CallFigures) -> list:
            return [x.key, *(x.figure(name) for name in HOTLINE_COLUMNS)]

        total = report.hotline.total
        out += [
            ("hotline_days", ["day", *HOTLINE_COLUMNS],
             [hotline_row(x) for x in report.hotline.days] + [[t(lang, "report.total"), *hotline_row(total)[1:]]]),
            ("hotline_hours", ["hour", *HOTLINE_COLUMNS], [hotline_row(x) for x in report.hotline.hours]),
        ]
    return out


def _csv_cell(key: str, value: object) -> object:
    if value is None:
        return ""
    if key in PERCENT:
        return f"{value * 100:.1f}%"  # a spreadsheet reads it back as the number 0.353
    if key in DECIMAL:
        return f"{value:.2f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return value


def csv_bytes(report: Report, *, tz: str, lang: str = "zh") -> bytes:
    """One block per table: a line with its name, its header, its rows, a blank line, in the
    language of the report. UTF-8 with a byte-order mark, so a spreadsheet opens the Chinese right."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    for name, keys, rows in tables(report, tz=tz, lang=lang):
        writer.writerow([f"# {table_words(name, lang)}"])
        writer.writerow([column_words(k, lang, tz, partial=report.until is not None) for k in keys])
        writer.writerows([[_csv_cell(k, v) for k, v in zip(keys, row, strict=True)] for row in rows])
        writer.writerow([])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _width(value: object) -> int:
    """Columns a value takes in a sheet: a Chinese character is two."""
    text = value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else str(value if value is not None else "")
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)


def xlsx_bytes(report: Report, *, tz: str, lang: str = "zh") -> bytes:
    """One sheet per table with its header in words, frozen, and columns as wide as their
    contents; numbers are numbers and shares are numbers shown as percentages. A bar chart
    of the rates on a sheet of its own."""
    from openpyxl import Workbook  # lazy: under a second to import, wanted only for an XLSX
    from openpyxl.chart import BarChart, Reference  # lazy: as above
    from openpyxl.styles import Alignment, Font, PatternFill  # lazy: as above
    from openpyxl.utils import get_column_letter  # lazy: as above

    book = Workbook()
    book.remove(book.active)
    head_fill = PatternFill("solid", fgColor="EEF2F6")
    for name, keys, rows in tables(report, tz=tz, lang=lang):
        sheet = book.create_sheet(table_words(name, lang)[:31])
        header = [column_words(k, lang, tz, partial=report.until is not None) for k in keys]
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
            cell.fill = head_fill
            cell.alignment = Alignment(wrap_text=True, vertical="top")
        for row in rows:
            sheet.append(row)
        widths = [_width(h) for h in header]
        for index, key in enumerate(keys, start=1):
            fmt = ("0.0%" if key in PERCENT else "0.00" if key in DECIMAL else "yyyy-mm-dd hh:mm" if key in TIMES
                   else "yyyy-mm-dd" if key == "day" else None)
            for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                if fmt:
                    cell.number_format = fmt
                widths[index - 1] = max(widths[index - 1], _width(cell.value) if not fmt else 16 if "hh" in fmt else 8)
            sheet.column_dimensions[get_column_letter(index)].width = min(60, max(6, widths[index - 1] + 2))
        sheet.freeze_panes = "A2"
    rates = book.create_sheet(table_words("rate_chart", lang), 1)
    rates.append([column_words(k, lang, partial=report.until is not None)
                  for k in ("rate", "this_period", "previous_period_rate")])
    for cell in rates[1]:
        cell.font = Font(bold=True)
    for key in RATE_NAMES:
        a, b = report.rates[key].value, report.rates_previous[key].value
        rates.append([t(lang, f"rates.{key}"), a, b])
    for row in rates.iter_rows(min_row=2, min_col=2, max_col=3):
        for cell in row:
            cell.number_format = "0.0%"
    rates.column_dimensions["A"].width = 16
    rates.column_dimensions["B"].width = rates.column_dimensions["C"].width = 12
    rates.freeze_panes = "A2"
    chart = BarChart()
    chart.title = report.title
    chart.y_axis.number_format = "0%"
    chart.add_data(Reference(rates, min_col=2, max_col=3, min_row=1, max_row=1 + len(RATE_NAMES)), titles_from_data=True)
    chart.set_categories(Reference(rates, min_col=1, min_row=2, max_row=1 + len(RATE_NAMES)))
    rates.add_chart(chart, "E2")
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
