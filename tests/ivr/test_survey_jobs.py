"""The follow-up call's jobs: calling hours across a night and a public holiday (frozen
clock), refused tokens and signatures, a call placed by a process that died before
recording it, two job processes sharing 1,000 due surveys, a job process killed with
SIGKILL between ``calls.create`` and its commit, do-not-call, no credentials."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import date, timedelta

import aiohttp
import pytest
from sqlalchemy import update
from sqlmodel import func, select

from core import actions
from core.cases.models import Case, CaseStatus, Channel
from core.deadlines.models import CalendarDay
from core.followup.models import Survey
from core.people.models import Resident
from core.platform import clock, jobs
from core.platform.db import session_scope
from core.platform.models import Job, JobStatus
from core.platform.runner import JobRunner
from ivr import survey_calls
from ivr.models import SurveyCall
from tests.conftest import _empty_all
from tests.support.fake_twilio import Callee, FakeTwilio, make_twilio_client
from tests.support.jobs_process import JobsProcess
from tests.support.serve import ServeProcess, database_url
from tests.support.twilio_signing import signed_headers

from .conftest import KNOWN_PHONE, TOKEN, wait_until
from .survey_rig import RESIDENT_E164, local


def survey_job(rig, survey_id: int) -> Job:
    with session_scope(rig.engine) as s:
        return next(j for j in s.exec(select(Job).where(Job.kind == "survey_phone")).all()
                    if j.payload["survey_id"] == survey_id)


# ---------------------------------------------------------------- calling hours


async def test_due_at_night_waits_for_the_morning(srig, fake):
    clock.freeze(local(2026, 11, 17, 21, 30))  # after calling hours
    case = srig.verified_case()
    survey = srig.survey(case.id)
    job = survey_job(srig, survey.id)
    assert job.run_at == local(2026, 11, 18, 9, 0)  # queued for the next calling hours
    # A job due at night anyway (rules changed, a clock ahead) is put back, not failed.
    with session_scope(srig.engine) as s:
        s.execute(update(Job).where(Job.id == job.id).values(run_at=clock.utcnow()))
    assert await srig.run_calls() == 1
    with session_scope(srig.engine) as s:
        again = s.get(Job, job.id)
    assert (again.status, again.run_at, again.attempts) == (JobStatus.queued, local(2026, 11, 18, 9, 0), 0)
    assert fake.created_calls == []
    clock.freeze(local(2026, 11, 18, 8, 59))
    assert await srig.run_calls() == 0
    fake.callee(RESIDENT_E164, Callee("human", digits=["1", "1"]))
    clock.freeze(local(2026, 11, 18, 9, 0))
    await srig.run_calls()
    assert (await srig.call_over(survey.id, 1)).outcome == "answered"


async def test_a_public_holiday_is_skipped(srig, fake):
    with session_scope(srig.engine) as s:
        for day in range(1, 8):
            s.add(CalendarDay(day=date(2026, 10, day), is_working=False, note="国庆节"))
    clock.freeze(local(2026, 9, 30, 19, 0))  # the eve of National Day, inside calling hours
    case = srig.verified_case()
    survey = srig.survey(case.id)
    fake.callee(RESIDENT_E164, Callee("no-answer"), Callee("human", digits=["1", "2"]))
    await srig.run_calls()
    assert (await srig.call_over(survey.id, 1)).outcome == "no_answer"
    retry = next(j for j in srig.queued() if j.payload.get("attempt") == 2)
    # two hours later is 21:00, the next days are holidays: the first day after them, at 09:00
    assert retry.run_at == local(2026, 10, 8, 9, 0)
    clock.freeze(local(2026, 10, 3, 10, 0))
    await srig.run_calls()
    assert len(fake.created_calls) == 1
    clock.freeze(local(2026, 10, 8, 9, 0))
    await srig.run_calls()
    assert (await srig.call_over(survey.id, 2)).outcome == "answered"
    assert srig.case(case.id).close_reason == "survey:basically"


# ---------------------------------------------------------------- tokens and signatures


async def test_forged_signatures_and_another_surveys_token_are_refused(srig, fake):
    first = srig.verified_case()
    second = srig.verified_case(phone="+8613911110000", resident=False)
    await srig.run_calls()  # two calls placed; nobody answers (no callee: queued at Twilio)
    (row_a,) = srig.attempts(srig.survey(first.id).id)
    (row_b,) = srig.attempts(srig.survey(second.id).id)
    survey_b = srig.survey(second.id).id

    async def post(survey_id: int, token: str, call_sid: str, *, sign: str | None = TOKEN) -> int:
        url = f"{srig.url}/twilio/survey/{survey_id}/answer?t={token}"
        params = {"CallSid": call_sid, "AccountSid": fake.account_sid, "CallStatus": "in-progress",
                  "To": RESIDENT_E164, "From": fake.phone_number, "AnsweredBy": "human"}
        headers = signed_headers(sign, url, params) if sign else {"Content-Type": "application/x-www-form-urlencoded"}
        async with aiohttp.ClientSession() as http, http.post(url, data=params, headers=headers) as resp:
            return resp.status

    assert await post(survey_b, row_a.token, row_a.call_sid) == 403  # A's token on B's URL
    assert await post(survey_b, row_b.token, row_a.call_sid) == 403  # B's token, A's call
    assert await post(survey_b, row_b.token, row_b.call_sid, sign="not-the-auth-token") == 403
    assert await post(survey_b, row_b.token, row_b.call_sid, sign=None) == 403
    assert await post(survey_b, "guessed", row_b.call_sid) == 403
    assert await post(survey_b, row_b.token, row_b.call_sid) == 200  # the real thing
    assert srig.survey(second.id).attempts == 1 and srig.survey(first.id).attempts == 1


# ---------------------------------------------------------------- exactly once


@pytest.mark.parametrize("twilio_side", ["queued", "dialled"])
async def test_a_call_placed_by_a_process_that_died_is_found_and_not_placed_again(srig, fake, twilio_side):
    """A process wrote the attempt down and created the call, then died before recording it
    (the call exists at Twilio, nothing of it reached us). The next process finds it."""
    case = srig.verified_case()
    survey = srig.survey(case.id)
    plan = survey_calls.prepare_attempt(srig.engine, survey.id, 1)
    assert plan.action == "call"
    twiml = srig.services.extras["survey_jobs"].twiml
    if twilio_side == "dialled":  # Twilio dialled it: its initiated callback went nowhere (we were down)
        fake.callee(RESIDENT_E164, Callee("no-answer", ring_s=3600))
    client = make_twilio_client(fake)
    dead = "http://127.0.0.1:9"  # nothing listens: the callbacks are lost
    created = await asyncio.to_thread(
        client.calls.create, to=RESIDENT_E164, from_=fake.phone_number,
        url=twiml.url(survey.id, "answer", t=plan.token).replace(srig.url, dead),
        status_callback=twiml.url(survey.id, "status", t=plan.token).replace(srig.url, dead),
        status_callback_event=["initiated", "answered", "completed"])
    if twilio_side == "dialled":
        await wait_until(lambda: fake.call_events.get(created.sid), what="the initiated callback")
    assert await srig.run_calls() == 1
    assert list(fake.calls) == [created.sid]  # not called again
    (row,) = srig.attempts(survey.id)
    assert row.call_sid == created.sid and row.placed_at is not None
    assert srig.survey(case.id).attempts == 1
    (attempt,) = srig.events(case.id, "survey_attempt")
    assert attempt.data["call_sid"] == created.sid


async def test_a_second_survey_to_the_same_number_is_told_apart_by_its_token(srig, fake):
    first = srig.verified_case()
    second = srig.verified_case()  # the same resident, another case
    fake.callee(RESIDENT_E164, Callee("no-answer", ring_s=3600), Callee("no-answer", ring_s=3600))
    plan = survey_calls.prepare_attempt(srig.engine, srig.survey(first.id).id, 1)
    twiml = srig.services.extras["survey_jobs"].twiml
    client = make_twilio_client(fake)
    dead = "http://127.0.0.1:9"
    other = await asyncio.to_thread(  # the first survey's call, by a process that died
        client.calls.create, to=RESIDENT_E164, from_=fake.phone_number,
        url=twiml.url(srig.survey(first.id).id, "answer", t=plan.token).replace(srig.url, dead),
        status_callback=twiml.url(srig.survey(first.id).id, "status", t=plan.token).replace(srig.url, dead),
        status_callback_event=["initiated", "completed"])
    await wait_until(lambda: fake.call_events.get(other.sid), what="the initiated callback")
    with session_scope(srig.engine) as s:  # only the second survey's job is due now
        s.execute(update(Job).where(Job.kind == "survey_phone").values(run_at=clock.utcnow() + timedelta(hours=1)))
        job = next(j for j in s.exec(select(Job)).all() if j.payload.get("survey_id") == srig.survey(second.id).id)
        s.execute(update(Job).where(Job.id == job.id).values(run_at=clock.utcnow()))
    await srig.run_calls()
    assert len(fake.calls_to(RESIDENT_E164)) == 2  # the second survey got a call of its own
    (row,) = srig.attempts(srig.survey(second.id).id)
    assert row.call_sid != other.sid


@pytest.fixture
def pg(pg_engine):
    _empty_all(pg_engine)
    return pg_engine


def due_surveys(engine, count: int) -> list[str]:
    """``count`` verified hotline cases with a phone follow-up due now, each resident a
    different mobile; the rows written directly (what a year of verifying would leave)."""
    phones = [f"1391234{i:04d}" for i in range(count)]
    now = clock.utcnow()
    with session_scope(engine) as s:
        residents = [Resident(phone=p) for p in phones]
        s.add_all(residents)
        s.flush()
        cases = [Case(number=f"T{i:08d}", channel=Channel.hotline, status=CaseStatus.verified, contact_phone=p,
                      resident_id=r.id, description="", created_at=now, updated_at=now, verified_at=now)
                 for i, (p, r) in enumerate(zip(phones, residents, strict=True))]
        s.add_all(cases)
        s.flush()
        surveys = [Survey(case_id=c.id, channel="phone") for c in cases]
        s.add_all(surveys)
        s.flush()
        for sv, c in zip(surveys, cases, strict=True):
            s.add(Job(kind="survey_phone", payload={"survey_id": sv.id, "case": c.number, "attempt": 1},
                      dedupe_key=f"survey:{sv.id}:1", run_at=now))
    return ["+86" + p for p in phones]


def jobs_env(engine, fake: FakeTwilio, tmp_path, public_url: str = "http://127.0.0.1:9") -> dict[str, str]:
    rules = tmp_path / "rules.toml"
    # Every hour a calling hour (the job processes run on the real clock); no pacing to wait for.
    rules.write_text('[survey.phone]\ncalling_hours = ["00:00", "23:59"]\non_holidays = true\n'
                     'calls_per_second = 10000.0\n')
    return {"GRIDLINE_DATABASE_URL": database_url(engine), "GRIDLINE_TWILIO_ACCOUNT_SID": fake.account_sid,
            "GRIDLINE_TWILIO_AUTH_TOKEN": fake.auth_token, "GRIDLINE_TWILIO_API_URL": fake.base_url,
            "GRIDLINE_HOTLINE_NUMBER": fake.phone_number, "GRIDLINE_PUBLIC_URL": public_url,
            "GRIDLINE_RULES": str(rules)}


def count_done(engine, kind: str = "survey_phone") -> int:
    with session_scope(engine) as s:
        return s.exec(select(func.count()).select_from(Job).where(Job.kind == kind, Job.status == JobStatus.done)).one()


async def test_two_job_processes_call_each_of_1000_residents_exactly_once(pg, tmp_path):
    numbers = due_surveys(pg, 1000)
    with FakeTwilio() as fake:
        env = jobs_env(pg, fake, tmp_path)
        takers = [JobsProcess(tmp_path / f"p{i}", env, "--surveys").start() for i in range(2)]
        try:
            await wait_until(lambda: count_done(pg) == 1000, timeout=300, interval=0.2,
                             what="1000 survey jobs done")
        finally:
            for p in takers:
                await asyncio.to_thread(p.stop)
        created = fake.created_calls
    assert len(created) == 1000 and sorted(c["To"] for c in created) == sorted(numbers)
    with session_scope(pg) as s:
        rows = s.exec(select(SurveyCall)).all()
        assert len(rows) == 1000 and all(r.placed_at and r.call_sid for r in rows)
        assert set(s.exec(select(Survey.attempts)).all()) == {1}
    # both processes took a share (claimed with SKIP LOCKED), neither did it all
    shares = [p.output.count(" placed") for p in takers]
    assert sum(shares) == 1000, shares


@pytest.mark.parametrize("twilio_side", ["answered", "queued"])
async def test_a_job_process_killed_after_calls_create_does_not_call_twice(engine, tmp_path, twilio_side):
    """`gridline jobs --surveys` is killed with SIGKILL while Twilio has created its call
    and not yet answered the request (so nothing of the call is recorded by the process).
    "answered": the resident answers, the call's requests reach the server, which records
    the attempt. "queued": nothing of the call reached us; the next process, after the
    job's lease, finds the call at Twilio. Either way: one call."""
    with session_scope(engine) as s:
        from .conftest import build_district

        district = build_district(s)
    with FakeTwilio(auth_token=TOKEN) as fake:
        server = None
        public = "http://127.0.0.1:9"
        if twilio_side == "answered":
            # The web server: checks signatures with the account's token, places no calls itself.
            server = ServeProcess(tmp_path / "srv", database_url(engine),
                                  env={"GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN, "GRIDLINE_SPEECH_MODEL": str(tmp_path / "none")})
            await asyncio.to_thread(server.start)
            public = server.url
            fake.callee(RESIDENT_E164, Callee("human", digits=["1", "1"]))
        env = jobs_env(engine, fake, tmp_path, public)
        clock.freeze(None)
        with session_scope(engine) as s:
            resident = actions.find_resident_by_phone(s, KNOWN_PHONE)
            case, _ = actions.submit_petition(s, actions.Petition(
                channel=Channel.hotline, description="灯坏了", contact_phone=KNOWN_PHONE, resident_id=resident.id,
                category_code="light"), actor="test")
            actions.dispatch(s, case, actor="test", grid_id=district["micro"])
            actions.accept(s, case, actor="test")
            actions.report_done(s, case, actor="test", note="修好了")
            actions.verify(s, case, actor="test")
            case_id = case.id
            s.execute(update(Job).where(Job.kind == "survey_phone").values(run_at=clock.utcnow()))
        hold = fake.hold_creates()
        first = JobsProcess(tmp_path / "p1", env, "--surveys").start()
        try:
            await wait_until(lambda: fake.calls_to(RESIDENT_E164), timeout=60, what="the call created at Twilio")
            if twilio_side == "answered":  # the call goes on while the process is gone
                await wait_until(lambda: fake.played, timeout=60, what="the call played")
        finally:
            first.kill()
        hold.set()
        with session_scope(engine) as s:
            job = s.exec(select(Job).where(Job.kind == "survey_phone")).one()
            assert job.status == JobStatus.running  # killed holding it
            (row,) = s.exec(select(SurveyCall)).all()
            assert row.intent_at is not None
            # the job's lease runs out (5 minutes; a stale lease is what the next claim looks for)
            s.execute(update(Job).where(Job.id == job.id).values(locked_until=clock.utcnow() - timedelta(seconds=1)))
        second = JobsProcess(tmp_path / "p2", env, "--surveys").start()
        try:
            await wait_until(lambda: count_done(engine) == 1, timeout=60, what="the job done by the second process")
        finally:
            await asyncio.to_thread(second.stop)
            if server is not None:
                await asyncio.to_thread(server.close)
        (call,) = fake.calls_to(RESIDENT_E164)
    with session_scope(engine) as s:
        (row,) = s.exec(select(SurveyCall)).all()
        survey = s.exec(select(Survey).where(Survey.case_id == case_id)).one()
        assert row.call_sid == call["sid"] and survey.attempts == 1
        if twilio_side == "answered":
            assert s.get(Case, case_id).status == CaseStatus.closed
            assert "placed already" in second.output
        else:
            assert "not called again" in second.output


# ---------------------------------------------------------------- who is called


async def test_do_not_call_goes_to_the_manual_list(srig, fake):
    with session_scope(srig.engine) as s:
        resident = actions.find_resident_by_phone(s, KNOWN_PHONE)
        actions.set_do_not_call(s, resident, True, actor="test")
    case = srig.verified_case()
    survey = srig.survey(case.id)
    assert survey.channel == "manual" and srig.queued() == []  # never phoned
    assert fake.created_calls == []


async def test_marked_do_not_call_after_the_survey_started(srig, fake):
    case = srig.verified_case()
    with session_scope(srig.engine) as s:
        actions.set_do_not_call(s, actions.find_resident_by_phone(s, KNOWN_PHONE), True, actor="operator:li")
    await srig.run_calls()
    assert fake.created_calls == []
    survey = srig.survey(case.id)
    assert survey.channel == "manual" and survey.attempts == 0


async def test_no_twilio_credentials_leaves_the_jobs_queued_and_says_why_once(engine, tmp_path, fake_speech, caplog):
    from aiohttp import web

    from core.platform.settings import Settings
    from gridline.app import SERVICES, Services
    from ivr.survey_web import setup as setup_surveys
    from ivr.web import setup

    with session_scope(engine) as s:
        from .conftest import build_district

        build_district(s)
    settings = Settings(data_dir=tmp_path, twilio_auth_token=TOKEN)  # no account, no number
    services = Services(settings=settings, engine=engine, jobs=JobRunner(engine, poll_seconds=0.05), speech=fake_speech)
    app = web.Application()
    app[SERVICES] = services
    setup_surveys(app, services, setup(app, services))
    assert "survey_phone" in services.jobs.paused and "GRIDLINE_TWILIO_ACCOUNT_SID" in services.jobs.paused["survey_phone"]
    with session_scope(engine) as s:
        jobs.enqueue(s, "survey_phone", {"survey_id": 1, "attempt": 1})
    with caplog.at_level(logging.INFO):
        services.jobs.start()
        await wait_until(lambda: services.jobs.rounds >= 10)  # ten polls: time to take it, had it been taken
        await services.jobs.stop()
    said = [r.getMessage() for r in caplog.records if "survey_phone" in r.getMessage()]
    assert len(said) == 2, said  # once, at start-up: not taken here and why; how many wait
    assert said[0].startswith("not taken by this process, left queued for one that can: survey_call_check, "
                              "survey_phone (no Twilio credentials")
    assert "1 survey_phone job(s) wait queued: no Twilio credentials" in said[1]
    with session_scope(engine) as s:
        assert s.exec(select(Job).where(Job.kind == "survey_phone")).one().status == JobStatus.queued
    health = await services.jobs.health()
    assert health["paused"]["survey_phone"]["waiting"] == 1


def test_unique_phone_numbers():
    assert len({f"1391234{i:04d}" for i in range(1000)}) == 1000 and uuid.uuid4()
