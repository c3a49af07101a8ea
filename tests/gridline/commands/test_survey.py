"""`gridline simulate-survey` against a running server (the follow-up webhooks on a real
aiohttp server in this test), `gridline demo handle` and `gridline residents do-not-call`."""

from __future__ import annotations

import asyncio
import wave

import numpy as np
import pytest
from sqlmodel import select
from typer.testing import CliRunner

from core import actions
from core.cases.models import Attachment, CaseStatus, Channel
from core.followup.models import SurveyStatus
from core.people.models import AuditEntry
from core.platform import clock
from core.platform.db import session_scope
from core.platform.settings import get_settings
from gridline.cli import app
from tests.ivr.conftest import KNOWN_PHONE, TOKEN, fake_speech  # noqa: F401  (fixture)
from tests.ivr.survey_rig import fake, fast_calls, local, srig  # noqa: F401  (fixtures)
from tests.support.serve import database_url

runner = CliRunner()


@pytest.fixture
def cli_env(srig, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("GRIDLINE_DATABASE_URL", database_url(srig.engine))
    monkeypatch.setenv("GRIDLINE_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("GRIDLINE_TWILIO_AUTH_TOKEN", TOKEN)  # the server's: webhooks signed with it
    monkeypatch.setenv("GRIDLINE_PUBLIC_URL", srig.url)
    get_settings.cache_clear()
    yield srig
    get_settings.cache_clear()


def comment_wav(path) -> str:
    t = np.arange(int(1.5 * 8000)) / 8000
    pcm = (6000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())
    return str(path)


async def invoke(*args: str):
    return await asyncio.to_thread(runner.invoke, app, list(args))


async def test_simulate_survey_answers_the_due_call(cli_env, fake_speech, tmp_path):  # noqa: F811
    rig = cli_env
    case = rig.verified_case()
    fake_speech.say("修 得 很 快")
    result = await invoke("simulate-survey", "--case", case.number, "--digits", "2", "--digits", "1",
                          "--say", comment_wav(tmp_path / "comment.wav"), "--speed", "0", "--server", rig.url)
    assert result.exit_code == 0, result.output
    assert "您在11月17日反映的路灯问题，我们来做个回访。" in result.output
    assert "survey answered: solved=partly satisfied=satisfied comment=修得很快" in result.output
    assert rig.case(case.id).status == CaseStatus.closed
    survey = rig.survey(case.id)
    assert survey.status == SurveyStatus.answered and survey.attempts == 1
    with session_scope(rig.engine) as s:
        assert s.exec(select(Attachment).where(Attachment.kind == "survey_comment")).one()
    assert rig.fake.created_calls == []  # no REST request: the simulator stood in for Twilio


async def test_simulate_survey_says_when_nothing_is_due(cli_env, tmp_path):
    rig = cli_env
    result = await invoke("simulate-survey", "--server", rig.url)
    assert result.exit_code == 1 and "no follow-up call is waiting" in result.output
    clock.freeze(local(2026, 11, 17, 22, 0))
    case = rig.verified_case()
    result = await invoke("simulate-survey", "--server", rig.url)
    assert result.exit_code == 1 and "the first at 2026-11-18 09:00 UTC+8" in result.output
    result = await invoke("simulate-survey", "--server", rig.url, "--any-time", "--answer", "busy", "--speed", "0")
    assert result.exit_code == 0, result.output
    (row,) = rig.attempts(rig.survey(case.id).id)
    assert row.outcome == "busy"


async def test_demo_handle_makes_the_follow_up_due(cli_env):
    rig = cli_env
    with session_scope(rig.engine) as s:
        # a quick-start call: the words not recognised (no model), the household's grid known
        case, _ = actions.submit_petition(s, actions.Petition(
            channel=Channel.hotline, description="", contact_phone=KNOWN_PHONE,
            files=(actions.FileRef("recording", "recordings/x.wav"),)), actor="test")
        actions.locate(s, case, actor="test", grid_id=rig.district["micro"], reason="registered household")
    result = await invoke("demo", "handle", case.number)
    assert result.exit_code == 1 and "say --category" in result.output
    result = await invoke("demo", "handle", case.number, "--category", "light")
    assert result.exit_code == 0, result.output
    assert rig.case(case.id).status == CaseStatus.verified
    assert [j.payload["survey_id"] for j in rig.queued()] == [rig.survey(case.id).id]
    assert [e.actor for e in rig.events(case.id, "dispatch", "accept", "report_done", "verify")] == [
        "demo:operator", "demo:worker", "demo:worker", "demo:leader"]


async def test_residents_do_not_call(cli_env):
    rig = cli_env
    result = await invoke("residents", "do-not-call", "+86 139 1111 2222")
    assert result.exit_code == 0 and "13911112222: never phoned for a follow-up" in result.output
    with session_scope(rig.engine) as s:
        resident = actions.find_resident_by_phone(s, "13911112222")
        assert resident.do_not_call and resident.household_id is None
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "resident.do_not_call")).one().actor.startswith("cli")
    result = await invoke("residents", "do-not-call", "13911112222", "--off")
    assert result.exit_code == 0 and "may be phoned again" in result.output
