"""Twilio voice webhooks and the Media Streams socket of the hotline.

Thin: each handler reads and checks the signed form, loads the call, asks the core
(intake, case lookup, gazetteer) and answers with TwiML from ``ivr.flow``. The call's
state changes only by named transitions (``ivr.state.Call``, diagram in ``ivr/flow.md``).
Every database call goes through ``Hotline.db``; the gazetteer through
``Hotline.gazetteer()``. Routes (all POST except the socket):

    /twilio/voice              incoming call → short greeting ending in an open question
    /twilio/open/done          what the caller said first (or a key) → petition / status / operator / again
    /twilio/menu               menu digit after a status was read (1 petition, 2 status, 0 operator)
    /twilio/petition/done      <Record> ended (# / silence / hang-up) → read back, or file
    /twilio/petition/confirm   对 or 1 confirm, 不对 or 2 say again, 保密 or 3 confidential
    /twilio/address/done       unknown caller's address → gazetteer → read back
    /twilio/address/confirm    1 confirm, 2 say again → file the case (or ask the building)
    /twilio/address/building   only the estate was sure: building number keyed → file the case
    /twilio/address/choice     two or more close places: a key 1..n or the words said → that place, else coarse
    /twilio/case-status        case number said or keyed → status read out
    /twilio/operator/after     <Dial> to the operator ended
    /twilio/status             call status callback (hang-ups, duration)
    /twilio/stream             Media Streams websocket (GET, token in the start message)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.base.exceptions import TwilioRestException

from core.cases.intents import Heard, IntentMatcher
from core.deadlines.calendar import WorkingCalendar, parse_hours
from core.places.indexes import indexes_for
from core.platform import logcontext, uploads
from core.platform.clock import utcnow
from core.platform.retry import transient
from core.platform.rules import load_rules
from core.platform.storage import resolve
from ivr import calls, handover
from ivr.address import HeardAddress, file_phrase_pass, hear_address
from ivr.config import FlowConfig, parse_service_hours
from ivr.database import run_db
from ivr.flow import Flow
from ivr.handover import Handover
from ivr.recovery import sweep
from ivr.signature import SIMULATOR_TOKEN, is_valid
from ivr.spool import KEEP_HELD_JOB, CallBudget, KeepHeld, Spool, forget_handover_copies
from ivr.state import TERMINAL_STATUSES, Call, CallState, Recording, Stage, TurnKind
from ivr.stream import WAIT_PREFIX, StreamRegistry, speech_pool
from ivr.transcription import Transcriptions, speech_runners
from ivr.twilio_api import LiveCalls

log = logging.getLogger(__name__)

HOTLINE = web.AppKey("gridline_hotline", object)
Handler = Callable[["Hotline", web.Request, MultiDictProxy, str], Awaitable[str]]
T = TypeVar("T")

# Short answers asked for in one call at most: 再说一遍 / 慢一点 at a read-back asks it again, not forever.
MAX_ANSWERS = 12
# Twilio's webhook forms are a few hundred bytes; a bound keeps anything else out.
WEBHOOK_MAX_BYTES = 64 * 1024
FORM = "application/x-www-form-urlencoded"
CALL_NOT_IN_PROGRESS = 21220  # Twilio's error when a call that has ended is redirected
CLAIMED = web.RequestKey("gridline_turn_claimed", str)  # the turn this request ended (Call.claim_end)
# The stream of a petition's 请稍候 this request ended too: its TwiML stops it, and is its answer.
WAIT_CLAIMED = web.RequestKey("gridline_wait_claimed", str)
# While ``Hotline.once`` runs a step: the turn the step claimed and the TwiML already stored as
# its answer (``Hotline.apply_saying`` stores it with the step's last transition).
ENDING: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("gridline_turn_ending",
                                                                              default=None)
# The calls this webhook read or wrote, as it left them (``Hotline.apply`` writes a change to one
# with a single conditional UPDATE when nobody else wrote it since). Empty outside a webhook.
KNOWN_CALLS: contextvars.ContextVar[dict[str, Call] | None] = contextvars.ContextVar("gridline_known_calls",
                                                                                   default=None)


def twiml(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/xml", charset="utf-8")


def wait_round(request: web.Request, key: str = "round") -> int:
    """How many times this turn's end has already said 请稍候 (``?round=``, or ``?held=``
    for a database's hold; bad or missing: 0)."""
    try:
        return max(0, int(request.query.get(key, "0") or 0))
    except ValueError:
        return 0


# Steps of a call that can be taken again after a hold (not the call's start, nor Twilio's
# status callbacks, which are no TwiML the caller hears).
HOLDS = frozenset({"/twilio/open/done", "/twilio/menu", "/twilio/petition/done", "/twilio/petition/confirm",
                   "/twilio/petition/more", "/twilio/address/done", "/twilio/address/confirm",
                   "/twilio/address/building", "/twilio/address/choice", "/twilio/case-status",
                   "/twilio/operator/after"})
# What a step reads from Twilio's form that a <Redirect> would not send again: carried in the
# hold's URL (signed, as every URL of ours) and put back into the form of the step taken again.
HELD_FIELDS = {"Digits": "held_digits", "DialCallStatus": "held_dial"}


def held_form(request: web.Request, form: MultiDictProxy) -> MultiDictProxy:
    """The form of a step taken again after a hold: what the first try had, from the URL."""
    if "held" not in request.query:
        return form
    carried = MultiDict(form)
    for field, key in HELD_FIELDS.items():
        if key in request.query and field not in carried:
            carried[field] = request.query[key][:64]
    return MultiDictProxy(carried)


def hold_url_query(request: web.Request, form: MultiDictProxy, held: int) -> dict[str, str]:
    query = {k: v for k, v in request.query.items() if k not in ("held", *HELD_FIELDS.values())}
    query.update({key: form[field] for field, key in HELD_FIELDS.items() if form.get(field)})
    query["held"] = str(held)
    return query


def answered_before(request: web.Request, call: Call, segment: str) -> bool:
    """Another end of the turn ``segment`` came first. A step taken again after a hold
    (``?held=``) finds its own first try's claim, never answered: that one is still its own."""
    reply = call.state.replies.get(segment)
    return reply is not None and not (reply == "" and "held" in request.query)


class TurnEndedElsewhere(Exception):
    """Another request ended this turn first (our end-of-speech redirect and Twilio's own
    <Record> end, or a #, for the same turn): answer with what that one answered."""

    def __init__(self, segment: str):
        super().__init__(segment)
        self.segment = segment


