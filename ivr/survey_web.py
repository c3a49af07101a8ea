"""Webhooks of the follow-up call (回访) and of the progress SMS, and the wiring of their jobs.

Thin, like ``ivr/web.py``: each handler reads and checks the signed form and the
attempt's token, runs one database step of ``ivr.survey_calls`` and answers with TwiML
from ``ivr.survey_twiml``. The spoken comment goes through the hotline's Media Streams
socket and segments (``Hotline.registry``): on disk as it arrives, recognised live when a
slot is free, afterwards by a job otherwise. Routes (POST):

    /twilio/survey/{id}/answer     the callee picked up (Url of calls.create): introduction, Q1
    /twilio/survey/{id}/key        a key, or the keypad's quiet, after a question (q=solved|satisfied;
                                   seg=the answer turn whose words then answer it)
    /twilio/survey/{id}/operator   the <Dial> to the operator ended
    /twilio/survey/{id}/comment    the comment turn ended (# / silence / hang-up)
    /twilio/survey/{id}/status     the call's status callback
    /twilio/sms                    an SMS to the hotline number (退订/TD opts out)

Every survey URL carries the attempt's token (``t``); a token of another survey, or used
by another call than the one it placed, is refused (403), as is a bad signature.

Answers by voice: with a speech model, each question opens an answer turn on the socket
(``answer-<question>-<n>``) whose live recogniser is built with the question's phrase list
(Vosk grammar mode, ``StreamRegistry.grammars``); when the keypad's wait ends with no key,
the turn's words are matched to an answer (``ivr.survey_answers``). No model, a model
without the phrases' words, or ``[answers] listen = false``: keys only, as before.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from twilio.twiml.messaging_response import MessagingResponse

from core import actions
from core.actions.survey import SURVEY_PHONE_JOB
from core.followup import sms
from core.platform import logcontext
from core.platform.db import session_scope
from ivr import survey_calls
from ivr.calls import TRANSCRIBE_JOB
from ivr.config import survey_scales
from ivr.signature import is_valid
from ivr.sms import ProgressSms, TextSms
from ivr.survey_answers import SurveyAnswers
from ivr.survey_calls import CHECK_JOB, COMMENT_JOB, Refused, Spoken, Step
from ivr.survey_jobs import SurveyJobs
from ivr.survey_twiml import Intro, SurveyFlowConfig, SurveyTwiml
from ivr.twilio_api import TwilioApi, missing_credentials
from ivr.web import BadForm, read_form, twiml

log = logging.getLogger(__name__)

SURVEYS = web.AppKey("gridline_surveys", object)
SURVEY_LANE = "survey_calls"  # paced to the calls per second: never holds up notifications

Handler = Callable[["SurveyLine", web.Request, MultiDictProxy, int, str, str], Awaitable[str]]


async def signed_form(request: web.Request, settings: Any) -> MultiDictProxy | web.Response:
    """The webhook's form when it is well formed and signed by Twilio, else the refusal."""
    try:
        form = await read_form(request)
    except BadForm as bad:
        log.warning("refused request to %s: %s", request.path, bad.reason)
        return web.Response(status=bad.status, text=bad.reason)
    if not is_valid(request, form, settings.twilio_auth_token, settings.public_url):
        log.warning("rejected unsigned or forged request to %s", request.path)
        return web.Response(status=403, text="invalid X-Twilio-Signature")
    return form


def survey_webhook(fn: Handler):
    """Form, signature, CallSid, survey id and token; a refused token is a 403, a failure
    an apology and a hang-up, never a 500."""

    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.Response:
        line: SurveyLine = request.app[SURVEYS]
        form = await signed_form(request, line.settings)
        if isinstance(form, web.Response):
            return form
        call_sid = form.get("CallSid", "")
        if not call_sid or len(call_sid) > 64:
            return web.Response(status=400, text="CallSid missing or malformed")
        logcontext.bind_call(call_sid)
        survey_id = int(request.match_info["survey"])
        token = request.query.get("t", "")
        try:
            return twiml(await fn(line, request, form, survey_id, token, call_sid))
        except Refused as refused:
            log.warning("refused %s for call %s: %s", request.path, call_sid, refused)
            return web.Response(status=403, text="not this survey's call")
        except Exception:
            log.exception("%s failed for call %s", request.path, call_sid)
            return twiml(line.twiml.goodbye("error"))

    return handler


