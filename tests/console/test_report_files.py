"""A report as files (console/report_files.py): the PDF renders its Chinese title and charts
(every page rasterised with pdftoppm: not blank; pdftotext gives back the exact title; the
embedded fonts have a glyph for every character on the page, so nothing is drawn as a tofu
box), and the XLSX and CSV carry the same figures as hand-written SQL."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from console import report_files
from core.platform.db import session_scope
from core.reporting import reports
from tests.conftest import IN_CI
from tests.console.test_dashboard import csv_blocks
from tests.core.reporting.test_reports import sql, totals_sql
from tests.core.reports_world import NOV_BOUNDS, NOW, build_reports_world

TZ = "Asia/Shanghai"
POPPLER = shutil.which("pdftoppm") and shutil.which("pdftotext") and shutil.which("pdffonts")
needs_poppler = pytest.mark.skipif(not POPPLER and not IN_CI,
                                   reason="poppler-utils is not installed (scripts/bootstrap.sh dev installs it)")


@pytest.fixture
def monthly(engine):
    world = build_reports_world(engine)
    with session_scope(engine) as session:
        report = reports.report(session, "monthly", reports.parse_period("2026-11"), reports.make_filters(session),
                                tz=TZ, as_of=NOW)
    return world, report


def read_pgm(path: Path) -> tuple[int, int, bytes]:
    """A binary greyscale PGM (what ``pdftoppm -gray`` writes): width, height, pixels."""
    data = path.read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    assert fields[0] == b"P5" and int(fields[3]) == 255
    width, height = int(fields[1]), int(fields[2])
    return width, height, data[pos + 1:pos + 1 + width * height]


def dark_share(pixels: bytes) -> float:
    return sum(1 for p in pixels if p < 128) / max(1, len(pixels))


def font_files() -> dict[str, Path]:
    """Font family name → file, as fontconfig knows them."""
    out = subprocess.run(["fc-list", "--format", "%{family[0]}|%{file}\n"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split("|")[0]: Path(line.split("|")[1]) for line in out.splitlines() if "|" in line}


@needs_poppler
def test_pdf_renders_the_chinese_title_and_charts_on_every_page(monthly, tmp_path):
    from fontTools.ttLib import TTCollection, TTFont

    _, report = monthly
    pdf = tmp_path / "monthly.pdf"
    pdf.write_bytes(report_files.render(report, "pdf", tz=TZ).body)
    assert report.title == "清溪区2026年11月诉求办理月通报"

    first_page = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "-layout", str(pdf), "-"], capture_output=True,
                                text=True, check=True).stdout
    assert first_page.strip().splitlines()[0].strip() == report.title

    subprocess.run(["pdftoppm", "-gray", "-r", "50", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.pgm"))
    assert len(pages) >= 2
    for page in pages:
        width, height, pixels = read_pgm(page)
        assert dark_share(pixels) > 0.005, f"{page.name} is blank"
    width, height, pixels = read_pgm(pages[0])
    title_band = b"".join(pixels[y * width:(y + 1) * width] for y in range(int(height * 0.04), int(height * 0.10)))
    assert dark_share(title_band) > 0.02, "no title drawn at the top of page 1"

    # No tofu: every character on every page has a glyph in a font the PDF embeds.
    listing = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    embedded = {line.split()[0].split("+", 1)[-1] for line in listing.splitlines()[2:] if line.strip()}
    assert any("WenQuanYi" in name or "Noto" in name for name in embedded), embedded
    cmaps: list[set[int]] = []
    for family, file in font_files().items():
        if any(family.replace(" ", "-") in name or family.replace(" ", "") in name for name in embedded):
            fonts = TTCollection(str(file)).fonts if file.suffix == ".ttc" else [TTFont(str(file))]
            for font in fonts:
                cmaps.append(set(font.getBestCmap()))
    assert cmaps
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    missing = {ch for ch in text if not ch.isspace() and ord(ch) > 127 and not any(ord(ch) in c for c in cmaps)}
    assert not missing, f"characters without a glyph (tofu): {''.join(sorted(missing))}"
    for heading in ("总体情况", "各网格三率", "超期件", "升级件", "重复投诉", "网格员季度考核"):
        assert heading in text


def test_xlsx_and_csv_carry_the_sql_figures(monthly, engine):
    from openpyxl import load_workbook

    world, report = monthly
    totals = totals_sql(engine, *NOV_BOUNDS)
    book = load_workbook(io.BytesIO(report_files.render(report, "xlsx", tz=TZ).body))
    assert {"summary", "rates", "rate_chart", "by_grid", "by_category", "overdue", "escalated", "repeats", "scores",
            "trend", "channels"} <= set(book.sheetnames)
    header = [c.value for c in book["rates"][1]]
    row = dict(zip(header, [c.value for c in book["rates"][2]], strict=True))
    assert (row["received"], row["closure_numerator"], row["closure_denominator"]) == (
        totals["received"], totals["closed"], totals["received"])
    assert (row["satisfaction_numerator"], row["satisfaction_denominator"]) == (totals["satisfied"],
                                                                               totals["surveyed"])
    assert book["summary"]["A2"].value == report.title
    assert len(book["rate_chart"]._charts) == 1
    escalated = [r[0].value for r in book["escalated"].iter_rows(min_row=2)]
    assert escalated == [n for (n,) in sql(engine, """SELECT DISTINCT c.number FROM caseevent e
        JOIN "case" c ON c.id = e.case_id WHERE e.action = 'escalate' AND e.at >= :s AND e.at < :e""",
                                               s=NOV_BOUNDS[0], e=NOV_BOUNDS[1])]

    blocks = csv_blocks(report_files.render(report, "csv", tz=TZ).body)
    channels = dict(sql(engine, """SELECT channel, count(*) FROM "case" WHERE created_at >= :s AND created_at < :e
        AND status <> 'merged' GROUP BY channel""", s=NOV_BOUNDS[0], e=NOV_BOUNDS[1]))
    assert {r["channel"]: int(r["received"]) for r in blocks["channels"]} == channels
    assert sum(int(r["received"]) for r in blocks["trend"]) == totals["received"]
    assert {r["place"] for r in blocks["repeats"]} == {"洋坊新村9幢门口", "罗布社区洋坊新村9幢2单元301室"}
    assert world.numbers["nov_late"] in {r["number"] for r in blocks["overdue"]}