class BadForm(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_form(request: web.Request, limit: int = WEBHOOK_MAX_BYTES) -> MultiDictProxy:
    """The webhook's form, read by us rather than by aiohttp: bounded, URL-encoded UTF-8
    only (what Twilio sends), and any other body is a clear 4xx before the signature
    check, never a 500."""
    if request.content_length is not None and request.content_length > limit:
        raise BadForm(413, f"request body over {limit} bytes")
    if request.content_type != FORM:
        raise BadForm(400, f"expected {FORM}, got {request.content_type}")
    if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise BadForm(400, f"expected UTF-8, got {request.charset}")
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            raise BadForm(413, f"request body over {limit} bytes")
    try:
        pairs = parse_qsl(bytes(body).decode("utf-8"), keep_blank_values=True, errors="strict",
                          max_num_fields=500)
    except UnicodeDecodeError:
        raise BadForm(400, "request body is not UTF-8") from None
    except ValueError as exc:
        raise BadForm(400, f"malformed form: {exc}") from None
    return MultiDictProxy(MultiDict(pairs))


def webhook(fn: Handler):
    """Form, signature check, CallSid, TwiML response; failures say sorry instead of a 500."""

    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.Response:
        hotline: Hotline = request.app[HOTLINE]
        try:
            form = await read_form(request)
        except BadForm as bad:
            log.warning("refused request to %s: %s", request.path, bad.reason)
            return web.Response(status=bad.status, text=bad.reason)
        settings = hotline.settings
        if not is_valid(request, form, settings.twilio_auth_token, settings.public_url):
            log.warning("rejected unsigned or forged request to %s", request.path)
            return web.Response(status=403, text="invalid X-Twilio-Signature")
        call_sid = form.get("CallSid", "")
        if not call_sid or len(call_sid) > 64:
            return web.Response(status=400, text="CallSid missing or malformed")
        logcontext.bind_call(call_sid)  # every line of this webhook, the access log's too
        started = time.perf_counter()
        known = KNOWN_CALLS.set({})
        form = held_form(request, form)
        try:
            return twiml(await fn(hotline, request, form, call_sid))
        except calls.UnknownCall:
            log.warning("%s for unknown call %s: said goodbye", request.path, call_sid)
            return twiml(hotline.flow.goodbye("unknown_call"))
        except Exception as exc:
            held = wait_round(request, "held")
            if transient(exc) and request.path in HOLDS and held < int(hotline.config["hold"]["rounds"]):
                # The database did not answer within the step's retries (ivr/database.py): a
                # restart or a failover. The caller holds and the step is taken again; the
                # turn's words are kept meanwhile (its stream, its WAV).
                log.warning("%s for call %s: the database did not answer (%s: %s); the caller holds (%d of %s)",
                            request.path, call_sid, type(exc).__name__, str(exc).splitlines()[0], held + 1,
                            hotline.config["hold"]["rounds"])
                return twiml(hotline.flow.hold(request.path, **hold_url_query(request, form, held + 1)))
            log.exception("%s failed for call %s", request.path, call_sid)
            return twiml(hotline.flow.error())
        finally:
            KNOWN_CALLS.reset(known)
            hotline.latencies.append(time.perf_counter() - started)

    return handler


@dataclass
class Collected:
    """A turn as far as it got: its recording (``None``: its audio has not closed yet),
    whether its recognition is over, whether its stream is still being let in here."""

    recording: Recording | None
    done: bool = False
    connecting: bool = False


class Hotline:
    def __init__(self, services, config: FlowConfig):
        self.services = services
        self.settings = services.settings
        self.engine = services.engine
        self.config = config
        self.flow = Flow(config, self.settings.public_url)
        workers = max(1, self.settings.speech_workers)
        self.pool = speech_pool(services.speech, workers)
        self._own_pool = self.pool is not services.speech
        self.live_capacity = (self.settings.speech_live_streams or 2 * workers) if self.pool is not None else 0
        self.spool = Spool(store=services.media, data_dir=self.settings.data_dir, engine=self.engine,
                           db=self.db, budget=CallBudget(self.settings.spool_memory_s, self.settings.spool_database_s),
                           part_s=self.settings.spool_part_s, name=services.spool)
        self.registry = StreamRegistry(self.engine, self.pool, self.settings.data_dir, config["stream"],
                                       live_capacity=self.live_capacity, db=self.db, spool=self.spool)
        self.registry.on_orphan = self.orphaned
        # Any instance serves any webhook: what this process's sockets hear is written down for
        # the others, and turns heard on another's socket are waited for (ivr.handover).
        self.instance = services.instance
        self.handover = Handover(self.engine, self.db, self.registry, self.instance.id)
        self.transcriptions = None
        self.speech_runners = []
        if self.pool is not None:
            self.transcriptions = Transcriptions(self.engine, self.pool, data_dir=self.settings.data_dir,
                                                 db=self.db, slots=self.registry.slots, registry=self.registry,
                                                 flow=config, store=services.media)
            self.speech_runners = speech_runners(self.engine, self.transcriptions, 1)
        self.operator_hours = _operator_hours(self.settings)
        # Our own end-of-speech detection ends the caller's turns (rules.toml
        # [hotline.end_of_speech]) when this instance can redirect a call through Twilio's REST
        # API; without the account's credentials the flow is Twilio's quiet only, as it was.
        self.live_calls: LiveCalls | None = None  # made at start-up, in the event loop
        eos = load_rules()["hotline"]["end_of_speech"]
        if eos["enabled"] and self.settings.twilio_account_sid and self.settings.twilio_auth_token:
            self.flow.end_of_speech = self.registry.end_of_speech = dict(eos)
            self.registry.on_speech_end = self.end_turn_now
            if eos.get("barge_in"):
                self.registry.on_barge_in = self.barge_in
        self.intents = IntentMatcher.load()  # core/data/intents.toml (GRIDLINE_INTENTS over it)
        self.latencies: list[float] = []
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._operator_calendar: tuple[object, WorkingCalendar] | None = None
        self._sweeper: asyncio.Task | None = None
        self._sweeps_stop = asyncio.Event()
        self._uploads: set[asyncio.Task] = set()  # recordings uploaded after their case was filed
        self._ends_later: set[asyncio.Task] = set()  # calls' ends that met the database away

    # -- plumbing -----------------------------------------------------------------------

    @property
    def petition_cfg(self) -> dict:
        return self.config["petition"]

    async def db(self, fn: Callable[..., T], *args, **kw) -> T:
        """Every database call of the hotline: in the app's database threads (a full pool is
        DatabaseBusy), retried over dropped connections."""
        return await run_db(fn, *args, runner=self.services.db.run, **kw)

    def lock(self, call_sid: str) -> asyncio.Lock:
        lock = self._locks.get(call_sid)
        if lock is None:
            lock = self._locks[call_sid] = asyncio.Lock()
        return lock

    @staticmethod
    def remember(call: Call | None) -> Call | None:
        """The call as this webhook now knows it (read, or written by it)."""
        known = KNOWN_CALLS.get()
        if known is not None and call is not None:
            known[call.call_sid] = call
        return call

    @staticmethod
    def known(call_sid: str) -> Call | None:
        known = KNOWN_CALLS.get()
        return known.get(call_sid) if known is not None else None

    @staticmethod
    def forget(call_sid: str) -> None:
        """Written elsewhere (filing): the next change reads the row again."""
        known = KNOWN_CALLS.get()
        if known is not None:
            known.pop(call_sid, None)

    async def apply(self, call_sid: str, transition: Callable[..., T], *args: Any) -> tuple[Call, T]:
        """Run a named transition of the call (``Call.begin_turn``, ...) and store it: from
        what this webhook knows of the call when it read it already (``calls.apply``'s
        ``known``), else from the locked row."""
        async with self.lock(call_sid):
            call, result = await self.db(calls.apply, self.engine, call_sid, transition, *args,
                                         holder=self.instance.id, known=self.known(call_sid))
        self.remember(call)
        return call, result

    async def load_call(self, call_sid: str) -> Call:
        call = await self.db(calls.load_call, self.engine, call_sid)
        if call is None:  # a webhook for a call whose first webhook we never saw
            row, _ = await self.db(calls.open_call, self.engine, call_sid, from_number=None, to_number=None,
                                   status="in-progress", holder=self.instance.id)
            call = Call.of(row)
        return self.remember(call)

    async def gazetteer(self):
        snapshot = await self.db(indexes_for, self.engine)
        return snapshot.gazetteer_at(self.config["address"]["min_confidence"])

    async def operator_open(self, now: datetime | None = None) -> bool:
        """In the operator's hours (rules.toml ``[hotline] operator_hours``) on a working day
        of the working calendar (holidays off, make-up working days on)."""
        if not self.operator_hours:
            return False
        tz = self.settings.timezone
        exceptions = await self.db(calls.operator_calendar_exceptions, self.engine, tz)
        if self._operator_calendar is None or self._operator_calendar[0] is not exceptions:
            self._operator_calendar = (exceptions, WorkingCalendar(exceptions, hours=self.operator_hours, tz=tz))
        return self._operator_calendar[1].is_working_time(now or utcnow())

    # -- what the caller said -------------------------------------------------------------

    async def collect(self, call_sid: str, name: str, kind: TurnKind, reason: str, *, open_wait: float,
                      done_wait: Callable[[bool], float], drain: bool = True) -> Collected | None:
        """Stop a turn taking audio and wait for it, wherever its socket is: in this process
        (its segment), or on another instance (the handover row). ``open_wait`` for its stream
        to open, then the drain, then ``done_wait(live)`` for its words. ``None``: no stream was
        taken for it anywhere."""
        reg = self.registry
        seg = reg.get(call_sid, name)
        if seg is not None:
            seg.request_end(reason, *((reg.drain_s, reg.max_drain_s) if drain else (0.0, 0.0)))
        elif (call_sid, name) in reg.connecting:  # its token is being checked here (the database is slow)
            reg.request_end(call_sid, name, reason)
            seg = await reg.wait_segment(call_sid, name, open_wait)
            if seg is None and (call_sid, name) in reg.connecting:
                return Collected(None, connecting=True)
        if seg is None:
            row = await self.handover.take(call_sid, name, reason if drain else "hangup", open_wait=open_wait,
                                           audio_wait=reg.max_drain_s + 1.0, done_wait=done_wait)
            seg = reg.get(call_sid, name)  # it may have opened here meanwhile
            if seg is None:
                if row is None:
                    return None
                if not row.audio_closed:
                    return Collected(None)
                return Collected(handover.recording_of(row, kind), done=row.done)
        await seg.wait_audio(reg.max_drain_s + 1.0)
        done = await seg.wait_done(done_wait(seg.live))
        if not done:
            seg.defer()
        return Collected(seg.result(), done=done)

    async def heard(self, call_sid: str, name: str, kind: TurnKind, round_: int) -> Recording | None:
        """The turn's recording once its audio is in, with its words when recognised in
        time; ``None`` = still recognising, say 请稍候 and come back. After the last round
        the caller waits no more: the words will come from the transcribe job."""
        wait_s = float(self.petition_cfg["wait_s"])
        last_round = round_ >= int(self.petition_cfg["wait_rounds"])
        got = await self.collect(call_sid, name, kind, "webhook", open_wait=wait_s,
                                 done_wait=lambda live: wait_s if live else 1.0)
        if got is not None and got.connecting and not last_round:
            return None  # its token check is being retried (the database is slow): come back
        if got is not None and got.recording is not None:
            if got.done:
                return got.recording
            if not last_round:
                return None
            log.info("call %s %s: recognition not finished within the caller's wait; filed now, "
                     "transcribed afterwards", call_sid, name)
            return got.recording
        call = await self.load_call(call_sid)  # another round of this webhook took it already
        planned = call.state.segments.get(name)
        if planned is not None and planned.ended:
            return planned
        if not last_round:
            return None
        # The instance holding the socket never handed the turn over (it died with it): what
        # it sent while the caller spoke is in the store's parts.
        rebuilt = await self.db(calls.turn_from_parts, self.engine, call_sid, name, self.services.media,
                                float(self.config["stream"]["speech_rms"]), self.services.spool)
        if rebuilt is not None:
            log.warning("call %s %s: no handover of this turn arrived; assembled from its parts (%.2f s)",
                        call_sid, name, rebuilt.duration)
            return rebuilt
        log.warning("call %s %s: no audio stream arrived for this turn", call_sid, name)
        return (planned or Recording(kind=kind)).model_copy(update={"ended_by": "webhook", "deferred": True})

    async def hung_up(self, call_sid: str) -> calls.Filed | None:
        """The caller is gone: keep what they said (a flagged case if they said enough)."""
        call = self.known(call_sid) or await self.load_call(call_sid)  # as this webhook just left it
        if call.settled:
            return None
        deadline = time.monotonic() + self.registry.token_retry_s
        for name, rec in call.state.recordings():  # streams still being let in: wait for them
            while not rec.ended and (call_sid, name) in self.registry.connecting and time.monotonic() < deadline:
                await self.registry.wait_segment(call_sid, name, 1.0)
        segments = self.registry.of_call(call_sid)
        for seg in segments:
            seg.request_end("hangup")
        budget = float(self.petition_cfg["wait_s"]) * (int(self.petition_cfg["wait_rounds"]) + 1)
        heard: dict[str, Recording] = {}
        for seg in segments:
            await seg.wait_audio(self.registry.max_drain_s + 1.0)
            if not await seg.wait_done(budget if seg.live else 1.0):
                seg.defer()
            heard[seg.name] = seg.result()
        # Turns whose socket is (or was) on another instance: asked to end there, and waited for.
        here = {seg.name for seg in segments}
        for name, rec in call.state.recordings():
            if rec.ended or name in here:
                continue
            got = await self.collect(call_sid, name, rec.kind, "hangup", open_wait=1.0, drain=False,
                                     done_wait=lambda live: budget if live else 1.0)
            if got is not None and got.recording is not None:
                heard[name] = got.recording
        if heard:
            call, _ = await self.apply(call_sid, Call.turns_heard, heard)
        if not call.state.petition.segment:
            await self.apply(call_sid, Call.end)
            return None
        return await self.file(call_sid, hung_up=True)

    async def barge_in(self, seg) -> None:
        """The caller went on speaking over their petition's read-back (a socket of this
        instance heard it): stop the read-back now, moving the call to the petition's
        continuation (``/twilio/petition/more``). A failed redirect changes nothing: the
        answer turn ends on Twilio's quiet and its words are taken as the continuation then."""
        await self.end_turn_now(seg, seg.barge_path, why="went on over the read-back")

    async def end_turn_now(self, seg, path: str | None = None, why: str = "went quiet") -> None:
        """The caller spoke and went quiet on a socket of this instance: move the call to the
        turn's webhook now with a live redirect, rather than after Twilio's <Record> quiet.
        Any failure changes nothing: Twilio's own quiet (or #) ends the turn as before."""
        if seg.ended_by is not None or self.live_calls is None:
            return  # the turn already ended (#, Twilio's quiet, a hang-up)
        url = self.settings.public_url.rstrip("/") + (path or seg.end_path)
        timeout = float(self.flow.end_of_speech["redirect_timeout_s"])
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.live_calls.redirect(seg.call_sid, url), timeout + 1.0)
        except Exception as exc:
            self.registry.stats["turn_end_failures"] += 1
            # 21220: the call is over (the caller hung up as they finished): nothing to warn of
            ended = isinstance(exc, TwilioRestException) and exc.code == CALL_NOT_IN_PROGRESS
            log.log(logging.INFO if ended else logging.WARNING, "call %s %s: the caller %s, but the "
                    "redirect failed (%s); Twilio's own quiet ends the turn", seg.call_sid, seg.name, why,
                    str(exc)[:200] or type(exc).__name__)
            return
        self.registry.stats["turns_ended_by_us"] += 1
        log.info("call %s %s: the caller %s; turn ended by redirect (%.0f ms)", seg.call_sid, seg.name, why,
                 1000 * (time.perf_counter() - started))

    async def once(self, request: web.Request, call_sid: str, step: Awaitable[str]) -> str:
        """Run the step that ends a turn; a second end of the same turn (the redirect and
        Twilio's own end racing) gets the first one's TwiML: nothing is heard, asked or filed
        twice."""
        ending: dict[str, str] = {}
        token = ENDING.set(ending)
        try:
            reply = await step
        except TurnEndedElsewhere as other:
            return await self.reply_of(call_sid, other.segment)
        finally:
            ENDING.reset(token)
        waiting = request.get(WAIT_CLAIMED)
        if waiting:  # the step's TwiML stops the wait's stream too (the turn's answer then replaced)
            reply = Flow.stopping(reply, waiting)
            await self.apply(call_sid, Call.replied, waiting, reply)
        claimed = request.get(CLAIMED)
        if claimed and ending.get("reply") != reply:  # not stored with the step's last change
            await self.apply(call_sid, Call.replied, claimed, reply, ending.get("reply"))
        return reply

    async def apply_saying(self, call_sid: str, say: Callable[[Call, Any], str], transition: Callable[..., Any],
                           *args: Any) -> str:
        """``apply(transition, *args)`` whose result the caller hears next: the TwiML
        ``say(call, result)``. In a step that ended a turn it is stored as that turn's answer
        (``Call.replied``) in the same write, so ``once`` has nothing left to write."""
        ending = ENDING.get()
        segment = ending.get("claimed") if ending is not None and "reply" not in ending else None

        def and_say(call: Call, *given: Any) -> str:
            twiml = say(call, transition(call, *given))
            if segment:
                call.replied(segment, twiml)
            return twiml

        _, twiml = await self.apply(call_sid, and_say, *args)
        if segment:
            ending["reply"] = twiml
        return twiml

    async def claim_end(self, request: web.Request, call_sid: str, segment: str,
                        heard: Recording | None = None) -> Call:
        """This request ends ``segment`` (keeping ``heard``, what the turn recorded, in the
        same write), or raises TurnEndedElsewhere when another did."""
        call, first = await self.apply(call_sid, Call.claim_end, segment, heard, "held" in request.query)
        if not first:
            raise TurnEndedElsewhere(segment)
        request[CLAIMED] = segment
        ending = ENDING.get()
        if ending is not None:
            ending["claimed"] = segment
        return call

    async def reply_of(self, call_sid: str, segment: str) -> str:
        """What the first end of ``segment`` answered (waiting while it is worked out, on
        this instance or another)."""
        wait_s = float(self.petition_cfg["wait_s"]) * (int(self.petition_cfg["wait_rounds"]) + 2)
        deadline = time.monotonic() + wait_s
        while True:
            call = await self.load_call(call_sid)
            reply = call.state.replies.get(segment)
            if reply:
                log.info("call %s %s: the turn was ended twice; the second end answered as the first", call_sid,
                         segment)
                return reply
            if reply is None:  # forgotten long since: the call's current step
                reply = next((r for r in reversed(call.state.replies.values()) if r), None)
                if reply:
                    return reply
            if reply is None or time.monotonic() > deadline:
                # Forgotten, or the first never finished (its instance died): the words are
                # kept; a hang-up or the recovery sweep files them.
                log.warning("call %s %s: ended twice and the first end's answer is not on record", call_sid,
                            segment)
                return self.flow.error()
            await asyncio.sleep(0.05)

    async def orphaned(self, call_sid: str, segment: str) -> None:
        """A petition stream ended without #/silence and nothing happened since."""
        call = await self.load_call(call_sid)
        state = call.state
        if not call.settled and state.stage in (Stage.petition, Stage.open) and state.petition.segment == segment:
            await self.hung_up(call_sid)

    # -- steps ----------------------------------------------------------------------------

    async def file(self, call_sid: str, *, hung_up: bool = False) -> calls.Filed:
        self.forget(call_sid)  # filing reads and writes the row itself, locked
        async with self.lock(call_sid):
            filed = await self.db(calls.file_case, self.engine, call_sid,
                                  min_speech_s=self.petition_cfg["min_speech_s"], hung_up=hung_up,
                                  data_dir=self.settings.data_dir,
                                  speech_rms=float(self.config["stream"]["speech_rms"]),
                                  store=self.services.media, spool=self.services.spool)
        self.remember(filed.call)
        for runner in self.speech_runners:  # a transcription may have been queued
            runner.wake()
        if filed.to_upload:  # the case is committed; the caller hears its number without waiting for the bucket
            self._upload_soon(filed.to_upload)
        return filed

    def _upload_soon(self, keys: tuple[str, ...]) -> None:
        services = self.services
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(
            uploads.upload_after_commit, self.engine, services.media, list(keys), services.spool),
            name=f"upload {keys[0]}")
        self._uploads.add(task)
        task.add_done_callback(self._uploads.discard)

    async def file_and_say(self, call_sid: str, *, stop: str | None = None, notice: str | None = None) -> str:
        filed = await self.file(call_sid)
        if filed.held and notice is None:  # the caller hears why it will not be dispatched at once
            notice = f"held_{filed.held}"
        flow = self.flow.slowed((filed.call or await self.load_call(call_sid)).state.slow)
        return flow.filed(filed.number, stop=stop, notice=notice) if filed.number else flow.goodbye("bye")

    async def start_recording(self, call_sid: str, kind: TurnKind, *, notice: str | None = None,
                              again: bool = False, stop: str | None = None) -> str:
        intro = ("petition_again" if again else "petition_intro") if kind == "petition" else "address_intro"

        def say(call: Call, begun: tuple[str, str | None]) -> str:
            segment, token = begun
            return self.flow.slowed(call.state.slow).record(kind=kind, segment=segment, token=token,
                                                            call_sid=call_sid, notice=notice, intro=intro, stop=stop)

        return await self.apply_saying(call_sid, say, Call.begin_turn, kind)

    async def after_petition(self, call: Call, stop: str | None = None) -> str:
        if call.state.caller.known:
            return await self.file_and_say(call.call_sid, stop=stop)
        return await self.start_recording(call.call_sid, "address", stop=stop)

    def greeting(self, state: CallState) -> list[str]:
        """The greeting, ending in the open question; the keys named at once only when no
        speech model is loaded (words cannot decide the path then)."""
        community = state.caller.community
        flow = self.flow
        said = [flow.text("open_greeting_known", community=community) if community else flow.text("open_greeting")]
        if self.pool is None:
            said.append(flow.text("open_keys"))
        return said

    async def ask_open(self, call_sid: str, sentences: list[str], *, stop: str | None = None,
                       answered: bool = False) -> str:
        """An open question: a petition recording begins before it is said. ``answered``: it
        is the greeting, the call's first prompt (``Call.answered``, once its TwiML is built)."""
        def say(call: Call, begun: tuple[str, str | None]) -> str:
            segment, token = begun
            greeting = self.flow.slowed(call.state.slow).open_question(segment=segment, token=token,
                                                                       call_sid=call_sid, sentences=sentences,
                                                                       stop=stop)
            if answered:
                call.answered()
            return greeting

        return await self.apply_saying(call_sid, say, Call.begin_open)

    async def ask_readback(self, call_sid: str, kind: TurnKind, *, stop: str | None = None,
                           notice: str | None = None, again: bool = False,
                           intent: tuple[str, str, bool] | None = None) -> str:
        """The read-back, answered by voice (对 / 不对 / 保密) or a key, on a stream of its own.
        ``again``: asked once more (its tries go on counting). ``intent``: what the open
        turn's words meant, stored in the same write (``Call.heard_intent``)."""
        def say(call: Call, begun: tuple[str, str | None]) -> str:
            (segment, token), state = begun, call.state
            if kind == "petition":
                rec = state.petition_heard()  # joined with what it continues, when the caller went on
                text = rec.text.strip() if rec is not None and rec.final else ""
            else:
                text = state.address.name or ""
            return self.flow.slowed(state.slow).readback_spoken(stop=stop, segment=segment, token=token,
                                                                call_sid=call_sid, text=text, kind=kind, notice=notice,
                                                                confidential=state.confidential)

        return await self.apply_saying(call_sid, say, Call.ask_readback, kind, again, intent)

    async def grammar_words(self, heard: Recording) -> str:
        """A short answer's WAV recognised again with the answers' phrase list (Vosk grammar
        mode: far surer on 对 / 不对 than free recognition); "" when there is no model, no
        WAV here, or it takes longer than ``[open] grammar_s``."""
        if self.pool is None or not heard.audio_path:
            return ""
        path = resolve(heard.audio_path, self.settings.data_dir)
        phrases = self.intents.phrase_list("answer")
        try:
            # here on disk, or already in the media store (a few kilobytes)
            audio = path if path.is_file() else await asyncio.to_thread(self.services.media.get_bytes,
                                                                        heard.audio_path)
            size = path.stat().st_size if isinstance(audio, Path) else len(audio or b"")
            if size <= 44 or not await self.pool.accepts_phrases(phrases):
                return ""
            transcript = await asyncio.wait_for(self.pool.transcribe_file(audio, phrases),
                                                float(self.config["open"]["grammar_s"]))
        except Exception as exc:  # busy, slow or refused: the free words stand
            log.info("answer grammar pass skipped for %s: %s", heard.audio_path, exc)
            return ""
        return transcript.text or ""

    async def hear_answer(self, heard: Recording) -> Heard:
        """What a short answer meant: the grammar pass's words first, else the free words."""
        meant = self.intents.hear(await self.grammar_words(heard), "answer")
        if not meant.intent and heard.final:
            meant = self.intents.hear(heard.text, "answer")
        return meant

    async def keyed(self, call_sid: str, action: str, *, stop: str | None = None) -> str:
        """A key pressed at the open question (1 petition, 2 status, 0 operator)."""
        if action == "status":
            return await self.ask_status(call_sid, None, stop=stop)
        if action == "operator":
            return await self.to_operator(call_sid, stop=stop)
        return await self.start_recording(call_sid, "petition", stop=stop)

    async def to_operator(self, call_sid: str, *, stop: str | None = None) -> str:
        number = self.settings.operator_number
        if number and await self.operator_open():
            call, _ = await self.apply(call_sid, Call.to_operator)
            return self.flow.slowed(call.state.slow).dial_operator(number, stop=stop)
        return await self.start_recording(call_sid, "petition", notice="operator_closed", stop=stop)

    async def ask_status(self, call_sid: str, number: str | None, *, stop: str | None = None,
                         by_phone: bool = True) -> str:
        """A status query: the number said with it; else the caller's one open case (their
        phone number finds it); else the number is asked for, said or keyed."""
        call, _ = await self.apply(call_sid, Call.ask_status)
        flow = self.flow.slowed(call.state.slow)
        info, notice = None, None
        if number:
            info = await self.db(calls.case_status, self.engine, number, self.settings.timezone,
                                 self.config.language)
            notice = None if info is not None else "status_not_found"
        elif by_phone:
            mine = await self.db(calls.caller_open_cases, self.engine, call.row.from_number,
                                 call.state.caller.resident_id, self.settings.timezone, self.config.language)
            info = mine[0] if len(mine) == 1 else None
        if info is not None:
            await self.apply(call_sid, Call.status_found, info.number)
            return flow.status_result(number=info.number, status=info.status, due=info.due, closed=info.closed,
                                      stop=stop)
        call, (segment, token) = await self.apply(call_sid, Call.begin_answer, "number")
        return flow.status_ask_spoken(segment=segment, token=token, call_sid=call_sid, notice=notice, digits=number,
                                      stop=stop)

    # -- handlers -------------------------------------------------------------------------

    @webhook
    async def voice(self, request, form, call_sid) -> str:
        arrived = utcnow()
        row, _ = await self.db(calls.open_call, self.engine, call_sid, from_number=form.get("From"),
                               to_number=form.get("To"), status=form.get("CallStatus"),
                               direction=form.get("Direction", "inbound"), holder=self.instance.id,
                               arrived_at=arrived)
        if row.case_id is not None:  # a retry after the case was filed
            return await self.file_and_say(call_sid)
        self.remember(Call.of(row))
        if self.pool is None:  # the greeting names the keys at once
            await self.apply(call_sid, Call.name_keys)
        # The service figures' "answered": the first prompt leaves now (core.reporting.hotline),
        # stored with the greeting's turn.
        return await self.ask_open(call_sid, self.greeting(CallState.load(row.state)), answered=True)

    @webhook
    async def open_done(self, request, form, call_sid) -> str:
        return await self.once(request, call_sid, self._open_done(request, form, call_sid))

    async def _open_done(self, request, form, call_sid) -> str:
        """The open question's turn ended: a key (pressed during the greeting or after it),
        silence, or words. Words decide the path (``core.cases.intents``); anything that is
        not clearly something else is the petition, and its recording is kept either way."""
        key = (form.get("Digits") or "").strip()[:1]
        reply, call, heard = await self._turn_done(request, form, call_sid, "petition", path="/twilio/open/done")
        if reply is not None:
            return reply
        state = call.state
        segment = state.petition.segment
        spoke = heard.speech_s >= float(self.petition_cfg["min_speech_s"])
        action = self.config["menu"]["digits"].get(key) if key else None
        if action is not None and not (action == "petition" and spoke):
            if not spoke:  # the key, not words, chose: this turn is no petition
                await self.apply(call_sid, Call.heard_intent, segment, "keyed")
            return await self.keyed(call_sid, action, stop=segment)
        words = heard.text.strip() if heard.final else ""
        if words:
            meant = self.intents.hear(words, "open")
            if heard.speech_s > float(self.config["open"]["intent_max_speech_s"]):
                meant = Heard("petition", meant.confidential)  # a long turn is a petition that mentions it
            return await self.open_path(call, segment, meant)
        if not heard.final and spoke:
            # The words are not in yet (no model, or it is busy): the recording is the
            # petition, filed now, as a keypad petition is.
            return await self.file_and_say(call_sid, stop=segment)
        if state.open_turns < int(self.config["open"]["turns"]) and (spoke or not state.keys_named):
            flow = self.flow
            if spoke:  # heard as speech, no words: once more
                said = [flow.text("petition_empty"), flow.text("open_again")]
            else:  # silence: one sentence names the keys, once in a call
                await self.apply(call_sid, Call.heard_intent, segment, "silence")
                await self.apply(call_sid, Call.name_keys)
                said = [flow.text("open_keys")]
            return await self.ask_open(call_sid, said, stop=segment)
        if any(r.speech_s >= float(self.petition_cfg["min_speech_s"]) and r.intent in (None, "petition")
               for _, r in state.recordings("petition")):
            call, _ = await self.apply(call_sid, Call.accept_unrecognised)
            return await self.after_petition(call, stop=segment)
        await self.apply(call_sid, Call.end, "no_petition")
        return self.flow.slowed(state.slow).goodbye("bye")

    async def open_path(self, call: Call, segment: str, meant: Heard) -> str:
        call_sid = call.call_sid
        intent = (segment, meant.intent, meant.confidential)
        if meant.is_petition:  # the intent stored with the read-back's question
            return await self.ask_readback(call_sid, "petition", stop=segment, intent=intent)
        await self.apply(call_sid, Call.heard_intent, *intent)
        if meant.intent == "status":
            return await self.ask_status(call_sid, meant.number, stop=segment)
        if meant.intent == "operator":
            return await self.to_operator(call_sid, stop=segment)
        if call.state.open_turns >= int(self.config["open"]["turns"]):
            # asked again and again: the classic prompt, with its beep, takes the petition
            return await self.start_recording(call_sid, "petition", stop=segment)
        if meant.intent == "slower":
            await self.apply(call_sid, Call.go_slow)
        if meant.intent == "confidential":
            said = [self.flow.text("open_confidential"), self.flow.text("open_again")]
        else:  # 再说一遍 / 慢一点: the greeting once more
            said = self.greeting(call.state)
        return await self.ask_open(call_sid, said, stop=segment)

    @webhook
    async def menu(self, request, form, call_sid) -> str:
        await self.load_call(call_sid)
        digits = (form.get("Digits") or "").strip()
        action = self.config["menu"]["digits"].get(digits[:1]) if digits else None
        if action is None:
            if request.query.get("after") == "status":
                return self.flow.goodbye("bye")
            _, tries = await self.apply(call_sid, Call.count_menu_try)
            if tries < self.config["menu"]["tries"]:
                return self.flow.menu(notice="menu_invalid" if digits else "menu_no_input")
            action = "petition"  # nobody chose: the most likely reason to call
        if action == "status":  # another case than the one just read: its number
            return await self.ask_status(call_sid, None, by_phone=request.query.get("after") != "status")
        if action == "operator":
            return await self.to_operator(call_sid)
        return await self.start_recording(call_sid, "petition")

    async def _turn_done(self, request, form, call_sid: str, kind: TurnKind,
                         path: str | None = None) -> tuple[str | None, Call | None, Recording | None]:
        """Shared by petition/address done: (TwiML to return now) or (the call with the
        turn's recording stored, the recording)."""
        name = request.query.get("seg", "")
        if form.get("Digits") == "hangup":  # <Record> reports the caller hanging up
            await self.hung_up(call_sid)
            return self.flow.empty(), None, None
        call = await self.load_call(call_sid)
        if answered_before(request, call, name):  # ended already (the redirect and Twilio's own end racing)
            raise TurnEndedElsewhere(name)
        if call.row.case_id is not None:
            return await self.file_and_say(call_sid), None, None
        if name not in call.state.segments or call.state.segments[name].kind != kind:
            log.warning("call %s: %s for unknown segment %r", call_sid, request.path, name)
            name = call.state.turn(kind).segment
        round_ = wait_round(request)
        waiting = request.query.get("wait") or None  # the stream the first 请稍候 opened, still running
        if waiting is not None and (not waiting.startswith(WAIT_PREFIX) or waiting not in call.state.segments):
            waiting = None
        heard = await self.heard(call_sid, name, kind, round_)
        if heard is None:
            listen = None
            if waiting is None and kind == "petition" and self.flow.barge_in:
                call, (waiting, token) = await self.apply(call_sid, Call.begin_answer, "wait")
                listen = (waiting, token, call_sid)
            return self.flow.wait(path or f"/twilio/{kind}/done", listen=listen, seg=name, round=round_ + 1,
                                  wait=waiting), None, None
        call = await self.claim_end(request, call_sid, name, heard)
        if waiting is not None and await self.claim_wait(request, call_sid, waiting):
            if await self.went_on_over_wait(call_sid, waiting):
                # The caller went on over 请稍候 and their barge-in redirect lost the race to these
                # words (or failed): the same way on, the wait's stream a part of the petition.
                return Flow.stopping(await self.go_on(call_sid, waiting), name), None, None
            call = self.known(call_sid) or await self.load_call(call_sid)  # with the wait's recording
        return None, call, heard

    async def claim_wait(self, request: web.Request, call_sid: str, waiting: str) -> bool:
        """This request, which ended the petition's turn, ends its 请稍候's stream too. Claimed
        after the turn (as ``/twilio/petition/more`` does): whoever has the turn has its wait."""
        _, first = await self.apply(call_sid, Call.claim_end, waiting, None, "held" in request.query)
        if first:
            request[WAIT_CLAIMED] = waiting
        return first

    async def went_on_over_wait(self, call_sid: str, waiting: str) -> bool:
        """End the stream of a petition's 请稍候 and keep what it heard; True when the caller
        spoke over it as much as a barge-in needs (their words are the petition's rest)."""
        wait_s = float(self.petition_cfg["wait_s"])
        got = await self.collect(call_sid, waiting, "answer", "webhook", open_wait=1.0,
                                 done_wait=lambda live: wait_s if live else 0.0)
        if got is None or got.recording is None:
            return False
        await self.apply(call_sid, Call.turn_heard, waiting, got.recording)
        eos = self.flow.end_of_speech or {"min_speech_s": self.petition_cfg["min_speech_s"]}
        return got.recording.speech_s >= float(eos["min_speech_s"]) - 1e-6  # the barge-in's measure

    @webhook
    async def petition_done(self, request, form, call_sid) -> str:
        return await self.once(request, call_sid, self._petition_done(request, form, call_sid))

    async def _petition_done(self, request, form, call_sid) -> str:
        reply, call, heard = await self._turn_done(request, form, call_sid, "petition")
        if reply is not None:
            return reply
        if call.state.petition.parts:  # the rest of a petition said over its read-back: the whole
            call = await self.parts_heard(call)
            heard = call.state.petition_heard()
        segment = call.state.petition.segment
        min_speech = float(self.petition_cfg["min_speech_s"])
        if heard.final and heard.text.strip():
            if self.intents.hear(heard.text, "open").confidential:  # 保密 said in the petition itself
                await self.apply(call_sid, Call.keep_confidential)
            return await self.ask_readback(call_sid, "petition", stop=segment)
        if not heard.final and heard.speech_s >= min_speech:
            # The words are not in yet (no recogniser, or it is busy): never make the
            # caller repeat for that. The recording is the petition; file it now.
            return await self.file_and_say(call_sid, stop=segment)
        if call.petition_attempts() < self.petition_cfg["attempts"]:
            return await self.start_recording(call_sid, "petition", notice="petition_empty", again=True,
                                              stop=segment)
        if any(r.speech_s >= min_speech for _, r in call.state.recordings("petition")):
            # Heard as speech every time but never recognised: the recordings are the petition.
            call, _ = await self.apply(call_sid, Call.accept_unrecognised)
            return await self.after_petition(call, stop=segment)
        await self.apply(call_sid, Call.end, "no_petition")
        return self.flow.goodbye("bye")

    @webhook
    async def petition_more(self, request, form, call_sid) -> str:
        return await self.once(request, call_sid, self._petition_more(request, form, call_sid))

    async def _petition_more(self, request, form, call_sid) -> str:
        """The caller went on speaking over their petition's read-back (the redirect of the
        instance that heard it): the read-back stops, and the rest of the petition is
        recorded. The read-back's answer turn ends here; a second end of it (its <Record>'s
        quiet, a key) gets this answer, and this one a second end's when that came first."""
        call = await self.load_call(call_sid)
        seg = request.query.get("seg", "")
        if answered_before(request, call, seg):
            raise TurnEndedElsewhere(seg)
        if call.row.case_id is not None:
            return await self.file_and_say(call_sid)
        rec = call.state.segments.get(seg)
        if rec is not None and seg.startswith(WAIT_PREFIX) and call.state.stage in (Stage.petition, Stage.open) \
                and not call.settled:
            # The caller went on over 请稍候 (the words of their turn were still being recognised):
            # this ends that turn, or the turn's next round did first (its words came in) and this
            # gets its answer. The turn's own stream still runs: stopped here.
            turn = call.state.petition.segment
            await self.claim_end(request, call_sid, turn)
            await self.claim_wait(request, call_sid, seg)
            return Flow.stopping(await self.go_on(call_sid, seg), turn)
        if rec is None or rec.kind != "answer" or call.state.stage != Stage.readback or call.settled:
            log.warning("call %s: barge-in for %r, not the read-back being said; the call goes on", call_sid, seg)
            return await self.reply_of(call_sid, seg)
        await self.claim_end(request, call_sid, seg)
        return await self.go_on(call_sid, seg)

    async def go_on(self, call_sid: str, answer_segment: str) -> str:
        """Record the rest of the petition the caller is saying over its read-back: the
        answer's stream and a new turn are parts of the same attempt (``Call.begin_more``)."""
        call, (segment, token) = await self.apply(call_sid, Call.begin_more, answer_segment)
        log.info("call %s: the caller went on over the read-back; %s continues the petition", call_sid, segment)
        return self.flow.slowed(call.state.slow).record_more(segment=segment, token=token, call_sid=call_sid,
                                                             stop=answer_segment)

    async def parts_heard(self, call: Call) -> Call:
        """The parts of the current petition not stored yet (the read-back's answer stream the
        caller went on over, ended when its stream stopped): taken now, wherever their socket."""
        wait_s = float(self.petition_cfg["wait_s"])
        for name in call.state.petition.parts:
            rec = call.state.segments.get(name)
            if rec is None or rec.ended:
                continue
            got = await self.collect(call.call_sid, name, rec.kind, "webhook", open_wait=wait_s,
                                     done_wait=lambda live: wait_s if live else 1.0)
            if got is not None and got.recording is not None:
                call, _ = await self.apply(call.call_sid, Call.turn_heard, name, got.recording)
        return call

    async def _confirm(self, request, form, call_sid: str, kind: TurnKind) -> str:
        """The answer to a read-back: a key (1 yes, 2 no, 3 保密), or words said on the
        answer's stream (对 / 不对 / 保密, 再说一遍, 慢一点), recognised in grammar mode."""
        digits = form.get("Digits") or ""
        if digits == "hangup":  # the answer's <Record> reports the caller hanging up
            await self.hung_up(call_sid)
            return self.flow.empty()
        call = await self.load_call(call_sid)
        seg = request.query.get("seg") or None
        if seg is not None and answered_before(request, call, seg):  # ended already (a redirect and a key racing)
            raise TurnEndedElsewhere(seg)
        if call.row.case_id is not None:
            return await self.file_and_say(call_sid)
        if seg is not None and (seg not in call.state.segments or call.state.segments[seg].kind != "answer"):
            seg = None
        answer = {"1": "yes", "2": "no", "3": "confidential"}.get(digits.strip()[:1])
        spoke = False
        if answer is not None and seg is not None:
            call = await self.claim_end(request, call_sid, seg)
        if answer is None and seg is not None and not call.state.segments[seg].ended:
            round_ = wait_round(request)
            heard = await self.heard(call_sid, seg, "answer", round_)
            if heard is None:
                return self.flow.wait(f"/twilio/{kind}/confirm", seg=seg, round=round_ + 1)
            call = await self.claim_end(request, call_sid, seg, heard)
            meant = await self.hear_answer(heard)
            answer = meant.intent or None
            spoke = heard.speech_s > 0
            if kind == "petition" and answer is None and heard.final and spoke and self.flow.barge_in:
                # Free words on a read-back's answer stream: only the caller going on over the
                # read-back opens a recogniser there, and its redirect lost the race to this end.
                return await self.go_on(call_sid, seg)
            if meant.confidential and kind == "petition" and answer != "no":
                answer = "confidential"
        state = call.state
        turn = state.turn(kind)
        if kind == "petition":  # open questions began petition recordings too: only attempts count
            used, limit = call.petition_attempts(), int(self.petition_cfg["attempts"])
        else:
            used, limit = turn.attempt, int(self.config["address"]["attempts"])
        if answer in ("repeat", "slower") and state.answer_turns < MAX_ANSWERS:
            if answer == "slower":
                await self.apply(call_sid, Call.go_slow)
            return await self.ask_readback(call_sid, kind, stop=seg, again=True)
        if answer == "no" and used < limit:
            return await self.start_recording(call_sid, kind, again=True, stop=seg)
        if answer == "confidential":
            if kind == "petition":
                await self.apply(call_sid, Call.keep_confidential)
            answer = "yes"
        if answer not in ("yes", "no"):  # nothing, or words that answer nothing
            _, tries = await self.apply(call_sid, Call.count_confirm_try)
            if tries < self.config["confirm"]["tries"]:
                notice = "answer_unclear" if spoke else "answer_none"
                return await self.ask_readback(call_sid, kind, stop=seg, notice=notice, again=True)
        call, _ = await self.apply(call_sid, Call.confirm, kind, answer == "yes")
        if kind == "petition":
            return await self.after_petition(call, stop=seg)
        if call.state.address.needs_building and not call.state.address.building_asked:
            await self.apply(call_sid, Call.ask_building)
            return self.flow.slowed(call.state.slow).building_ask(stop=seg)
        return await self.file_and_say(call_sid, stop=seg)

    @webhook
    async def petition_confirm(self, request, form, call_sid) -> str:
        return await self.once(request, call_sid, self._confirm(request, form, call_sid, "petition"))

    @webhook
    async def address_done(self, request, form, call_sid) -> str:
        return await self.once(request, call_sid, self._address_done(request, form, call_sid))

    async def _address_done(self, request, form, call_sid) -> str:
        reply, call, heard = await self._turn_done(request, form, call_sid, "address")
        if reply is not None:
            return reply
        segment = call.state.address.segment
        if not heard.final and heard.speech_s >= float(self.config["address"]["min_speech_s"]):
            # Said but not recognised in time: filed now, the job reads the address later.
            return await self.file_and_say(call_sid, stop=segment)
        said = heard.text.strip() if heard.final else ""
        match = None
        if said:
            gaz = await self.gazetteer()
            phrase_pass = file_phrase_pass(self.pool, resolve(heard.audio_path, self.settings.data_dir)
                                           if heard.audio_path else None,
                                           float(self.config["address"]["phrase_pass_s"]))
            best = await hear_address(gaz, said, phrase_pass)
            match = best.as_match()
        call, attempt = await self.apply(call_sid, Call.address_heard, said, match)
        if match and call.state.address.choices:
            _, (choice, token) = await self.apply(call_sid, Call.ask_choice)
            return self.flow.choice(names=[name for _, name in call.state.address.choices], segment=choice,
                                    token=token, call_sid=call_sid, stop=segment)
        if match:
            return await self.ask_readback(call_sid, "address", stop=segment)
        if attempt < self.config["address"]["attempts"]:
            return await self.start_recording(call_sid, "address", notice="address_unknown", again=True,
                                              stop=segment)
        return await self.file_and_say(call_sid, stop=segment)  # the operator will place it (triage)

    @webhook
    async def address_confirm(self, request, form, call_sid) -> str:
        return await self.once(request, call_sid, self._confirm(request, form, call_sid, "address"))

    @webhook
    async def address_choice(self, request, form, call_sid) -> str:
        """The caller's answer to "是A，还是B？": a key 1..n, else the words said on the
        choice's stream matched against the candidates only (``Gazetteer.pick``). Neither,
        no answer, or words naming none of them: the case is filed at what the matcher was
        sure of (the candidates' common grid, or triage), never at a guess. A key, the
        keypad's timeout and our redirect after the caller's words all end the turn; the
        first claims it, a second gets the same TwiML."""
        return await self.once(request, call_sid, self._address_choice(request, form, call_sid))

    async def _address_choice(self, request, form, call_sid) -> str:
        call = await self.load_call(call_sid)
        if answered_before(request, call, request.query.get("seg", "")):  # answered already: a key and our redirect racing
            raise TurnEndedElsewhere(request.query["seg"])
        if call.row.case_id is not None:
            return await self.file_and_say(call_sid)
        if form.get("Digits") == "hangup":
            await self.hung_up(call_sid)
            return self.flow.empty()
        a = call.state.address
        segment = a.choice_segment or request.query.get("seg", "")
        if call.state.stage != Stage.address_choice or not a.choices or not segment:
            log.warning("call %s: an answer to a choice that was not asked", call_sid)
            return await self.file_and_say(call_sid, stop=segment or None)
        key = (form.get("Digits") or "").strip()[:1]
        picked, by, words = None, None, None
        if key.isdigit() and 1 <= int(key) <= len(a.choices):
            await self.claim_end(request, call_sid, segment)
            self.registry.request_end(call_sid, segment, "webhook")  # no redirect after the key
            picked, by = int(key) - 1, "key"
        else:
            round_ = wait_round(request)
            heard = await self.heard(call_sid, segment, "address", round_)
            if heard is None:
                return self.flow.wait("/twilio/address/choice", seg=segment, round=round_ + 1)
            await self.claim_end(request, call_sid, segment)
            await self.apply(call_sid, Call.turn_heard, segment, heard)
            words = heard.text.strip() if heard.final else ""
            if words:
                gaz = await self.gazetteer()
                picked = gaz.pick(words, a.choices)
                by = "voice" if picked is not None else None
        if picked is None:
            await self.apply(call_sid, Call.address_not_chosen, words or None)
            return await self.file_and_say(call_sid, stop=segment, notice="address_choice_none")
        grid_id, name = a.choices[picked]
        gaz = await self.gazetteer()
        found = gaz.match(name)
        if found is not None and found.grid_id == grid_id:
            match = HeardAddress(name, found).as_match()
        else:  # a candidate the matcher does not give back by its name alone: its grid as offered
            match = {"name": name, "grid_id": grid_id, "confidence": a.confidence or 0.0,
                     "level": gaz.levels.get(grid_id)}
        call, _ = await self.apply(call_sid, Call.address_chosen, picked + 1, by, words, match)
        if call.state.address.needs_building and not call.state.address.building_asked:
            await self.apply(call_sid, Call.ask_building)
            return self.flow.building_ask(stop=segment)
        return await self.file_and_say(call_sid, stop=segment)

    @webhook
    async def address_building(self, request, form, call_sid) -> str:
        """The building number keyed for an estate the caller named: the building's micro
        grid if exactly one building of that number is in the estate, else the estate's."""
        call = await self.load_call(call_sid)
        if call.row.case_id is not None:
            return await self.file_and_say(call_sid)
        digits = "".join(c for c in (form.get("Digits") or "") if c.isdigit())[:6]
        a = call.state.address
        match = None
        if digits and a.grid_id is not None:
            gaz = await self.gazetteer()
            found = gaz.match_building(a.grid_id, digits, scope=a.scope)
            if found is not None:
                match = {"name": found.place or a.name, "grid_id": found.grid_id,
                         "confidence": found.confidence, "level": found.level}
        await self.apply(call_sid, Call.building_keyed, digits, match)
        notice = "address_building_unknown" if digits and match is None else None
        return await self.file_and_say(call_sid, notice=notice)

    @webhook
    async def case_status(self, request, form, call_sid) -> str:
        """A case number keyed, or said on the question's stream (read once the caller went
        quiet after it, or the keypad timed out: 幺, 两 and digit groups as the address code
        reads them). The keys, the keypad's timeout and our redirect all end the turn; the
        first claims it, a second gets the same TwiML."""
        return await self.once(request, call_sid, self._case_status(request, form, call_sid))

    async def _case_status(self, request, form, call_sid) -> str:
        digits = "".join(c for c in (form.get("Digits") or "") if c.isdigit())[:32]
        call = self.remember(await self.db(calls.load_call, self.engine, call_sid))
        if call is None:  # a status asked for on a call never started here
            raise calls.UnknownCall(f"no call {call_sid}")
        seg = request.query.get("seg") or None
        if seg is not None and (seg not in call.state.segments or call.state.segments[seg].kind != "answer"):
            seg = None
        if seg is not None and answered_before(request, call, seg):  # ended already (keys and our redirect racing)
            raise TurnEndedElsewhere(seg)
        if digits and seg is not None:
            await self.claim_end(request, call_sid, seg)
            self.registry.request_end(call_sid, seg, "webhook")  # no redirect after the keys
        if not digits and seg is not None and not call.state.segments[seg].ended:
            round_ = wait_round(request)
            heard = await self.heard(call_sid, seg, "answer", round_)
            if heard is None:
                return self.flow.wait("/twilio/case-status", seg=seg, round=round_ + 1)
            await self.claim_end(request, call_sid, seg)
            call, _ = await self.apply(call_sid, Call.turn_heard, seg, heard)
            said = heard.text if heard.final else ""
            digits = self.intents.number(said) or ""
        flow = self.flow.slowed(call.state.slow)
        info = None
        if digits:
            info = await self.db(calls.case_status, self.engine, digits, self.settings.timezone,
                                 self.config.language)
        if info is not None:
            await self.apply(call_sid, Call.status_found, info.number)
            return flow.status_result(number=info.number, status=info.status, due=info.due,
                                      closed=info.closed, stop=seg)
        _, tries = await self.apply(call_sid, Call.count_status_try)
        if tries >= self.config["status"]["tries"]:
            return flow.goodbye("bye")
        notice = "status_not_found" if digits else "status_no_input"
        if seg is None:
            return flow.status_ask(notice=notice, digits=digits)
        call, (segment, token) = await self.apply(call_sid, Call.begin_answer, "number")
        return flow.status_ask_spoken(segment=segment, token=token, call_sid=call_sid, notice=notice,
                                      digits=digits, stop=seg)

    @webhook
    async def operator_after(self, request, form, call_sid) -> str:
        await self.apply(call_sid, Call.transfer_ended, form.get("DialCallStatus"))
        if form.get("DialCallStatus") == "completed":
            await self.apply(call_sid, Call.end, "operator")
            return self.flow.goodbye("bye")
        return await self.start_recording(call_sid, "petition", notice="operator_busy")

    @webhook
    async def status(self, request, form, call_sid) -> str:
        call_status = (form.get("CallStatus") or "")[:24]
        try:
            await self.call_status(call_sid, call_status, form.get("CallDuration"))
        except Exception as exc:
            if not (transient(exc) and call_status in TERMINAL_STATUSES):
                raise
            # Twilio does not send a status callback again: this instance keeps trying to file
            # what the caller said until the database is back (the recovery sweep after it).
            log.warning("call %s ended (%s) while the database was away (%s); filing it once it is back",
                        call_sid, call_status, type(exc).__name__)
            task = asyncio.get_running_loop().create_task(
                self._status_later(call_sid, call_status, form.get("CallDuration")), name=f"call end {call_sid}")
            self._ends_later.add(task)
            task.add_done_callback(self._ends_later.discard)
        return self.flow.empty()

    async def call_status(self, call_sid: str, call_status: str, duration: str | None) -> None:
        await self.load_call(call_sid)
        await self.apply(call_sid, Call.callback, call_status, duration)
        if call_status in TERMINAL_STATUSES:
            await self.hung_up(call_sid)
            self.registry.forget_call(call_sid)

    async def _status_later(self, call_sid: str, call_status: str, duration: str | None) -> None:
        """A call's end that met a database away, tried again with pauses that double (1 s to
        a minute) for as long as ``[recovery] stale_after_s``; after that the sweep files it."""
        give_up = time.monotonic() + float(self.config["recovery"]["stale_after_s"])
        pause = 1.0
        while time.monotonic() < give_up:
            await asyncio.sleep(pause)
            try:
                await self.call_status(call_sid, call_status, duration)
                log.info("call %s: its end, which met a database away, is recorded now", call_sid)
                return
            except Exception as exc:
                if not transient(exc):
                    log.exception("call %s: recording its end failed; the recovery sweep files it", call_sid)
                    return
            pause = min(pause * 2, 60.0)

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        return await self.registry.handle(request)

    # -- health and lifecycle -------------------------------------------------------------

    async def health(self) -> dict:
        """The recognition backlog, for /healthz."""
        backlog = await self.db(calls.transcription_backlog, self.engine, retry_for_s=1.0)
        return {
            "speech_model": self.pool is not None,
            "live_recognitions": self.registry.slots.live,
            "live_capacity": self.live_capacity,
            "calls_recorded_only": self.registry.stats["recording_only"],
            "transcriptions_queued": backlog.get("queued", 0),
            "transcriptions_running": backlog.get("running", 0),
            "transcriptions_failed": backlog.get("failed", 0),
        }

    async def startup(self, app: web.Application) -> None:
        if not self.settings.twilio_auth_token:
            log.warning("GRIDLINE_TWILIO_AUTH_TOKEN is not set: the hotline accepts simulator "
                        "signatures (key %r) only; do not expose this server to Twilio", SIMULATOR_TOKEN)
        if self.pool is None:
            log.warning("hotline: no speech model; calls are recorded and filed with transcript_pending "
                        "(a `gridline jobs --speech` with a model transcribes them)")
        else:
            log.info("hotline: up to %d calls recognised live (GRIDLINE_SPEECH_LIVE_STREAMS) on %d speech "
                     "worker(s); further calls are recorded and transcribed afterwards", self.live_capacity,
                     max(1, self.settings.speech_workers))
            if hasattr(self.pool, "warm_up"):
                await self.pool.warm_up()  # load the model now, not during the first caller's petition
            for runner in self.speech_runners:
                runner.start()
        eos = self.flow.end_of_speech
        if eos is not None:
            self.live_calls = LiveCalls(self.settings.twilio_account_sid, self.settings.twilio_auth_token,
                                        api_url=self.settings.twilio_api_url,
                                        timeout=float(eos["redirect_timeout_s"]))
            log.info("hotline: a caller's turn ends %.1f s after their last word (%.1f s after a short answer), "
                     "by a live redirect; Twilio's own quiet is the fallback", eos["quiet_s"], eos["answer_quiet_s"])
        await self.instance.start()
        await self.handover.start()
        started = utcnow()
        self._sweeper = asyncio.create_task(self._sweep_periodically(started), name="hotline recovery")

    async def recover(self, before: datetime) -> list[calls.Filed]:
        """File the calls nobody is moving on (``ivr.recovery``): those of instances whose
        lease ran out, those untouched for ``recovery.stale_after_s``, and (naming no
        instance) those untouched since ``before``."""
        stale = timedelta(seconds=float(self.config["recovery"]["stale_after_s"]))
        filed = await sweep(self.db, self.engine, self.config.data, before=before, data_dir=self.settings.data_dir,
                            stale_before=utcnow() - stale, store=self.services.media,
                            spool=self.services.spool)
        for runner in self.speech_runners:
            runner.wake()
        return filed

    async def _sweep_periodically(self, started: datetime) -> None:
        # Start-up does not wait for it. Every instance sweeps: a call is filed once (the
        # filing locks the call's row), and another instance's calls only once its lease ran out.
        every = float(self.config["recovery"]["sweep_every_s"])
        sweeps = 0
        while not self._sweeps_stop.is_set():
            try:
                await self.recover(started)
            except Exception:
                log.exception("recovery sweep failed; the next one will try again")
            if sweeps % max(1, int(3600 / every)) == 0:  # hourly: handed-over turns of a day ago
                with contextlib.suppress(Exception):
                    await self.db(handover.forget_before, self.engine, utcnow() - timedelta(days=1))
                with contextlib.suppress(Exception):  # and copies of turns no call filed
                    await self.db(forget_handover_copies, self.engine, utcnow() - timedelta(days=1))
            sweeps += 1
            # Waits on an event, not only on cancel: a cancel that lands inside a database
            # call may be taken by it, and the sweep must still end when the hotline stops.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweeps_stop.wait(), every)

    async def shutdown(self, app: web.Application) -> None:
        await self.registry.close_sockets()

    async def cleanup(self, app: web.Application) -> None:
        if self._uploads:  # under way: let them end (a file not uploaded waits for its job)
            await asyncio.wait(list(self._uploads), timeout=30)
        for task in self._ends_later:  # a restart's sweep files them
            task.cancel()
        if self._sweeper is not None:
            self._sweeps_stop.set()
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for runner in self.speech_runners:
            await runner.stop()
        await self.registry.close()
        await self.handover.stop()
        await self.instance.stop()
        if self.live_calls is not None:
            await self.live_calls.close()
        if self._own_pool and self.pool is not None:
            await self.pool.close()