class SurveyLine:
    def __init__(self, services: Any, hotline: Any, config: SurveyFlowConfig):
        self.services = services
        self.settings = services.settings
        self.engine = services.engine
        self.hotline = hotline
        self.config = config
        self.twiml = SurveyTwiml(config, self.settings.public_url)
        self.twiml.end_of_speech = hotline.flow.end_of_speech  # on with the hotline's (credentials, rules)
        self.answers = SurveyAnswers.of(config["answers"], survey_scales())
        self._listening: bool | None = None  # known after the first call asks

    async def listening(self) -> bool:
        """Whether answers are heard by voice in this process: a recogniser, the rules allow
        it, and the model has the words of each question's phrases (asked once)."""
        if self._listening is None:
            pool = self.hotline.registry.pool
            ok = bool(self.config["answers"]["listen"]) and pool is not None
            for question in self.order if ok else ():
                phrases = self.answers.phrases(question)
                if not await pool.accepts_phrases(phrases):
                    log.warning("survey answers by voice off: the speech model has none of the %s phrases", question)
                    ok = False
                    break
                self.hotline.registry.grammars[answer_prefix(question)] = tuple(phrases)
            self._listening = ok
        return self._listening

    async def db(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await self.hotline.db(fn, *args, **kw)

    @property
    def order(self) -> list[str]:
        return list(self.config["questions"]["order"])

    def render(self, survey_id: int, token: str, call_sid: str, step: Step) -> str:
        if step.kind == "question":
            return self.twiml.question(survey_id, token, step.question, notice=step.notice,
                                       operator=bool(self.settings.operator_number), segment=step.segment,
                                       stream_token=step.stream_token, call_sid=call_sid, stop=step.stop,
                                       retry=step.tries > 0)
        if step.kind == "comment":
            return self.twiml.comment(survey_id, token, segment=step.segment, stream_token=step.stream_token,
                                      call_sid=call_sid, stop=step.stop)
        if step.kind == "operator":
            return self.twiml.dial_operator(survey_id, token, self.settings.operator_number, step.question,
                                            stop=step.stop)
        return self.twiml.goodbye(step.goodbye, stop=step.stop or None)

    # -- the call -------------------------------------------------------------------------

    @survey_webhook
    async def answer(self, request, form, survey_id, token, call_sid) -> str:
        view = await self.db(survey_calls.answered, self.engine, survey_id, token, call_sid,
                             to_number=form.get("To"), answered_by=form.get("AnsweredBy"),
                             tz=self.settings.timezone, listen=await self.listening())
        if view is None:
            log.info("survey %s: call %s answered by %s; no message left", survey_id, call_sid,
                     form.get("AnsweredBy"))
            return self.twiml.hangup()
        if not view.pending:
            return self.twiml.goodbye("over")
        state = view.state
        if state.step in self.order:
            intro = Intro(view.intro_date, view.category, view.community) if not state.answers else None
            return self.twiml.question(survey_id, token, state.step, intro=intro,
                                       operator=bool(self.settings.operator_number), segment=view.answer_segment,
                                       stream_token=view.stream_token or "", call_sid=call_sid,
                                       retry=state.tries > 0)
        return self.render(survey_id, token, call_sid, survey_calls.current_step(state, view.stream_token))

    @survey_webhook
    async def key(self, request, form, survey_id, token, call_sid) -> str:
        question = request.query.get("q", "")
        if question not in self.order:
            return self.twiml.goodbye("error")
        keys = self.config["keys"]
        digits = form.get("Digits") or ""
        segment = request.query.get("seg", "")
        spoken = None
        if segment.startswith(answer_prefix(question)):
            spoken = await self.spoken_answer(call_sid, question, segment, keyed=bool(digits))
        operator_open = bool(self.settings.operator_number) and await self.hotline.operator_open()
        step = await self.db(survey_calls.keypress, self.engine, survey_id, token, call_sid, question,
                             digits, order=self.order, tries=int(self.config["questions"]["tries"]),
                             keys={"wrong_person": str(keys["wrong_person"]), "operator": str(keys["operator"])},
                             operator_open=operator_open, spoken=spoken)
        return self.render(survey_id, token, call_sid, step)

    async def spoken_answer(self, call_sid: str, question: str, segment: str, *, keyed: bool) -> Spoken:
        """The question's answer turn ended (the keypad's wait, or a key): its recording,
        and when no key was pressed the answer its words name. The turn's socket may be on
        another instance (``Hotline.collect`` waits for its handover)."""
        if keyed:  # the key answers: the turn only ends (here, or by the next TwiML's <Stop>)
            self.hotline.registry.request_end(call_sid, segment, "webhook")
            return Spoken(segment=segment)
        wait_s = float(self.config["comment"]["wait_s"])
        got = await self.hotline.collect(call_sid, segment, "petition", "webhook", open_wait=wait_s,
                                         done_wait=lambda live: wait_s if live else 0.0)
        recording = got.recording if got is not None else None
        text = recording.text.strip() if recording is not None and recording.final else ""
        answer = self.answers.match(question, text) if text else None
        log.info("call %s %s: heard %r → %s", call_sid, segment, text, answer or "no answer")
        return Spoken(segment=segment, text=text, answer=answer, recording=recording)

    @survey_webhook
    async def operator(self, request, form, survey_id, token, call_sid) -> str:
        question = request.query.get("q", "")
        if question not in self.order:
            question = self.order[0]
        step = await self.db(survey_calls.operator_ended, self.engine, survey_id, token, call_sid, question,
                             form.get("DialCallStatus") or "")
        return self.render(survey_id, token, call_sid, step)

    @survey_webhook
    async def comment(self, request, form, survey_id, token, call_sid) -> str:
        segment = request.query.get("seg", "")
        await self.db(survey_calls.check_token, self.engine, survey_id, token, call_sid)
        await self.take_comment(survey_id, token, call_sid, segment,
                                "hangup" if form.get("Digits") == "hangup" else "webhook")
        if form.get("Digits") == "hangup":
            return self.twiml.empty()
        return self.twiml.goodbye("thanks", stop=segment)

    async def take_comment(self, survey_id: int, token: str | None, call_sid: str, segment: str, why: str) -> None:
        """The comment's recording once its audio is in (with its words if recognised within
        the wait), kept with the survey; words still to come get a job."""
        wait_s = float(self.config["comment"]["wait_s"])
        got = None
        if segment:  # its socket here or on another instance (ivr.handover)
            got = await self.hotline.collect(call_sid, segment, "petition", why, open_wait=wait_s,
                                             done_wait=lambda live: wait_s if live else 0.5)
        recording = got.recording if got is not None else None
        if recording is None:  # no stream was taken for it anywhere: what is on disk is the comment
            recording = await self.db(survey_calls.comment_from_disk, self.engine, call_sid, self.settings.data_dir,
                                      float(self.hotline.config["stream"]["speech_rms"]))
        kept = await self.db(survey_calls.take_comment, self.engine, survey_id, token, call_sid, recording,
                             min_speech_s=float(self.config["comment"]["min_speech_s"]),
                             data_dir=self.settings.data_dir, store=self.services.media,
                             spool=self.services.spool)
        if kept and recording is not None and not recording.final:
            for runner in self.hotline.speech_runners:
                runner.wake()

    async def call_over(self, survey_id: int, call_sid: str) -> None:
        """The call ended (its status callback, or ``survey_call_check`` reading it at Twilio,
        whichever comes first): a comment begun and not taken is kept now."""
        pending = await self.db(survey_calls.comment_pending, self.engine, call_sid)
        if pending is not None:  # hung up while commenting: keep what was said
            await self.take_comment(survey_id, None, call_sid, pending[1], "hangup")

    @survey_webhook
    async def status(self, request, form, survey_id, token, call_sid) -> str:
        status = (form.get("CallStatus") or "")[:24]
        follows = await self.db(survey_calls.call_status, self.engine, survey_id, token, call_sid, status,
                                form.get("AnsweredBy"))
        if follows:
            log.info("survey %s: call %s %s → %s", survey_id, call_sid, status, follows)
        if status in survey_calls.TERMINAL:
            await self.call_over(survey_id, call_sid)
            self.hotline.registry.forget_call(call_sid)
            self.services.jobs.wake()
        return self.twiml.empty()

    # -- SMS --------------------------------------------------------------------------------

    async def sms_in(self, request: web.Request) -> web.Response:
        """An SMS to the hotline number: 退订 / TD stops the progress SMS to that number."""
        form = await signed_form(request, self.settings)
        if isinstance(form, web.Response):
            return form
        phone, body = form.get("From") or "", form.get("Body") or ""
        reply = MessagingResponse()
        if phone and sms.is_opt_out(body):
            await self.db(_opt_out, self.engine, phone, body.strip()[:16])
            log.info("SMS opt-out from %s", phone[:-4] + "****" if len(phone) > 4 else phone)
            reply.message(self.hotline.flow.prompts["sms"]["opted_out"])
        return web.Response(text=str(reply), content_type="application/xml", charset="utf-8")


def answer_prefix(question: str) -> str:
    """The segment names of a question's answer turns begin so (``ivr.survey_calls``)."""
    return f"answer-{question}-"


def _opt_out(engine, phone: str, word: str) -> None:  # noqa: ANN001
    with session_scope(engine) as session:
        resident = actions.resident_for_phone(session, phone, actor="resident:sms")
        actions.sms_opt_out(session, resident, actor="resident:sms", word=word)


def setup(app: web.Application, services: Any, hotline: Any) -> SurveyLine:
    """Mount the follow-up call and SMS webhooks and register their jobs.
    ``services.extras["survey_flow"]`` may hold a SurveyFlowConfig and ``["twilio_api"]`` a
    stand-in for ``TwilioApi`` (tests, ``gridline simulate-survey``)."""
    config = services.extras.get("survey_flow") or SurveyFlowConfig.load()
    line = SurveyLine(services, hotline, config)
    app[SURVEYS] = line
    for step, fn in (("answer", SurveyLine.answer), ("key", SurveyLine.key), ("operator", SurveyLine.operator),
                     ("comment", SurveyLine.comment), ("status", SurveyLine.status)):
        app.router.add_post(r"/twilio/survey/{survey:\d{1,12}}/" + step, fn)
    app.router.add_post("/twilio/sms", line.sms_in)
    register_jobs(services, hotline, line.twiml, call_over=line.call_over)
    return line


def register_jobs(services: Any, hotline: Any, survey_twiml: SurveyTwiml,
                  call_over: Callable[[int, str], Awaitable[None]] | None = None) -> SurveyJobs | None:
    """The survey calls on a lane of their own; the SMS with the other notifications; the
    recognition of comments with the hotline's speech runners. Without Twilio credentials
    the calls and SMS are paused (their jobs wait queued, the log says why once)."""

    settings, jobs = services.settings, services.jobs
    api = services.extras.get("twilio_api")
    why = missing_credentials(settings)
    survey_jobs = None
    if api is not None or why is None:
        api = api or TwilioApi.from_settings(settings)
        survey_jobs = SurveyJobs(services.engine, api, from_number=settings.hotline_number, twiml=survey_twiml,
                                 db=hotline.db, call_over=call_over)
        jobs.register(SURVEY_PHONE_JOB, survey_jobs.survey_phone, lane=SURVEY_LANE)
        jobs.register(CHECK_JOB, survey_jobs.check_call, lane=SURVEY_LANE)
    else:
        for kind in (SURVEY_PHONE_JOB, CHECK_JOB):
            jobs.pause(kind, f"{why}; `gridline simulate-survey` plays the due calls locally")
    why_sms = missing_credentials(settings, sms=True)
    if api is not None or why_sms is None:
        progress = ProgressSms(services.engine, api or TwilioApi.from_settings(settings), settings=settings,
                               prompts=hotline.flow.prompts, db=hotline.db)
        jobs.register(sms.SMS_JOB, progress.handle)
        services.extras.setdefault("send_sms", TextSms(progress.api, settings).send)
    else:
        jobs.pause(sms.SMS_JOB, why_sms)
    for kind in (TRANSCRIBE_JOB, COMMENT_JOB):
        if hotline.speech_runners:
            jobs.handled_elsewhere(kind, "the hotline's speech runner")
        else:
            jobs.pause(kind, "no speech model in this process; a `gridline jobs --speech` with one takes them")
    services.extras.setdefault("survey_jobs", survey_jobs)
    return survey_jobs
