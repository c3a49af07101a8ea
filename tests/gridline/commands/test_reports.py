"""`gridline report weekly|monthly|quarterly`, `gridline apikeys` and `gridline shred`, in
process against the test database (the console and the API read what they write)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from core.cases.models import Case
from core.people import apikeys
from core.people.models import ApiKey, AuditEntry
from core.platform import clock
from core.platform.db import session_scope
from core.platform.settings import get_settings
from gridline.cli import app
from tests.console.test_dashboard import csv_blocks
from tests.core.actions.test_privacy import LATER, build_privacy_world
from tests.core.reporting.test_reports import totals_sql
from tests.core.reports_world import NOV_BOUNDS, NOW, build_reports_world
from tests.support.serve import database_url

runner = CliRunner()


@pytest.fixture
def cli_env(engine, monkeypatch, tmp_path):
    monkeypatch.setenv("GRIDLINE_DATABASE_URL", database_url(engine))
    monkeypatch.setenv("GRIDLINE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_monthly_report_files(engine, cli_env):
    build_reports_world(engine)
    clock.freeze(NOW)
    out = cli_env / "m.csv"
    result = runner.invoke(app, ["report", "monthly", "--period", "2026-11", "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "清溪区2026年11月诉求办理月通报" in result.output and f"wrote {out}" in result.output
    text = out.read_text("utf-8-sig")
    totals = totals_sql(engine, *NOV_BOUNDS)
    rates = csv_blocks(text.encode("utf-8"))["rates"][0]  # the file says its tables in Chinese
    assert int(rates["received"]) == totals["received"] and int(rates["closure_numerator"]) == totals["closed"]
    for fmt in ("pdf", "xlsx", "html"):
        target = cli_env / f"m.{fmt}"
        result = runner.invoke(app, ["report", "monthly", "--format", fmt, "--out", str(target)])  # last month
        assert result.exit_code == 0, result.output
        assert target.stat().st_size > 1000
    assert target.read_text("utf-8").count("诉求办理月通报") >= 1
    grid = runner.invoke(app, ["report", "weekly", "--period", "2026-W47", "--grid", "3504990010010102",
                               "--format", "html", "--out", str(cli_env / "w.html")])
    assert grid.exit_code == 0 and "洋坊新村2号微网格2026年第47周" in grid.output
    with session_scope(engine) as session:
        assert len(session.exec(select(AuditEntry).where(AuditEntry.action == "report.write")).all()) == 5


@pytest.mark.parametrize("args, words", [
    (["report", "monthly", "--period", "2026-W48", "--out", "x.csv"], "a monthly report takes a month"),
    (["report", "quarterly", "--period", "2026Q5", "--out", "x.csv"], "not a period"),
    (["report", "weekly", "--grid", "nope", "--out", "x.csv"], "no grid"),
    (["report", "monthly", "--format", "doc", "--out", "x.doc"], "--format must be one of"),
    (["report", "monthly", "--out", "/nowhere/at/all/x.pdf"], "does not exist"),
])
def test_report_refusals_are_one_line(engine, cli_env, args, words):
    build_reports_world(engine)
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and words in result.output, result.output
    assert "Traceback" not in result.output


def test_apikeys_add_list_disable(engine, cli_env):
    result = runner.invoke(app, ["apikeys", "add", "city-12345"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    with session_scope(engine) as session:
        row = session.exec(select(ApiKey)).one()
        assert row.key_hash == apikeys.digest(key) and key not in row.key_hash and row.prefix == key[:10]
        assert apikeys.check_key(session, key).name == "city-12345"
    assert runner.invoke(app, ["apikeys", "add", "city-12345"]).exit_code == 1
    assert runner.invoke(app, ["apikeys", "add", "bad name!"]).exit_code == 1
    listed = runner.invoke(app, ["apikeys", "list"])
    assert "city-12345" in listed.output and key not in listed.output
    assert runner.invoke(app, ["apikeys", "disable", "city-12345"]).exit_code == 0
    with session_scope(engine) as session:
        assert apikeys.check_key(session, key) is None
        assert [a.action for a in session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()] == [
            "apikey.add", "apikey.disable"]
    assert runner.invoke(app, ["apikeys", "disable", "nobody"]).exit_code == 1


def test_shred_dry_run_then_for_real(engine, cli_env):
    pw = build_privacy_world(engine, cli_env / "data")
    clock.freeze(LATER)
    dry = runner.invoke(app, ["shred", "--older-than", "365d", "--dry-run"])
    assert dry.exit_code == 0 and "would shred" in dry.output and pw.hotline in dry.output, dry.output
    assert all(f.exists() for f in pw.files)
    done = runner.invoke(app, ["shred", "--older-than", "365d"])
    assert done.exit_code == 0 and "shredded" in done.output and "3 file(s)" in done.output, done.output
    assert not any(f.exists() for f in pw.files)
    with session_scope(engine) as session:
        assert session.exec(select(Case).where(Case.number == pw.hotline)).one().shredded_at is not None
    bad = runner.invoke(app, ["shred", "--older-than", "a while"])
    assert bad.exit_code == 1 and "365d" in bad.output


def test_shred_without_older_than_keeps_the_rules_retention(engine, cli_env, override):
    pw = build_privacy_world(engine, cli_env / "data")
    clock.freeze(LATER)
    override("[privacy]\nretention_days = 20\n")
    dry = runner.invoke(app, ["shred", "--dry-run"])
    cutoff = LATER - timedelta(days=20)
    # said on the district's clock (the CLI's times are local and labelled)
    assert dry.exit_code == 0 and f"closed before {clock.local_text(cutoff, tz='Asia/Shanghai')}" in dry.output, dry.output
    assert pw.recent in dry.output and pw.hotline in dry.output