def _operator_hours(settings) -> list:
    """Operator hours from rules.toml ``[hotline] operator_hours``; a deployment that sets
    ``GRIDLINE_SERVICE_HOURS`` overrides them (``08:30-12:00,13:30-17:30``; empty: never)."""
    if "service_hours" in settings.model_fields_set:
        return parse_service_hours(settings.service_hours)
    return parse_hours(load_rules()["hotline"]["operator_hours"])


def setup(app: web.Application, services) -> Hotline:
    """Mount the hotline. ``services.extras["ivr_flow"]`` may hold a FlowConfig (tests)."""
    config = services.extras.get("ivr_flow") or FlowConfig.load()
    hotline = Hotline(services, config)
    app[HOTLINE] = hotline
    services.extras.setdefault("health", {})["hotline"] = hotline.health
    # Read by /metrics (gridline.metrics names them), from this process.
    registry = hotline.registry
    services.gauges["gridline_media_streams_open"] = lambda: registry.open_sockets
    services.gauges["gridline_speech_live_recognitions"] = lambda: registry.slots.live
    services.gauges["gridline_hotline_turns_ended_by_us"] = lambda: registry.stats["turns_ended_by_us"]
    services.gauges["gridline_hotline_turn_end_failures"] = lambda: registry.stats["turn_end_failures"]
    if hotline.pool is not None:
        pool = hotline.pool
        services.gauges["gridline_speech_jobs_in_flight"] = lambda: pool.busy
        services.gauges["gridline_speech_backlog_seconds"] = pool.backlog_seconds
    for path, fn in (
        ("/twilio/voice", Hotline.voice),
        ("/twilio/open/done", Hotline.open_done),
        ("/twilio/menu", Hotline.menu),
        ("/twilio/petition/done", Hotline.petition_done),
        ("/twilio/petition/confirm", Hotline.petition_confirm),
        ("/twilio/petition/more", Hotline.petition_more),
        ("/twilio/address/done", Hotline.address_done),
        ("/twilio/address/confirm", Hotline.address_confirm),
        ("/twilio/address/building", Hotline.address_building),
        ("/twilio/address/choice", Hotline.address_choice),
        ("/twilio/case-status", Hotline.case_status),
        ("/twilio/operator/after", Hotline.operator_after),
        ("/twilio/status", Hotline.status),
    ):
        app.router.add_post(path, fn)  # webhook() made each a handler(request)
    app.router.add_get("/twilio/stream", hotline.stream)
    services.jobs.register(KEEP_HELD_JOB, KeepHeld(hotline.engine, hotline.spool.store, hotline.db).handle)
    app.on_startup.append(hotline.startup)
    app.on_shutdown.append(hotline.shutdown)
    app.on_cleanup.append(hotline.cleanup)
    return hotline
