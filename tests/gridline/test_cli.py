"""The `gridline` command as a newcomer meets it: problems of configuration, database and
files are one or two lines that say what to do (a real subprocess, so the count of lines
is what a person sees), `cases show` tells the whole case, `grids households` lists the
numbers the quick start needs, and row limits are bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import select
from typer.testing import CliRunner

from core import actions
from core.actions import FileRef, Petition
from core.cases.models import Channel
from core.people.models import AuditEntry, Resident
from core.places.models import Household
from core.platform.db import session_scope
from core.platform.settings import get_settings
from core.reference.demo import load_demo
from tests.support.serve import database_url

ROOT = Path(__file__).resolve().parents[2]


def gridline(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "gridline", *args], cwd=cwd, env=clean, capture_output=True,
                          text=True, timeout=120)


def assert_short_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    said = (result.stdout + result.stderr).strip()
    assert "Traceback" not in said, said
    assert len(said.splitlines()) <= 2, said
    assert said.startswith("error: "), said
    for fragment in fragments:
        assert fragment in said, said


@pytest.mark.parametrize("env, fragments", [
    ({"GRIDLINE_DATABASE_URL": "sqlite:///{tmp}/never-migrated.sqlite3"},
     ("has no Gridline tables", "run `gridline db upgrade`")),
    ({"GRIDLINE_DATABASE_URL": "::not a url::"}, ("is not a database URL", "postgresql://")),
    ({"GRIDLINE_DATABASE_URL": "mysql://root@127.0.0.1/gridline"}, ("'mysql'", "PostgreSQL or SQLite")),
    ({"GRIDLINE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/gridline"},
     ("cannot reach PostgreSQL 127.0.0.1:1/gridline", "Is the server running")),
    ({"GRIDLINE_DATABASE_URL": "sqlite:///{tmp}/no/such/folder/g.sqlite3"},
     ("no/such/folder of the SQLite database", "does not exist")),
    ({"GRIDLINE_PORT": "eighty"}, ("GRIDLINE_PORT='eighty'", "integer")),
    ({"GRIDLINE_TIMEZONE": "Asia/Atlantis"}, ("GRIDLINE_TIMEZONE='Asia/Atlantis'", "time zone")),
    ({"GRIDLINE_SPEECH_WORKERS": "-1"}, ("GRIDLINE_SPEECH_WORKERS",)),
    ({"GRIDLINE_SERVICE_HOURS": "8-17"}, ("GRIDLINE_SERVICE_HOURS='8-17'", "08:30-17:30")),
    ({"GRIDLINE_PUBLIC_URL": "hotline.example.org"}, ("GRIDLINE_PUBLIC_URL", "https://")),
    ({"GRIDLINE_RULES": "{tmp}/rules.toml"}, ("GRIDLINE_RULES=", "notify.statuses[0]: unknown status 'done'")),
    ({"GRIDLINE_FLOW": "{tmp}/flow.toml"}, ("GRIDLINE_FLOW=", "petition.max_second: unknown key")),
    ({"GRIDLINE_SURVEY_FLOW": "{tmp}/flow.toml"}, ("GRIDLINE_SURVEY_FLOW=", "petition: unknown key")),
    ({"GRIDLINE_CATEGORIES": "{tmp}/categories.toml"}, ("GRIDLINE_CATEGORIES=", "category[0].colour: unknown key")),
], ids=["unmigrated", "unparsable-url", "unsupported-driver", "unreachable", "missing-sqlite-folder",
        "bad-port", "bad-timezone", "negative-workers", "bad-service-hours", "bad-public-url", "bad-rules",
        "bad-flow", "bad-survey-flow", "bad-categories"])
def test_database_and_settings_problems_are_one_line(tmp_path, env, fragments):
    (tmp_path / "rules.toml").write_text('[notify]\nstatuses = ["done"]\n', "utf-8")
    (tmp_path / "flow.toml").write_text("[petition]\nmax_second = 90\n", "utf-8")
    (tmp_path / "categories.toml").write_text('[[category]]\ncode = "x"\ncolour = "red"\n', "utf-8")
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    env.setdefault("GRIDLINE_DATA_DIR", str(tmp_path / "data"))
    result = gridline("cases", "list", env=env, cwd=tmp_path)
    assert_short_error(result, *fragments)
    assert not (tmp_path / "no").exists()  # an explicit SQLite path's folder is not made up


def test_serve_refuses_bad_rules_before_it_listens(tmp_path):
    (tmp_path / "rules.toml").write_text("[sweeps]\nsla_period = 5\n", "utf-8")
    result = gridline("serve", "--port", "1", env={"GRIDLINE_DATA_DIR": str(tmp_path / "data"),
                                                   "GRIDLINE_RULES": str(tmp_path / "rules.toml")}, cwd=tmp_path)
    assert_short_error(result, "sweeps.sla_period: unknown key (did you mean 'sla_period_minutes'?)")


def test_the_default_database_folder_is_made(tmp_path):
    result = gridline("db", "upgrade", env={"GRIDLINE_DATA_DIR": str(tmp_path / "fresh" / "data")}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fresh" / "data" / "gridline.sqlite3").exists()


def test_export_to_a_missing_folder_is_one_line(tmp_path, engine):
    env = {"GRIDLINE_DATABASE_URL": database_url(engine), "GRIDLINE_DATA_DIR": str(tmp_path)}
    result = gridline("grids", "export", str(tmp_path / "missing" / "grids.geojson"), env=env, cwd=tmp_path)
    assert_short_error(result, "cannot write", "missing")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root writes anywhere: a path under a file fails for everyone
            target = tmp_path / "serve.log" / "grids.geojson"
            (tmp_path / "serve.log").write_text("", "utf-8")
        else:
            target = ro / "grids.geojson"
        result = gridline("grids", "export", str(target), env=env, cwd=tmp_path)
        assert_short_error(result, "cannot")
    finally:
        ro.chmod(0o700)


# -- in-process: output of the commands -----------------------------------------------------


@pytest.fixture
def cli(monkeypatch, engine, tmp_path):
    from gridline.cli import app

    monkeypatch.setenv("GRIDLINE_DATABASE_URL", database_url(engine))
    monkeypatch.setenv("GRIDLINE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(args))
    get_settings.cache_clear()


def test_cases_list_limit_is_bounded(cli):
    for bad in ("-1", "0", "1001"):
        result = cli("cases", "list", "--limit", bad)
        assert result.exit_code == 2 and "--limit" in result.output, result.output
    assert cli("cases", "list", "--limit", "1000").exit_code == 0


def test_cases_show_prints_transcript_files_and_survey(cli, engine, tmp_path):
    recording = tmp_path / "recordings" / "CA1-petition-1.wav"
    recording.parent.mkdir(parents=True)
    recording.write_bytes(b"RIFF....WAVE")
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, Petition(
            channel=Channel.hotline, description="路灯坏了", contact_phone="13800138000",
            transcript=[{"text": "九幢门口的路灯坏了", "start": 0.4, "end": 2.9, "confidence": 0.83}],
            transcript_confidence=0.83,
            files=(FileRef("recording", "recordings/CA1-petition-1.wav", "audio/wav", 12),
                   FileRef("photo", "chat/2026/11/lamp.jpg", "image/jpeg", 2048))))
        actions.start_survey(session, case)
    shown = cli("cases", "show", case.number)
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert "九幢门口的路灯坏了" in out and "0.83" in out
    lines = out.splitlines()
    [wav] = [line for line in lines if str(recording) in line]
    assert "recording" in wav and "audio/wav" in wav and "missing" not in wav
    [photo] = [line for line in lines if "lamp.jpg" in line]
    assert str(tmp_path / "chat/2026/11/lamp.jpg") in photo and "missing from the media store" in photo
    assert "follow-up survey" in out and "pending" in out


def test_grids_households_lists_phone_numbers_and_is_audited(cli, engine):
    with session_scope(engine) as session:
        load_demo(session)
        resident, household = session.exec(
            select(Resident, Household).join(Household, Household.id == Resident.household_id)
            .where(Resident.phone.is_not(None)).order_by(Household.code, Resident.id)).first()
    listed = cli("grids", "households", "--limit", "5")
    assert listed.exit_code == 0, listed.output
    assert household.code in listed.output and resident.phone in listed.output
    narrowed = cli("grids", "households", "--grid", "no-such-grid")
    assert narrowed.exit_code == 1 and "no grid has code" in narrowed.output
    with session_scope(engine) as session:
        assert session.exec(select(AuditEntry).where(AuditEntry.action == "view_households")).first() is not None


def test_demo_load_district_year_loads_cases_and_a_filed_petition_gets_the_next_number(cli, engine):
    result = cli("demo", "load", "--size", "district-year", "--cases", "200")
    assert result.exit_code == 0, result.output
    assert "loaded 200 cases" in result.output
    with engine.connect() as conn:
        assert conn.execute(text('SELECT count(*) FROM "case"')).scalar() == 200
    from core import actions
    from core.cases.intake import file_petition
    from core.cases.models import Channel

    filed = file_petition(engine, actions.Petition(channel=Channel.hotline, description="路灯不亮了",
                                                   idempotency_key="after-history", contact_phone="19900000001"))
    assert filed.created  # the numbering and id sequences continue after the loaded year
    again = cli("demo", "load", "--size", "district-year", "--cases", "10")
    assert again.exit_code != 0 and "only into an empty database" in again.output
    wrong = cli("demo", "load", "--size", "city")
    assert wrong.exit_code != 0 and "district-year" in wrong.output


def test_help_lists_every_command_without_importing_their_modules(tmp_path):
    """`gridline --help` comes from the table: no command module (nor what they import) loads."""
    script = ("import sys\nfrom gridline.cli import main\nsys.argv = ['gridline', '--help']\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              "print('LOADED', sorted(m for m in sys.modules if m.startswith(('gridline.commands', 'core.'))))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "LOADED []"
    from gridline.cli import COMMANDS

    listed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 1}
    assert {name for name, entry in COMMANDS.items() if not entry.hidden} <= listed
    assert "worker" not in listed  # the old name of `jobs`: hidden


def test_every_command_in_the_table_loads_and_answers_its_help():
    from gridline.cli import COMMANDS, app

    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output and name in result.output, name


def test_an_unknown_command_is_refused_with_the_nearest_names():
    from gridline.cli import app

    result = CliRunner().invoke(app, ["workerz"])
    assert result.exit_code == 2
    assert "No such command 'workerz'. Did you mean 'workers'?" in " ".join(result.output.split())
