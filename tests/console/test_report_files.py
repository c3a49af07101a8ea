"""A report as files (console/report_files.py): the PDF renders its Chinese title and charts
(every page rasterised with pdftoppm: not blank; pdftotext gives back the exact title; the
embedded fonts have a glyph for every character on the page, so nothing is drawn as a tofu
box), and the XLSX and CSV carry the same figures as hand-written SQL."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from openpyxl import load_workbook
from openpyxl.utils import get_column_letter

from console import report_files
from console.i18n import t
from core.platform.db import session_scope
from core.reporting import reports
from tests.conftest import IN_CI
from tests.console.test_dashboard import csv_blocks, export_keys
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
        assert dark_share(pixels) > 0.001, f"{page.name} is blank"  # a list page of text is sparse
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
    workbook = load_workbook(io.BytesIO(report_files.render(report, "xlsx", tz=TZ).body))
    sheet_keys, column_keys = export_keys("zh")
    assert set(sheet_keys) == set(workbook.sheetnames)  # one sheet per table, named in Chinese
    book = {sheet_keys[name]: workbook[name] for name in workbook.sheetnames}
    header = [column_keys[c.value] for c in book["rates"][1]]
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
    assert {r["channel"]: int(r["received"]) for r in blocks["channels"]} == {
        t("zh", f"channel.{code}"): n for code, n in channels.items()}
    assert sum(int(r["received"]) for r in blocks["trend"]) == totals["received"]
    assert {r["place"] for r in blocks["repeats"]} == {"洋坊新村9幢门口", "罗布社区洋坊新村9幢2单元301室"}
    assert world.numbers["nov_late"] in {r["number"] for r in blocks["overdue"]}


def test_xlsx_is_an_office_sheet_chinese_headers_typed_numbers_widths_frozen(monthly):
    """Issue 26: English snake_case headers, rates stored as text, no widths, no frozen header."""
    from datetime import date, datetime

    from openpyxl import load_workbook

    _, report = monthly
    book = load_workbook(io.BytesIO(report_files.render(report, "xlsx", tz=TZ).body))
    assert "三率汇总" in book.sheetnames and "各网格" in book.sheetnames and "网格员考核" in book.sheetnames
    for sheet in book.worksheets:
        assert sheet.freeze_panes == "A2", sheet.title
        header = [c.value for c in sheet[1]]
        assert all(c.font.bold for c in sheet[1]), sheet.title
        for word in header:  # words, not identifiers
            assert re.search(r"[\u4e00-\u9fff]", word) and not re.search(r"[a-z]_[a-z]", word), (sheet.title, word)
        for index in range(1, len(header) + 1):
            width = sheet.column_dimensions[get_column_letter(index)].width
            assert width and width >= 6, (sheet.title, header[index - 1], width)
    rates = book["三率汇总"]
    header = [c.value for c in rates[1]]
    row = dict(zip(header, rates[2], strict=True))
    share = row["满意率·比率"]
    assert isinstance(share.value, float) and 0 <= share.value <= 1 and share.number_format == "0.0%"
    assert isinstance(row["受理件数"].value, int)
    assert row["名称"].value == report.place
    # the widest name decides its column's width (a Chinese character counts two)
    names = book["各网格"]
    longest = max(len(c.value) for (c,) in names.iter_rows(min_row=2, min_col=2, max_col=2))
    assert names.column_dimensions["B"].width >= 2 * longest
    summary = dict(zip([c.value for c in book["概况"][1]], book["概况"][2], strict=True))
    assert isinstance(summary["生成时间（UTC+8）"].value, datetime) and summary["生成时间（UTC+8）"].number_format == "yyyy-mm-dd hh:mm"
    trend = book["每日趋势"]
    assert isinstance(trend["A2"].value, (date, datetime)) and isinstance(trend["B2"].value, int)
    scores = dict(zip([c.value for c in book["网格员考核"][1]], book["网格员考核"][2], strict=True))
    assert scores["总分"].value is None or isinstance(scores["总分"].value, (int, float))
    overdue = [c.value for c in book["超期件"][2]] if book["超期件"].max_row > 1 else []
    assert not overdue or not re.search(r"[a-z]+_[a-z]+", " ".join(str(v) for v in overdue))


def test_csv_opens_in_chinese_with_its_byte_order_mark(monthly):
    _, report = monthly
    body = report_files.render(report, "csv", tz=TZ).body
    assert body.startswith("\ufeff".encode())
    text = body.decode("utf-8-sig")
    assert "# 三率汇总" in text and "满意率·比率" in text and "closure_numerator" not in text
    blocks = csv_blocks(body)
    assert blocks["rates"][0]["satisfaction_rate"].endswith("%")


@needs_poppler
def test_pdf_fits_a4_portrait_lists_landscape_rate_tables(monthly, tmp_path):
    """Issue 26: the monthly PDF was wider than A4 (满意率 cut off, the name column one
    character wide). Every page is A4; the rate tables are on landscape pages; every word
    lies inside its page; each rate table's page carries every column header and each name
    whole on one line."""
    _, report = monthly
    pdf = tmp_path / "monthly.pdf"
    pdf.write_bytes(report_files.render(report, "pdf", tz=TZ).body)
    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "999", str(pdf)], capture_output=True, text=True,
                          check=True).stdout
    sizes = [tuple(float(x) for x in re.search(r"size:\s+([\d.]+) x ([\d.]+)", line).groups())
             for line in info.splitlines() if re.match(r"Page\s+\d+ size:", line)]
    assert sizes
    for width, height in sizes:
        assert sorted((round(width), round(height))) == [595, 842], (width, height)  # A4, either way
    bbox = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    pages = bbox.split("<page ")[1:]
    assert len(pages) == len(sizes)
    for number, (page, (width, height)) in enumerate(zip(pages, sizes, strict=True), start=1):
        for x_max, y_max, word in re.findall(r'xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)<', page):
            assert float(x_max) <= width + 0.5 and float(y_max) <= height + 0.5, (number, word, x_max, width)
    landscape = [i for i, (w, h) in enumerate(sizes, start=1) if w > h]
    assert landscape and len(landscape) < len(sizes)  # the lists stay portrait
    for heading, names in (("各网格三率", [c.name for c in report.by_grid]),
                           ("各类别三率", [c.name for c in report.by_category])):
        found = False
        for index in landscape:
            text = subprocess.run(["pdftotext", "-f", str(index), "-l", str(index), "-layout", str(pdf), "-"],
                                  capture_output=True, text=True, check=True).stdout
            if heading not in text:
                continue
            found = True
            for header in ("受理", "响应率", "办结率", "按期办结率", "满意率", "满意率（上期）"):
                assert header in text, (heading, header)
            for name in names:
                assert name in text, (heading, name)  # on one line: not squeezed to a character a line
        assert found, f"{heading} is on no landscape page"
    portrait = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "-layout", str(pdf), "-"],
                              capture_output=True, text=True, check=True).stdout
    assert "总体情况" in portrait and sizes[0][0] < sizes[0][1]
    subprocess.run(["pdftoppm", "-gray", "-r", "50", str(pdf), str(tmp_path / "page")], check=True)
    rendered = sorted(tmp_path.glob("page-*.pgm"))
    assert len(rendered) == len(sizes)
    for page, (width_pt, height_pt) in zip(rendered, sizes, strict=True):
        width, height, pixels = read_pgm(page)
        assert (width > height) == (width_pt > height_pt), page.name  # rendered in its orientation
        assert dark_share(pixels) > 0.001, f"{page.name} is blank"


def test_a_partial_period_heads_its_comparison_as_the_same_days_before(engine):
    """A running month (截至 12月2日) is compared with the same days of November: every header of
    the previous period's figures says 上期同期, in the page, the CSV and the XLSX; a whole month's says 上期."""
    build_reports_world(engine)
    with session_scope(engine) as session:
        running = reports.report(session, "monthly", reports.parse_period("2026-12"), reports.make_filters(session),
                                 tz=TZ, as_of=NOW)
        whole = reports.report(session, "monthly", reports.parse_period("2026-11"), reports.make_filters(session),
                               tz=TZ, as_of=NOW)
    assert running.until is not None and whole.until is None
    page = report_files.html(running, tz=TZ)
    head = re.search(r'<th id="previous-head">([^<]*)</th>', page).group(1)
    assert head == "上期同期"
    assert "办结率（上期同期）" in page and "办结率（上期）" not in page
    whole_page = report_files.html(whole, tz=TZ)
    assert re.search(r'<th id="previous-head">([^<]*)</th>', whole_page).group(1) == "上期"
    csv_text = report_files.csv_bytes(running, tz=TZ).decode("utf-8-sig")
    assert "受理件数（上期同期）" in csv_text and "办结率·分子（上期同期）" in csv_text
    assert "（上期）" not in csv_text
    assert "（上期）" in report_files.csv_bytes(whole, tz=TZ).decode("utf-8-sig")
    book = load_workbook(io.BytesIO(report_files.xlsx_bytes(running, tz=TZ)))
    headers = {cell.value for sheet in book.worksheets for cell in sheet[1]}
    assert "上期同期比率" in headers and "受理件数（上期同期）" in headers
    assert not any(str(h).endswith("（上期）") for h in headers if h)
    assert report_files.column_words("received_previous", "en", partial=True) == \
        "Received (same days, previous period)"
