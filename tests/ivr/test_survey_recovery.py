"""A follow-up call whose `gridline serve` is killed with SIGKILL while the resident is
saying their comment, then started again on the same data: the comment is kept exactly as
a hotline recording is (its WAV header made true again, attached with an event and a
transcription job), by whichever path sees the call end first — its final status callback
arriving after the restart, or, when that callback was lost while the server was down,
the ``survey_call_check`` job reading the call's status at Twilio."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import select

from core import actions
from core.cases.models import Attachment, CaseEvent, Channel
from core.followup.models import Survey
from core.platform import clock
from core.platform.db import session_scope
from core.platform.models import Job, JobStatus
from core.platform.storage import resolve
from ivr import survey_calls
from ivr.simulator import CallScript, Simulator, Turn
from tests.support.fake_twilio import FakeTwilio, make_twilio_client
from tests.support.serve import ServeProcess, database_url

from .conftest import KNOWN_PHONE, TOKEN, build_district, tone, wait_until
from .load import wav_seconds
from .survey_rig import RESIDENT_E164

pytestmark = pytest.mark.slow


def verified_case(engine, district: dict) -> int:
    with session_scope(engine) as s:
        resident = actions.find_resident_by_phone(s, KNOWN_PHONE)
        case, _ = actions.submit_petition(s, actions.Petition(
            channel=Channel.hotline, description="楼道灯坏了", contact_phone=KNOWN_PHONE, resident_id=resident.id,
            category_code="light"), actor="test")
        actions.dispatch(s, case, actor="test", grid_id=district["micro"])
        actions.accept(s, case, actor="test")
        actions.report_done(s, case, actor="test", note="修好了")
        actions.verify(s, case, actor="test")
        return case.id


def comment_rows(engine, case_id: int) -> tuple[list[Attachment], list[CaseEvent], list[Job]]:
    with session_scope(engine) as s:
        files = list(s.exec(select(Attachment).where(Attachment.case_id == case_id,
                                                     Attachment.kind == "survey_comment")).all())
        events = list(s.exec(select(CaseEvent).where(CaseEvent.case_id == case_id,
                                                     CaseEvent.action == "survey_comment")).all())
        jobs = list(s.exec(select(Job).where(Job.kind == survey_calls.COMMENT_JOB)).all())
        return files, events, jobs


@pytest.mark.parametrize("call_end_seen_by", ["status_callback", "check_job"])
async def test_sigkill_mid_comment_keeps_the_whole_comment(engine, tmp_path, call_end_seen_by):
    clock.freeze(None)
    with session_scope(engine) as s:
        district = build_district(s)
    case_id = verified_case(engine, district)
    data = tmp_path / "data"
    with FakeTwilio(auth_token=TOKEN) as fake:
        server = ServeProcess(data, database_url(engine), env={
            "GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN, "GRIDLINE_TWILIO_ACCOUNT_SID": fake.account_sid,
            "GRIDLINE_TWILIO_API_URL": fake.base_url, "GRIDLINE_HOTLINE_NUMBER": fake.phone_number,
            "GRIDLINE_SPEECH_MODEL": str(tmp_path / "no-model")})
        with session_scope(engine) as s:
            survey_id = s.exec(select(Survey.id).where(Survey.case_id == case_id)).one()
        # The attempt is written down and placed as the survey job would (the call itself is
        # played here, at the pace of speech, so the server can be killed in the middle).
        plan = survey_calls.prepare_attempt(engine, survey_id, 1, any_time=True)
        answer_url = f"{server.url}/twilio/survey/{survey_id}/answer?t={plan.token}"
        status_url = f"{server.url}/twilio/survey/{survey_id}/status?t={plan.token}"
        placed = make_twilio_client(fake).calls.create(to=RESIDENT_E164, from_=fake.phone_number, url=answer_url,
                                                       status_callback=status_url)
        call_sid = placed.sid
        assert survey_calls.record_placed(engine, plan.survey_call_id, call_sid)
        await asyncio.to_thread(server.start)
        try:
            resident = Simulator(server.url, TOKEN, speed=1)
            script = CallScript(digits=["1", "1"], turns=[Turn(tone(20))])
            call = asyncio.create_task(resident.answer(answer_url, call_sid=call_sid, from_number=fake.phone_number,
                                                       to_number=RESIDENT_E164, script=script))

            def comment_wav():
                found = list((data / "recordings").rglob(f"{call_sid}-comment-1.wav"))
                return found[0] if found and found[0].stat().st_size > 44 + int(3.5 * 16000) else None

            wav = await wait_until(comment_wav, timeout=90, what="three seconds of the comment on disk")
            server.kill()
            with pytest.raises(Exception):  # noqa: B017 - the resident is cut off, however it shows
                await call
            fake.set_call_status(call_sid, "completed", duration=30)
            audio_s = (wav.stat().st_size - 44) / 16000
            header_s = wav_seconds(wav)
            assert audio_s - 1.0 <= header_s <= audio_s  # the crash left the header behind
            assert comment_rows(engine, case_id) == ([], [], [])

            await asyncio.to_thread(server.start)
            with session_scope(engine) as s:
                check = s.exec(select(Job).where(Job.kind == survey_calls.CHECK_JOB)).one()
            if call_end_seen_by == "status_callback":
                assert await fake.deliver_status_callback(call_sid) == 200
            else:  # the callback came while the server was down: lost. The check job is due.
                with session_scope(engine) as s:
                    s.execute(update(Job).where(Job.id == check.id).values(run_at=clock.utcnow()))
            files = await wait_until(lambda: comment_rows(engine, case_id)[0], timeout=60,
                                     what="the comment attached")
            # whichever came second changes nothing
            with session_scope(engine) as s:
                s.execute(update(Job).where(Job.id == check.id, Job.status == JobStatus.queued)
                          .values(run_at=clock.utcnow() - timedelta(seconds=1)))

            def check_done():
                with session_scope(engine) as s:
                    return s.get(Job, check.id).status == JobStatus.done

            await wait_until(check_done, timeout=60, what="the check job done")
        finally:
            await asyncio.to_thread(server.close)
    files, events, jobs = comment_rows(engine, case_id)
    (att,), (event,), (job,) = files, events, jobs
    assert resolve(att.path, data) == wav
    body = wav.read_bytes()
    assert att.size == len(body) and att.sha256 == hashlib.sha256(body).hexdigest()
    assert wav_seconds(wav) == pytest.approx(audio_s)  # the header is true again: nothing lost to players
    assert event.actor == "resident:phone" and event.data["call_sid"] == call_sid
    assert job.payload["path"] == att.path and job.status == JobStatus.queued  # no model here: it waits
    with session_scope(engine) as s:
        survey = s.get(Survey, survey_id)
        assert survey.attempts == 1 and survey.solved and survey.satisfied
        assert len(s.exec(select(CaseEvent).where(CaseEvent.case_id == case_id,
                                                  CaseEvent.action == "survey_call")).all()) == 1
    assert "WAV header repaired" in server.output
    print(f"SIGKILL mid-comment ({call_end_seen_by}): {audio_s:.2f} s on disk, header said {header_s:.2f} s, "
          f"kept {wav_seconds(wav):.2f} s")
