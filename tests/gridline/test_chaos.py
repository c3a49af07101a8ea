"""PostgreSQL dropping every connection of the real `gridline serve`, again and again,
while 30 residents file by chat and 6 call the hotline at once: every confirmed petition
is a case, every resident has their number (in the chat, or read out on the phone), every
caller's audio is kept, nothing is left in the chat inbox. One process serves both
channels, as in a district; the bot in webhook mode against the fake Bot API, the calls
played by the simulator at real-time pace. No speech model: the calls are filed with
their audio, as the README's quick start does."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlmodel import select

from core.cases.models import CallSession
from core.platform.db import session_scope
from ivr.config import FlowConfig
from tests.ivr.conftest import TOKEN, tone
from tests.ivr.load import CallPlan, audit_calls, demo_phones, known_caller, place_calls
from tests.support.chat_driver import (
    Resident,
    all_cases,
    bot_server,
    cases_of,
    inbox_left,
    start_server,
)
from tests.support.fake_bot_api import FakeBotApi
from tests.support.pg_chaos import BackendTerminator
from tests.support.serve import database_url
from tests.support.waiting import until

CHATS = 30
CALLS = 6
HOLD_ROUNDS = FlowConfig.load()["hold"]["rounds"]


def calls_filed(engine, plans: list[CallPlan]) -> int:
    sids = [p.script.call_sid for p in plans]
    with session_scope(engine) as s:
        return len(s.exec(select(CallSession.case_id).where(CallSession.call_sid.in_(sids),
                                                            CallSession.case_id.is_not(None))).all())


async def test_backends_terminated_during_a_burst_of_chats_and_calls(engine, tmp_path, record_property):
    if engine.dialect.name != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    data = tmp_path / "data"
    async with FakeBotApi() as fake:
        server = bot_server(fake, data, database_url(engine), env={"GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN})
        try:
            await start_server(server, fake)
            residents = [Resident(fake, 6_230_000_000 + i, first_name=f"R{i}", timeout=180) for i in range(CHATS)]
            plans = [CallPlan(known_caller(phone, f"CA{uuid.uuid4().hex}", tone(3)))
                     for phone in demo_phones(engine, CALLS)]
            async with BackendTerminator(database_url(engine), every=0.3, min_rounds=5) as chaos:
                numbers, outcomes = await asyncio.gather(
                    asyncio.gather(*(r.file_petition(f"第{i}号楼的下水道堵了，污水漫到路上")
                                     for i, r in enumerate(residents))),
                    place_calls(server.url, TOKEN, plans, speed=1, jitter_s=1.0))
            await until(lambda: inbox_left(engine) == [], timeout=120, message="the chat inbox emptied")
            # A call let go after its holds is filed by the instance once the database answers
            # (Twilio's status callback is sent once; the instance retries it, pauses doubling).
            await until(lambda: calls_filed(engine, plans) == CALLS, timeout=120, message="every call filed")
        finally:
            server.stop()
        log = server.log()

    assert chaos.terminated > 0, "no connection was terminated: the test proved nothing"
    for resident, number in zip(residents, numbers, strict=True):
        assert cases_of(engine, resident.user_id) == [number]
        assert set(resident.numbers_received()) == {number}
    audit = audit_calls(engine, data, outcomes)
    print(audit.line(f"{CALLS} calls beside {CHATS} chats, {chaos.terminated} backends terminated "
                     f"in {chaos.rounds} rounds"))
    # A caller hears their number, or (with the CPU saturated, filing takes longer than the
    # 0.3 s between terminations, so no try gets through while the chaos lasts) holds each
    # [hold] round and is then told 系统繁忙: their case is filed all the same (above, below).
    let_go = [o for o in outcomes if o.result is None or o.result.case_number is None]
    for out in let_go:
        assert out.result is not None and out.result.heard[-1] == "系统繁忙，请稍后再拨。再见。", out
        assert out.result.heard.count("请稍候。") >= HOLD_ROUNDS, out.result.heard
    record_property("callers_let_go_after_holds", len(let_go))
    assert [lost for lost in audit.lost if "did not hear" not in lost] == []
    assert audit.cases_stored == CALLS and audit.numbers_heard == CALLS - len(let_go)
    assert all_cases(engine) == CHATS + CALLS
    assert fake.token.split(":")[1] not in log
    for key, value in (("petitions_sent", CHATS + CALLS), ("cases_stored", all_cases(engine)),
                       ("audio_s_sent", round(audit.audio_s_sent, 2)), ("audio_s_kept", round(audit.audio_s_kept, 2)),
                       ("backends_terminated", chaos.terminated), ("termination_rounds", chaos.rounds)):
        record_property(key, value)
