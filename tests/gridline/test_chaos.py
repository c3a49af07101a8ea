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


@pytest.mark.xfail(strict=False, reason=(
    "issue 25, open: under the full suite's load a voice-first caller whose webhook meets a "
    "terminated backend may not hear their number (seen: 2 of 6); every case and all the audio "
    "are kept; passes when the machine is not saturated"))
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
    assert audit.lost == [] and audit.cases_stored == CALLS and audit.numbers_heard == CALLS
    assert all_cases(engine) == CHATS + CALLS
    assert fake.token.split(":")[1] not in log
    for key, value in (("petitions_sent", CHATS + CALLS), ("cases_stored", all_cases(engine)),
                       ("audio_s_sent", round(audit.audio_s_sent, 2)), ("audio_s_kept", round(audit.audio_s_kept, 2)),
                       ("backends_terminated", chaos.terminated), ("termination_rounds", chaos.rounds)):
        record_property(key, value)
