"""console.auth: passwords, login rate limiting per account and per address, audit rows
of logins, disabled accounts, client addresses behind a proxy."""

from __future__ import annotations

import pytest
from sqlmodel import select

from console.auth import (
    add_user,
    attempt_login,
    client_address,
    hash_password,
    rate_limited,
    set_disabled,
)
from core.db import session_scope
from core.errors import InvalidInput, NotFound
from core.models import AuditEntry, ConsoleUser
from tests.console.conftest import PASSWORD, csrf_of, login


def _audit(engine, action):
    with session_scope(engine) as session:
        return session.exec(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all()


def test_passwords_are_argon2_and_never_stored_plain(engine, world):
    with session_scope(engine) as session:
        user = session.exec(select(ConsoleUser).where(ConsoleUser.name == "op")).one()
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    with pytest.raises(InvalidInput):
        hash_password("short")


def test_adding_users_checks_what_it_is_given(engine, world):
    with session_scope(engine) as session:
        with pytest.raises(InvalidInput, match="unknown role"):
            add_user(session, "x1", PASSWORD, "king")
        with pytest.raises(NotFound, match="no worker"):
            add_user(session, "x2", PASSWORD, "worker", worker_code="W-NONE")
        with pytest.raises(InvalidInput, match="needs --worker"):
            add_user(session, "x3", PASSWORD, "worker")
        with pytest.raises(InvalidInput, match="exists already"):
            add_user(session, "op", PASSWORD, "operator")
        with pytest.raises(NotFound, match="no grid"):
            add_user(session, "x4", PASSWORD, "viewer", grid_codes=["000"])


def test_login_success_and_failure_are_audited_with_the_address(engine, world):
    with session_scope(engine) as session:
        assert attempt_login(session, "op", "wrong password!", "10.1.2.3").user is None
        assert attempt_login(session, "op", PASSWORD, "10.1.2.3").user is not None
    failed, ok = _audit(engine, "console.login_failed"), _audit(engine, "console.login")
    assert [(a.target_id, a.remote) for a in failed] == [("op", "10.1.2.3")]
    assert [(a.target_id, a.remote) for a in ok] == [("op", "10.1.2.3")]


def test_rate_limit_per_account(engine, world):
    with session_scope(engine) as session:
        for _ in range(5):
            assert not attempt_login(session, "op", "not the password", "10.0.0.1").limited
    with session_scope(engine) as session:
        # from another address, with the right password: still refused, unchecked
        result = attempt_login(session, "op", PASSWORD, "10.0.0.2")
        assert result.limited and result.user is None
        assert not rate_limited(session, "sup", "10.0.0.2")  # other accounts are not affected


def test_rate_limit_per_address(engine, world):
    with session_scope(engine) as session:
        for i in range(20):  # spread over names, so no account reaches its own limit
            attempt_login(session, f"guess{i % 5}", "nope nope nope", "192.0.2.9")
    with session_scope(engine) as session:
        assert attempt_login(session, "sup", PASSWORD, "192.0.2.9").limited
        assert attempt_login(session, "sup", PASSWORD, "192.0.2.10").user is not None


async def test_login_rate_limiting_engages_over_http(client, world):
    for _ in range(5):
        await login(client, "op", "wrong password", expect=401)
    resp = await login(client, "op", PASSWORD, expect=429)
    assert "尝试次数过多" in await resp.text()


async def test_a_disabled_account_is_logged_out_at_once(client, engine, world):
    await login(client, "op")
    assert (await client.get("/console/triage")).status == 200
    with session_scope(engine) as session:
        set_disabled(session, "op", True, actor="cli")
    assert (await client.get("/console/triage", allow_redirects=False)).status == 303
    await login(client, "op", expect=401)


async def test_admin_disables_from_the_users_page(client, engine, world):
    await login(client, "admin")
    token = await csrf_of(client, "/console/users")
    resp = await client.post("/console/users/viewer/disable", data={"_csrf": token}, allow_redirects=False)
    assert resp.status == 303
    rows = _audit(engine, "console.user_disable")
    assert [(r.actor, r.target_id) for r in rows] == [("console:admin", "viewer")] and rows[0].remote


class _Req:
    def __init__(self, remote, xff=None):
        self.remote = remote
        self.headers = {"X-Forwarded-For": xff} if xff else {}


def test_x_forwarded_for_only_from_a_configured_proxy(monkeypatch):
    from console.config import get_console_settings

    get_console_settings.cache_clear()
    monkeypatch.delenv("GRIDLINE_TRUSTED_PROXIES", raising=False)
    try:
        assert client_address(_Req("203.0.113.5", "1.2.3.4")) == "203.0.113.5"
        monkeypatch.setenv("GRIDLINE_TRUSTED_PROXIES", "10.0.0.0/8")
        get_console_settings.cache_clear()
        # the nearest hop that is not our proxy; what the client wrote first is not believed
        assert client_address(_Req("10.0.0.7", "6.6.6.6, 198.51.100.20, 10.0.0.3")) == "198.51.100.20"
        assert client_address(_Req("203.0.113.5", "1.2.3.4")) == "203.0.113.5"  # not via the proxy
    finally:
        get_console_settings.cache_clear()
