"""`gridline workers invite|unlink|list` and `gridline report scores` (in-process with
Typer's runner; the invitation's bot name also through a real subprocess asking the fake
Bot API)."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import sys
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from chat.worker_store import invite_key
from core.people import staff
from core.people.models import StaffChat
from core.platform.db import session_scope
from core.platform.settings import Settings, get_settings
from gridline.cli import app
from tests.core.district import build_district
from tests.core.reporting.test_scores import fixture  # noqa: F401  (the hand-computed scores fixture)
from tests.support.fake_bot_api import DEFAULT_TOKEN, FakeBotApi
from tests.support.serve import database_url

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def cli_env(engine, monkeypatch, tmp_path):
    monkeypatch.setenv("GRIDLINE_DATABASE_URL", database_url(engine))
    monkeypatch.setenv("GRIDLINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GRIDLINE_TELEGRAM_TOKEN", DEFAULT_TOKEN)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def district(engine):
    with session_scope(engine) as session:
        return build_district(session)


def test_invite_prints_a_link_that_links_once(engine, district, cli_env):
    result = runner.invoke(app, ["workers", "invite", "W-M2", "--bot", "@qingxi_bot"])
    assert result.exit_code == 0, result.output
    link = re.search(r"https://t\.me/qingxi_bot\?start=w-(\S+)", result.output)
    assert link and "W-M2" in result.output
    key = invite_key(Settings(telegram_token=DEFAULT_TOKEN))
    with session_scope(engine) as session:
        assert staff.redeem_invite(session, link.group(1), key, 42).code == "W-M2"
    department = runner.invoke(app, ["workers", "invite", "chengguan", "--department", "--bot", "b"])
    assert department.exit_code == 0 and "department chengguan" in department.output

    listed = runner.invoke(app, ["workers", "list"])
    assert listed.exit_code == 0 and "W-M2" in listed.output and "42" in listed.output
    unlinked = runner.invoke(app, ["workers", "unlink", "W-M2"])
    assert unlinked.exit_code == 0 and "unlinked chat 42" in unlinked.output
    with session_scope(engine) as session:
        assert session.exec(select(StaffChat)).first() is None
    again = runner.invoke(app, ["workers", "unlink", "W-M2"])
    assert again.exit_code == 0 and "has no linked chat" in again.output


def test_invite_errors_are_clear(engine, district, cli_env, monkeypatch):
    unknown = runner.invoke(app, ["workers", "invite", "NOBODY", "--bot", "b"])
    assert unknown.exit_code == 1 and "no worker or department with code 'NOBODY'" in unknown.output
    monkeypatch.setenv("GRIDLINE_TELEGRAM_TOKEN", "")
    get_settings.cache_clear()
    tokenless = runner.invoke(app, ["workers", "invite", "W-M2", "--bot", "b"])
    assert tokenless.exit_code == 1 and "GRIDLINE_TELEGRAM_TOKEN is not set" in tokenless.output


async def test_invite_asks_the_bot_api_for_the_bot_name(engine, district, tmp_path):
    async with FakeBotApi() as fake:
        env = {**os.environ, "GRIDLINE_DATABASE_URL": database_url(engine), "GRIDLINE_DATA_DIR": str(tmp_path),
               "GRIDLINE_TELEGRAM_TOKEN": fake.token, "GRIDLINE_TELEGRAM_API_URL": fake.root_url}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gridline.cli", "workers", "invite", "W-A", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert "https://t.me/gridline_test_bot?start=w-" in out.decode()
    assert fake.calls("getMe")


def test_report_scores_with_csv(engine, fixture, cli_env, tmp_path):  # noqa: F811
    from datetime import datetime

    from core.platform import clock

    clock.freeze(datetime(2027, 1, 5))  # the same "as of" as the hand computation
    target = tmp_path / "scores.csv"
    result = runner.invoke(app, ["report", "scores", "--quarter", "2026Q4", "--csv", str(target)])
    assert result.exit_code == 0, result.output
    assert "62.00" in result.output and "—" in result.output and "2/4 50.0%" in result.output
    rows = {r["code"]: r for r in csv.DictReader(target.open(encoding="utf-8"))}
    assert set(rows) == {"W-M2", "W-A", "W-C", "W-D", "W-M1", "W-S"}
    m2 = rows["W-M2"]
    assert (m2["assignments"], m2["response_on_time"], m2["response_counted"], m2["resolution_on_time"],
            m2["resolution_counted"], m2["closed"], m2["evaluated"], m2["evaluation_points"]) == (
        "4", "2", "4", "3", "4", "2", "3", "200")
    assert (m2["work_score"], m2["evaluation_score"], m2["score"]) == ("60.00", "66.67", "62.00")
    assert rows["W-A"]["score"] == "—" and rows["W-A"]["work_score"] == "0.00"
    assert rows["W-S"]["score"] == "—" and rows["W-S"]["assignments"] == "0"

    bad = runner.invoke(app, ["report", "scores", "--quarter", "2026Q7"])
    assert bad.exit_code == 1 and "2026Q4" in bad.output


def test_report_scores_below_the_minimum_say_too_few(engine, fixture, cli_env, tmp_path, override):  # noqa: F811
    from datetime import datetime

    from core.platform import clock

    override("[scores]\nmin_cases = 5\n")  # W-M2 has 4 assignments
    clock.freeze(datetime(2027, 1, 5))
    target = tmp_path / "scores.csv"
    result = runner.invoke(app, ["report", "scores", "--quarter", "2026Q4", "--csv", str(target)])
    assert result.exit_code == 0, result.output
    assert "too few cases (<5)" in result.output and "62.00" not in result.output
    rows = {r["code"]: r for r in csv.DictReader(target.open(encoding="utf-8"))}
    assert (rows["W-M2"]["score"], rows["W-M2"]["too_few"], rows["W-M2"]["work_score"]) == ("—", "yes", "60.00")
