"""``gridline users``: add (prompted or from stdin), list, disable, enable, password; and
``gridline serve`` on a database with no account says how to make the first admin."""

from __future__ import annotations

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from console.models import ConsoleUser
from core.people.models import AuditEntry
from core.platform.db import session_scope
from tests.core.district import build_district
from tests.support.serve import ServeProcess, database_url


@pytest.fixture
def cli(monkeypatch, engine, tmp_path):
    from core.platform.settings import get_settings
    from gridline.cli import app

    monkeypatch.setenv("GRIDLINE_DATABASE_URL", database_url(engine))
    monkeypatch.setenv("GRIDLINE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    with session_scope(engine) as session:
        build_district(session)
    runner = CliRunner()
    yield lambda *args, stdin=None: runner.invoke(app, ["users", *args], input=stdin)
    get_settings.cache_clear()


def test_add_list_disable_enable(cli, engine):
    made = cli("add", "chen", "--role", "worker", "--worker", "W-M1", "--grid", "3504990010010101",
               "--password-stdin", stdin="a long enough secret\n")
    assert made.exit_code == 0, made.output
    prompted = cli("add", "li", "--role", "operator", stdin="another secret pw\nanother secret pw\n")
    assert prompted.exit_code == 0, prompted.output
    listed = cli("list")
    assert "chen" in listed.output and "W-M1" in listed.output and "3504990010010101" in listed.output
    assert cli("disable", "li").exit_code == 0
    with session_scope(engine) as session:
        li = session.exec(select(ConsoleUser).where(ConsoleUser.name == "li")).one()
        assert li.disabled and li.password_hash.startswith("$argon2id$")
        actions = session.exec(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["console.user_add", "console.user_add", "console.user_disable"]
    assert cli("enable", "li").exit_code == 0
    assert cli("password", "li", "--password-stdin", stdin="a brand new secret\n").exit_code == 0


def test_bad_input_is_a_clear_error(cli):
    for args, stdin, message in (
        (("add", "x", "--role", "emperor", "--password-stdin"), "long enough pw\n", "unknown role"),
        (("add", "x", "--role", "worker", "--worker", "NOPE", "--password-stdin"), "long enough pw\n", "no worker"),
        (("add", "x", "--role", "operator", "--password-stdin"), "short\n", "at least 10"),
        (("disable", "ghost"), None, "no user ghost"),
    ):
        result = cli(*args, stdin=stdin)
        assert result.exit_code == 1 and message in result.output, result.output


def test_serve_with_no_users_prints_how_to_make_the_first_admin(engine, tmp_path):
    serve = ServeProcess(tmp_path / "data", database_url(engine), env={"GRIDLINE_LOAD_DEMO_ON_EMPTY": "false"})
    with serve:
        pass
    assert "gridline users add NAME --role admin" in serve.log()
    with session_scope(engine) as session:  # and no account with a default password appeared
        assert session.exec(select(ConsoleUser)).all() == []


def test_throttles_are_listed_and_cleared_from_the_command_line(cli, engine):
    from console.auth import attempt_login

    assert cli("add", "li", "--role", "admin", "--password-stdin", stdin="a long enough secret\n").exit_code == 0
    with session_scope(engine) as session:
        for _ in range(3):
            assert attempt_login(session, "li", "not the secret", "192.0.2.7").user is None
    with session_scope(engine) as session:
        assert attempt_login(session, "li", "a long enough secret", "192.0.2.7").limited
    listed = cli("throttles").output.splitlines()
    assert listed[1].split("\t")[:4] == ["pair", "li", "192.0.2.7", "3"]
    assert cli("unthrottle").exit_code == 1
    cleared = cli("unthrottle", "--account", "li", "--address", "192.0.2.7")
    assert cleared.exit_code == 0, cleared.output
    assert cli("throttles").output.splitlines()[1:] == []
    with session_scope(engine) as session:
        assert attempt_login(session, "li", "a long enough secret", "192.0.2.7").user is not None
        row = session.exec(select(AuditEntry).where(AuditEntry.action == "console.login_unthrottle")).one()
    assert row.actor == "cli" and row.detail == {"account": "li", "address": "192.0.2.7"}
