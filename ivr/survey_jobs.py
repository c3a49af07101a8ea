"""The follow-up call's jobs: ``survey_phone`` places one attempt through Twilio's REST
API, ``survey_call_check`` reads a call's status when no callback came, and
``transcribe_survey_comment`` recognises a comment the call could not wait for.

``survey_phone``, one attempt (``ivr.survey_calls`` holds the database side):

1. ``prepare_attempt``: survey still pending and due; inside calling hours (else
   ``RetryLater`` until they open: waiting is not failing); do-not-call and numbers checked;
   the attempt written down with its random token, and a moment reserved under the calls
   per second (one row for every process).
2. ``calls.create`` with the answer URL and status callback carrying the token, the ring
   timeout and answering-machine detection.
3. ``record_placed``: the CallSid stored with the ``survey_attempt`` event.

A process that died between 2 and 3 left the token written down and its job running; after
the job's lease the next process finds the attempt and asks Twilio for calls to the number
since then before placing one (``TwilioApi.find_calls``, matched by the token in the URLs
Twilio requested). The call's own requests record the attempt too when they come first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from twilio.base.exceptions import TwilioRestException

from core.actions.survey import SURVEY_PHONE_JOB
from core.followup import survey_policy
from core.followup.sms import SMS_JOB
from core.platform.models import Job
from core.platform.runner import JobRunner, RetryLater
from ivr import survey_calls
from ivr.config import FlowConfig, load_prompts
from ivr.database import run_db
from ivr.sms import ProgressSms
from ivr.survey_calls import CHECK_JOB
from ivr.survey_twiml import SurveyFlowConfig, SurveyTwiml
from ivr.twilio_api import PlaceCall, TwilioApi

log = logging.getLogger(__name__)

__all__ = ["SURVEY_PHONE_JOB", "CommentTranscriber", "SurveyJobs"]

Db = Callable[..., Awaitable[Any]]


class SurveyJobs:
    """Handlers of ``survey_phone`` and ``survey_call_check``; ``api`` is ``TwilioApi`` (or
    the local simulator's stand-in, ``ivr.survey_sim``)."""

    def __init__(self, engine: Engine, api: Any, *, from_number: str, twiml: SurveyTwiml, db: Db,
                 any_time: bool = False, call_over: Callable[[int, str], Awaitable[None]] | None = None):
        self.engine = engine
        # What follows the end of a call (survey id, CallSid): its comment kept, as the status
        # callback does; the callback may have been lost while the server was down.
        self.call_over = call_over
        self.any_time = any_time  # calling hours not kept: `gridline simulate-survey --any-time`
        self.api = api
        self.from_number = from_number
        self.twiml = twiml
        self.db = db
        self.placed = 0

    async def survey_phone(self, job: Job) -> None:
        payload = job.payload or {}
        survey_id, attempt = int(payload["survey_id"]), int(payload.get("attempt") or 1)
        plan = await self.db(survey_calls.prepare_attempt, self.engine, survey_id, attempt, any_time=self.any_time)
        if plan.action == "done":
            log.info("survey %s attempt %s: nothing to call (%s)", survey_id, attempt, plan.why)
            return
        if plan.action == "wait":
            raise RetryLater(plan.wait or timedelta(minutes=5), plan.why)
        rules = survey_policy.phone_rules()
        if plan.action == "reconcile":
            if await self._adopt(plan):
                return
            plan.slot = await self.db(survey_calls.reserve_slot_in, self.engine, rules.calls_per_second)
        delay = (plan.slot or 0) - time.time()
        if delay > 0:  # the calls per second, shared by every process
            await asyncio.sleep(delay)
        call = PlaceCall(to=plan.to, from_=self.from_number,
                         url=self.twiml.url(survey_id, "answer", t=plan.token),
                         status_callback=self.twiml.url(survey_id, "status", t=plan.token),
                         timeout_s=rules.ring_timeout_s, machine_detection=rules.machine_detection)
        try:
            sid = await asyncio.to_thread(self.api.place_call, call)
        except TwilioRestException as exc:
            if 400 <= exc.status < 500 and exc.status not in (401, 403, 429):
                follows = await self.db(survey_calls.placing_failed, self.engine, plan.survey_call_id,
                                        f"{exc.code}: {exc.msg}")
                log.warning("survey %s attempt %s: Twilio refused the call (%s %s); %s", survey_id, attempt,
                            exc.code, exc.msg, follows)
                return
            raise  # the job is tried again later: the attempt written down is looked for first
        await self.db(survey_calls.record_placed, self.engine, plan.survey_call_id, sid)
        self.placed += 1
        log.info("survey %s attempt %s: call %s placed", survey_id, attempt, sid)

    async def _adopt(self, plan: survey_calls.AttemptPlan) -> bool:
        """A process wrote this attempt down and died: was its call placed? Then it is the
        attempt's call, and nobody is called twice."""
        found = await asyncio.to_thread(self.api.find_calls, to=plan.to, from_=self.from_number,
                                        since=plan.intent_at, token=plan.token)
        ours = found.ours
        if ours is None and len(found.unattributed) == 1:
            # Still queued at Twilio, so it made no request that names its survey; the only
            # call to this number since the attempt was written down is taken as its call.
            ours = found.unattributed[0]
        if ours is None:
            if found.unattributed:
                log.warning("survey %s attempt %s: %d queued call(s) to the number cannot be told apart; "
                            "placing the attempt's own", plan.survey_id, plan.attempt, len(found.unattributed))
            return False
        log.warning("survey %s attempt %s: call %s was placed by a process that stopped before recording it; "
                    "recorded now, not called again", plan.survey_id, plan.attempt, ours.sid)
        await self.db(survey_calls.record_placed, self.engine, plan.survey_call_id, ours.sid)
        if ours.ended:
            await self.db(survey_calls.call_status, self.engine, plan.survey_id, plan.token, ours.sid, ours.status,
                          ours.answered_by)
        return True

    async def check_call(self, job: Job) -> None:
        """No final status callback came for a placed call: ask Twilio."""
        row = await self.db(survey_calls.survey_call_by_id, self.engine, int((job.payload or {})["survey_call_id"]))
        if row is None or row.ended_at is not None or not row.call_sid:
            return
        info = await asyncio.to_thread(self.api.call_info, row.call_sid)
        if info is not None and not info.ended:
            raise RetryLater(timedelta(minutes=10), f"call {row.call_sid} still {info.status}")
        status = info.status if info is not None else "failed"
        follows = await self.db(survey_calls.call_status, self.engine, row.survey_id, row.token, row.call_sid, status,
                                info.answered_by if info is not None else None)
        log.info("survey %s attempt %s: call %s read as %s at Twilio (%s)", row.survey_id, row.attempt, row.call_sid,
                 status, follows)
        if self.call_over is not None and status in survey_calls.TERMINAL:
            await self.call_over(row.survey_id, row.call_sid)


class CommentTranscriber:
    """``transcribe_survey_comment``: a comment recorded while recognition was busy (or
    absent) is recognised through the speech pool, like a petition (``Transcriptions``)."""

    def __init__(self, transcriptions: Any):
        self.transcriptions = transcriptions

    async def handle(self, job: Job) -> None:
        p = job.payload or {}
        t = self.transcriptions
        survey_id = int(p["survey_id"])
        if not await t.db(survey_calls.comment_still_pending, t.engine, survey_id):
            return
        heard = await t.recognise(p.get("call_sid"), {"segment": p.get("segment") or "", "path": p["path"]})
        await t.db(survey_calls.comment_words, t.engine, survey_id, p.get("call_sid") or "", p.get("segment") or "",
                   heard)


def comment_from_disk_taker(engine: Engine, data_dir: Any, db: Db) -> Callable[[int, str], Awaitable[None]]:
    """``call_over`` for a process without the Media Streams socket (``gridline jobs
    --surveys``): a comment left pending is taken from its WAV in the data directory."""

    speech_rms = float(FlowConfig.load()["stream"]["speech_rms"])
    min_speech_s = float(SurveyFlowConfig.load()["comment"]["min_speech_s"])

    async def call_over(survey_id: int, call_sid: str) -> None:
        if await db(survey_calls.comment_pending, engine, call_sid) is None:
            return
        recording = await db(survey_calls.comment_from_disk, engine, call_sid, data_dir, speech_rms)
        await db(survey_calls.take_comment, engine, survey_id, None, call_sid, recording,
                 min_speech_s=min_speech_s, data_dir=data_dir)

    return call_over


async def run_survey_jobs(engine: Engine, settings: Any, stop: asyncio.Event, *, poll_seconds: float = 1.0,
                          batch: int = 10) -> SurveyJobs:
    """``gridline jobs --surveys``: place the follow-up calls and send the progress SMS
    until ``stop`` is set. Any number of these may run against one PostgreSQL (jobs are
    claimed with SKIP LOCKED; the calls per second are shared through the database)."""

    api = TwilioApi.from_settings(settings)
    config = SurveyFlowConfig.load()
    handlers = SurveyJobs(engine, api, from_number=settings.hotline_number,
                          twiml=SurveyTwiml(config, settings.public_url), db=run_db)
    progress = ProgressSms(engine, api, settings=settings, prompts=load_prompts(config.language), db=run_db)
    handlers.call_over = comment_from_disk_taker(engine, settings.data_dir, run_db)
    runner = JobRunner(engine, poll_seconds=poll_seconds, batch=batch)
    runner.register(SURVEY_PHONE_JOB, handlers.survey_phone, lane="survey_calls")
    runner.register(CHECK_JOB, handlers.check_call, lane="survey_calls")
    runner.register(SMS_JOB, progress.handle)
    log.info("survey jobs %s: taking %s", runner.name, ", ".join(runner.handlers))
    runner.start()
    try:
        await stop.wait()
    finally:
        await runner.stop()
    return handlers
