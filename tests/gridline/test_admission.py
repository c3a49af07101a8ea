"""Admission (gridline/admission.py): over ``[admission] max_in_flight`` a request is refused
at once with 503 and Retry-After, before any handler runs; the hotline's webhooks and the
health checks are never refused. First through an aiohttp server whose handler we hold,
then through a real ``gridline serve`` taking Open311 petitions from many clients at once."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from core.people import apikeys
from core.platform.db import session_scope
from core.platform.rules import load_rules
from gridline.admission import Admission
from tests.support.serve import ServeProcess, database_url


async def test_a_request_over_the_limit_is_refused_at_once_and_exempt_paths_never():
    admission = Admission(max_in_flight=1, retry_after_seconds=3, exempt_paths=("/twilio/", "/healthz"))
    release = asyncio.Event()
    entered: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        entered.append(request.path)
        await release.wait()
        return web.Response(text="done")

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[admission.middleware])
    app.router.add_post("/open311/v2/requests.json", slow)
    app.router.add_post("/open311/v2/requests.xml", slow)
    app.router.add_post("/console/cases/1/close", slow)
    app.router.add_post("/twilio/voice", slow)
    app.router.add_get("/healthz", healthz)
    async with TestClient(TestServer(app)) as client:
        first = asyncio.create_task(client.post("/open311/v2/requests.json"))
        while admission.in_flight < 1:
            await asyncio.sleep(0.01)
        refused = await client.post("/open311/v2/requests.json")
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "3"
        assert (await refused.json()) == [{"code": 503, "description": "the server is busy; please try again in 3 s"}]
        assert entered == ["/open311/v2/requests.json"]  # the refused one never reached the handler
        as_xml = await client.post("/open311/v2/requests.xml")  # Open311's error list, as asked
        assert as_xml.status == 503 and "<code>503</code>" in await as_xml.text()
        console = await client.post("/console/cases/1/close")
        assert console.status == 503 and (await console.json())["status"] == "busy"
        call = asyncio.create_task(client.post("/twilio/voice"))  # a caller is never turned away
        health = await client.get("/healthz")
        assert health.status == 200
        while len(entered) < 2:
            await asyncio.sleep(0.01)
        assert entered == ["/open311/v2/requests.json", "/twilio/voice"]
        release.set()
        assert (await first).status == 200
        assert (await call).status == 200
        assert admission.in_flight == 0 and admission.refused == 3
        again = await client.post("/open311/v2/requests.json")  # below the limit again: admitted
        assert again.status == 200


def test_the_shipped_rules_never_refuse_a_caller_nor_the_files_of_a_page_already_served():
    admission = Admission.from_rules(load_rules())
    for path in ("/twilio/voice", "/twilio/stream", "/telegram/webhook", "/healthz", "/console/static/console.js",
                 "/console/static/console.css", "/chat/sw.js"):
        assert admission.exempt(path), path
    for path in ("/console/cases", "/console/static", "/chat/api/state", "/open311/v2/requests.json"):
        assert not admission.exempt(path), path


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_requests(admission: Admission, clock: Clock, *, at_once: int, seconds_each: float, rounds: int) -> None:
    """``rounds`` batches of ``at_once`` requests taken together, each batch answered after
    ``seconds_each``: a process finishing at_once / seconds_each requests per busy second."""
    for _ in range(rounds):
        for _ in range(at_once):
            assert admission.admit()
        clock.now += seconds_each
        for _ in range(at_once):
            admission.finish()


def test_the_limit_follows_what_the_process_finishes_in_the_target_time():
    clock = Clock()
    admission = Admission(max_in_flight=64, target_seconds=0.25, min_in_flight=2, clock=clock)
    assert admission.limit == 64  # nothing measured yet: the ceiling
    run_requests(admission, clock, at_once=4, seconds_each=0.1, rounds=40)  # 40 per busy second
    assert 30 <= admission.rate <= 50
    limit = admission.limit
    assert 7 <= limit <= 12  # ~40/s x 0.25 s
    for _ in range(limit):
        assert admission.admit()
    assert not admission.admit() and admission.refused == 1  # one more would wait too long: refused
    for _ in range(limit):
        admission.finish()
    before = admission.rate
    clock.now += 600  # an idle while measures nothing: quiet is not mistaken for slowness
    assert admission.admit()
    clock.now += 0.025
    admission.finish()
    assert admission.rate >= before
    run_requests(admission, clock, at_once=2, seconds_each=0.005, rounds=1000)  # a fast process
    assert admission.limit == 64  # capped by max_in_flight
    run_requests(admission, clock, at_once=1, seconds_each=2.0, rounds=12)  # a starved one
    assert admission.limit == 2  # never below min_in_flight
    assert admission.admit() and admission.admit() and not admission.admit()


def test_exempt_paths_match_whole_paths_or_what_is_under_a_folder():
    admission = Admission(max_in_flight=1, exempt_paths=("/twilio/", "/healthz"))
    assert admission.exempt("/twilio/voice") and admission.exempt("/twilio/survey/3/answer")
    assert admission.exempt("/healthz")
    assert not admission.exempt("/healthzz") and not admission.exempt("/twiliox")
    assert not admission.exempt("/open311/v2/requests.json")


def test_many_clients_against_a_small_limit_file_each_case_once_and_refuse_with_retry_after(engine, tmp_path):
    """A real server with room for 2 requests at a time, 24 clients posting at once: every
    answer is 200 (one case) or 503 with Retry-After (no case); no client id files twice,
    and a refused petition sent again is filed."""
    from core.actions.reference import load_demo

    with session_scope(engine) as session:
        load_demo(session, actor="test")
        _, key = apikeys.add_key(session, "load-test", actor="test")
        places = [name for (name,) in session.exec(
            text("SELECT name FROM gazetteerentry WHERE kind = 'building' ORDER BY id LIMIT 10")).all()]
    assert places
    rules = tmp_path / "rules.toml"
    rules.write_text("[admission]\nmax_in_flight = 2\nretry_after_seconds = 2\n", "utf-8")
    ids = [f"adm-{uuid.uuid4().hex[:10]}" for _ in range(24)]

    async def post(http: aiohttp.ClientSession, url: str, ident: str, n: int):
        form = {"api_key": key, "service_code": "streetlight", "description": "路灯不亮了",
                "phone": f"1990000{n:04d}", "address_string": places[n % len(places)]}
        async with http.post(f"{url}/open311/v2/requests.json", data=form,
                             headers={"Idempotency-Key": ident}) as resp:
            return resp.status, resp.headers.get("Retry-After"), await resp.text()

    async def burst(url: str, which: list[int]):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            return await asyncio.gather(*(post(http, url, ids[n], n) for n in which))

    with ServeProcess(tmp_path / "data", database_url(engine),
                      env={"GRIDLINE_RULES": str(rules), "GRIDLINE_LOAD_DEMO_ON_EMPTY": "false"}) as server:
        answers = asyncio.run(burst(server.url, list(range(len(ids)))))
        statuses = [status for status, _, _ in answers]
        assert set(statuses) <= {200, 503}, answers
        assert 503 in statuses, "24 posts at once against room for 2: some must be refused"
        assert all(retry == "2" for status, retry, _ in answers if status == 503)
        refused = [n for n, (status, _, _) in enumerate(answers) if status == 503]
        with engine.connect() as conn:
            filed = dict(conn.execute(text("SELECT idempotency_key, count(*) FROM \"case\" GROUP BY idempotency_key"))
                         .all())
        assert all(count == 1 for count in filed.values())
        keys = {k.split("|")[1] for k in filed}
        assert keys == {ids[n] for n, (status, _, _) in enumerate(answers) if status == 200}
        # what was refused is filed when sent again (one at a time: under the limit)
        for n in refused:
            (status, _, body), = asyncio.run(burst(server.url, [n]))
            assert status == 200, body
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM \"case\"")).scalar()
        events = conn.execute(text("SELECT count(*) FROM caseevent WHERE action = 'submit'")).scalar()
    assert count == len(ids) and events == len(ids)
