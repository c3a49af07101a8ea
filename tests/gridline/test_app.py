"""The composition root: one aiohttp app with health checks, a CLI that works."""

from __future__ import annotations

import asyncio
import gc

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from console.auth import add_user
from core import actions
from core.actions import Petition
from core.cases.models import Channel
from core.platform.db import make_engine, session_scope
from core.platform.settings import Settings
from gridline.app import HSTS, SERVER_GC_THRESHOLDS, build_app
from tests.support.waiting import until


async def test_health_and_readiness(engine, tmp_path):
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=(), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        health = await client.get("/healthz")
        assert health.status == 200 and await health.json() == {"status": "ok"}  # nothing internal
        ready = await client.get("/readyz")
        assert ready.status == 200 and (await ready.json())["status"] == "ready"


async def test_the_system_page_shows_jobs_nobody_takes_and_paused_kinds_to_admins_only(engine, tmp_path):
    from core.platform import jobs
    from tests.support.console_admin import add_admin, admin_json

    add_admin(engine)
    with session_scope(engine) as session:  # a chat notification, and the bot is off here
        jobs.enqueue(session, "notify_resident", {"case": "1", "status": "dispatched"})
        add_user(session, "op", "correct horse battery", "operator")
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=("ivr", "console"), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        assert await (await client.get("/healthz")).json() == {"status": "ok"}
        anonymous = await client.get("/console/system.json", allow_redirects=False)
        assert anonymous.status == 303 and "/console/login" in anonymous.headers["Location"]
        page = await client.get("/console/login")
        token = (await page.text()).split('name="_csrf" value="', 1)[1].split('"', 1)[0]
        await client.post("/console/login", data={"_csrf": token, "name": "op",
                                                  "password": "correct horse battery"})
        assert (await client.get("/console/system.json")).status == 403  # an operator: not for them
        assert (await client.get("/console/system")).status == 403
        client.session.cookie_jar.clear()
        body = await admin_json(client)
        html = await (await client.get("/console/system")).text()
    assert "queued_without_handler" in html and "database_threads" in html
    assert body["jobs"]["queued_without_handler"] == {"notify_resident": 1}
    paused = body["jobs"]["paused"]
    assert paused["survey_phone"]["why"].startswith("no Twilio credentials (GRIDLINE_TWILIO_ACCOUNT_SID")
    assert "sms_progress" in paused and "transcribe_recording" in paused


async def test_strict_transport_security_on_every_answer_behind_https_only(engine, tmp_path):
    for public_url, expected in (("https://gridline.example.org", HSTS), ("http://127.0.0.1:8080", None)):
        app = build_app(Settings(data_dir=tmp_path, public_url=public_url), engine=engine,
                        channels=("console", "ivr"), run_jobs=False)
        async with TestClient(TestServer(app)) as client:
            for method, path in (("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/console/login"),
                                 ("GET", "/console/triage"), ("GET", "/no/such/page"),
                                 ("POST", "/twilio/voice")):  # an unsigned webhook: refused, still sent
                resp = await client.request(method, path, allow_redirects=False)
                assert resp.headers.get("Strict-Transport-Security") == expected, (public_url, path, resp.status)
    assert HSTS == "max-age=31536000; includeSubDomains"


async def test_readiness_reports_a_missing_database(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}")
    app = build_app(Settings(data_dir=tmp_path), engine=engine, channels=(), run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503 and (await resp.json())["database"] == "schema missing"


def test_cli_db_upgrade_and_cases(monkeypatch, tmp_path, engine):
    from core.platform.settings import get_settings
    from gridline.cli import app

    monkeypatch.setenv("GRIDLINE_DATABASE_URL", str(engine.url.render_as_string(hide_password=False)))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(app, ["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert "revision" in result.output
        with session_scope(engine) as session:
            case, _ = actions.submit_petition(session, Petition(channel=Channel.console, description="井盖丢了"))
        listed = runner.invoke(app, ["cases", "list"])
        assert listed.exit_code == 0 and case.number in listed.output
        shown = runner.invoke(app, ["cases", "show", case.number])
        assert shown.exit_code == 0 and "submit" in shown.output and "井盖丢了" in shown.output
        missing = runner.invoke(app, ["cases", "show", "999"])
        assert missing.exit_code == 1 and "no case 999" in missing.output
        bad = runner.invoke(app, ["cases", "list", "--status", "nonsense"])
        assert bad.exit_code == 1 and "unknown status" in bad.output
    finally:
        get_settings.cache_clear()


async def test_a_busy_database_is_a_503_with_retry_after(engine, tmp_path):
    import threading

    from gridline.app import SERVICES
    from tests.support.console_admin import add_admin, admin_json

    add_admin(engine)
    settings = Settings(data_dir=tmp_path, db_threads=1, db_queue=0, db_wait_seconds=0.2)
    app = build_app(settings, engine=engine, channels=("console",), run_jobs=False)
    gate = threading.Event()

    async def slow(request):
        await request.app[SERVICES].db.run(gate.wait, 30)
        return web.json_response({"done": True})

    app.router.add_get("/test/slow", slow)
    async with TestClient(TestServer(app)) as client:
        db = app[SERVICES].db
        from core.places.indexes import CACHE

        # The start-up warming of the routing indexes has used its thread and is done.
        await until(lambda: CACHE.current(engine) is not None and db.busy == 0 and db.waiting == 0)
        first = asyncio.ensure_future(client.get("/test/slow"))
        await until(lambda: db.busy == 1)
        second = await client.get("/test/slow")
        assert second.status == 503 and second.headers["Retry-After"] == "2"
        assert (await second.json())["detail"] == "please try again"
        gate.set()
        assert (await first).status == 200
        health = await admin_json(client)  # the console's own requests need a free thread too
        assert health["database_threads"]["threads"] == 1 and health["database_threads"]["refused"] >= 1


def test_channels_are_named_explicitly(engine, tmp_path):
    import pytest

    with pytest.raises(ValueError, match="unknown channel"):
        build_app(Settings(data_dir=tmp_path), engine=engine, channels=("fax",), run_jobs=False)


async def test_a_server_settles_the_garbage_collector_once_started(engine, tmp_path):
    """``gridline serve`` (server_gc): start-up's objects are frozen out of the collector's
    way and collections run less often; the tests' apps leave the collector as it is."""
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        plain = build_app(Settings(data_dir=tmp_path), engine=engine, channels=(), run_jobs=False)
        async with TestClient(TestServer(plain)):
            assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
        served = build_app(Settings(data_dir=tmp_path), engine=engine, channels=(), run_jobs=False, server_gc=True)
        async with TestClient(TestServer(served)):
            assert gc.get_freeze_count() > 0
            assert gc.get_threshold() == SERVER_GC_THRESHOLDS != before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
