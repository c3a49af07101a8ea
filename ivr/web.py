"""Twilio voice webhooks and the Media Streams socket of the hotline.

Thin: each handler checks the signature, loads the call session, asks the core (intake,
case lookup, gazetteer) and answers with TwiML from ``ivr.flow``. Database work runs in
threads; the event loop only waits. Routes (all POST except the socket):

    /twilio/voice              incoming call → greeting and menu
    /twilio/menu               menu digit (1 petition, 2 status, 0 operator; none → again)
    /twilio/petition/done      <Record> ended (# / silence / hang-up) → read back
    /twilio/petition/confirm   1 confirm, 2 say again
    /twilio/address/done       unknown caller's address → gazetteer → read back
    /twilio/address/confirm    1 confirm, 2 say again → file the case
    /twilio/case-status        case number keyed → status read out
    /twilio/operator/after     <Dial> to the operator ended
    /twilio/status             call status callback (hang-ups, duration)
    /twilio/stream             Media Streams websocket (GET, token in the start message)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import MultiDictProxy

from core.clock import utcnow
from ivr import calls
from ivr.config import FlowConfig, in_service_hours
from ivr.flow import Flow
from ivr.recovery import sweep
from ivr.signature import SIMULATOR_TOKEN, is_valid
from ivr.stream import StreamRegistry

log = logging.getLogger(__name__)

HOTLINE = web.AppKey("gridline_hotline", object)
Handler = Callable[["Hotline", web.Request, MultiDictProxy, str], Awaitable[str]]


def twiml(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/xml", charset="utf-8")


def webhook(fn: Handler):
    """Signature check, CallSid, TwiML response; failures say sorry instead of a 500."""

    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.Response:
        hotline: Hotline = request.app[HOTLINE]
        form = await request.post()
        settings = hotline.settings
        if not is_valid(request, form, settings.twilio_auth_token, settings.public_url):
            log.warning("rejected unsigned or forged request to %s", request.path)
            return web.Response(status=403, text="invalid X-Twilio-Signature")
        call_sid = form.get("CallSid", "")
        if not call_sid:
            return web.Response(status=400, text="CallSid missing")
        started = time.perf_counter()
        try:
            return twiml(await fn(hotline, request, form, call_sid))
        except Exception:
            log.exception("%s failed for call %s", request.path, call_sid)
            return twiml(hotline.flow.error())
        finally:
            hotline.latencies.append(time.perf_counter() - started)

    return handler


class Hotline:
    def __init__(self, services, config: FlowConfig):
        self.services = services
        self.settings = services.settings
        self.engine = services.engine
        self.config = config
        self.flow = Flow(config, self.settings.public_url)
        self.registry = StreamRegistry(
            self.engine, services.speech, self.settings.data_dir / "recordings", config["stream"],
            self.settings.speech_workers,
        )
        self.registry.on_orphan = self.orphaned
        self.latencies: list[float] = []
        self._sweeper: asyncio.Task | None = None

    # -- helpers ------------------------------------------------------------------------

    @property
    def petition_cfg(self) -> dict:
        return self.config["petition"]

    async def db(self, fn, *args, **kw):
        return await self.services.db.run(fn, *args, **kw)

    async def mutate(self, call_sid: str, fn):
        row, result = await self.registry.mutate(call_sid, fn)
        return row, result

    async def load(self, call_sid: str):
        row = await self.db(calls.load, self.engine, call_sid)
        if row is None:  # a webhook for a call whose first webhook we never saw
            row, _ = await self.db(calls.open_call, self.engine, call_sid, from_number=None,
                                   to_number=None, status="in-progress")
        return row

    async def file(self, call_sid: str, *, hung_up: bool = False) -> calls.Filed:
        async with self.registry.lock(call_sid):
            return await self.db(calls.file_case, self.engine, call_sid,
                                 min_speech_s=self.petition_cfg["min_speech_s"],
                                 low_confidence=self.petition_cfg["low_confidence"], hung_up=hung_up,
                                 data_dir=self.settings.data_dir)

    async def file_and_say(self, call_sid: str) -> str:
        filed = await self.file(call_sid)
        return self.flow.filed(filed.number) if filed.number else self.flow.goodbye("bye")

    async def gazetteer(self):
        from core.indexes import indexes_for

        snapshot = await self.db(indexes_for, self.engine)
        return snapshot.gazetteer_at(self.config["address"]["min_confidence"])

    async def segment_result(self, call_sid: str, name: str, round_: int) -> dict | None:
        """The finished segment, or ``None`` (say 请稍候 and come back) while recognition
        is still running and rounds remain; after the last round, what we have."""
        live = self.registry.get(call_sid, name)
        if live is not None:
            live.end("webhook", self.petition_cfg["drain_s"])
            if await live.wait(self.petition_cfg["wait_s"]):
                return live.result
        else:
            row = await self.load(call_sid)
            seg = ((row.state or {}).get("segments") or {}).get(name)
            if seg and seg.get("final"):
                return seg
            if seg is None and round_ == 0:
                await asyncio.sleep(self.petition_cfg["drain_s"])  # the socket may be just opening
        if round_ < self.petition_cfg["wait_rounds"]:
            return None
        live = self.registry.get(call_sid, name)
        if live is not None:
            return live.snapshot(final=False)
        row = await self.load(call_sid)
        return ((row.state or {}).get("segments") or {}).get(name) or {}

    async def end_live(self, call_sid: str, reason: str) -> None:
        segs = self.registry.live_for(call_sid)
        for seg in segs:
            seg.end(reason)
        for seg in segs:
            await seg.wait(10)

    async def hung_up(self, call_sid: str) -> calls.Filed | None:
        """The caller is gone: keep what they said (≥ min speech → a flagged case)."""
        await self.end_live(call_sid, "hangup")
        row = await self.load(call_sid)
        if row.case_id is not None or row.outcome:
            return None
        state = row.state or {}
        if not (state.get("petition") or {}).get("segment"):
            await self.mutate(call_sid, lambda r, s: setattr(r, "outcome", r.outcome or _outcome_for(s)))
            return None
        return await self.file(call_sid, hung_up=True)

    async def orphaned(self, call_sid: str, segment: str) -> None:
        """A petition stream ended without #/silence and nothing happened since."""
        row = await self.load(call_sid)
        state = row.state or {}
        if row.case_id is None and not row.outcome and state.get("stage") == "petition" and \
                (state.get("petition") or {}).get("segment") == segment:
            await self.hung_up(call_sid)

    # -- steps ----------------------------------------------------------------------------

    async def start_recording(self, call_sid: str, kind: str, *, notice: str | None = None,
                              again: bool = False) -> str:
        def begin(row, state):
            turn = state.setdefault(kind, {})
            turn["attempt"] = int(turn.get("attempt", 0)) + 1
            turn["segment"] = f"{kind}-{turn['attempt']}"
            turn["confirmed"] = False
            state["stage"] = kind
            state["wait_round"] = 0
            state["confirm_tries"] = 0
            return turn["segment"], row.stream_token

        _, (segment, token) = await self.mutate(call_sid, begin)
        intro = ("petition_again" if again else "petition_intro") if kind == "petition" else "address_intro"
        return self.flow.record(kind=kind, segment=segment, token=token, call_sid=call_sid,
                                notice=notice, intro=intro)

    async def after_petition(self, call_sid: str, state: dict) -> str:
        if (state.get("caller") or {}).get("known"):
            return await self.file_and_say(call_sid)
        return await self.start_recording(call_sid, "address")

    # -- handlers -------------------------------------------------------------------------

    @webhook
    async def voice(self, request, form, call_sid) -> str:
        row, _ = await self.db(calls.open_call, self.engine, call_sid, from_number=form.get("From"),
                               to_number=form.get("To"), status=form.get("CallStatus"),
                               direction=form.get("Direction", "inbound"))
        if row.case_id is not None:  # a retry after the case was filed
            return await self.file_and_say(call_sid)
        caller = (row.state or {}).get("caller") or {}
        return self.flow.menu(community=caller.get("community"), greet=True)

    @webhook
    async def menu(self, request, form, call_sid) -> str:
        await self.load(call_sid)
        digits = (form.get("Digits") or "").strip()
        action = self.config["menu"]["digits"].get(digits[:1]) if digits else None
        if action is None:
            if request.query.get("after") == "status":
                return self.flow.goodbye("bye")

            def count(row, state):
                state["menu_tries"] = int(state.get("menu_tries", 0)) + 1
                return state["menu_tries"]

            _, tries = await self.mutate(call_sid, count)
            if tries < self.config["menu"]["tries"]:
                return self.flow.menu(notice="menu_invalid" if digits else "menu_no_input")
            action = "petition"  # nobody chose: the most likely reason to call
        if action == "status":
            await self.mutate(call_sid, lambda r, s: s.update(stage="status", status_tries=0))
            return self.flow.status_ask()
        if action == "operator":
            number = self.settings.operator_number
            if number and in_service_hours(self.settings.service_hours, self.settings.timezone, utcnow()):
                await self.mutate(call_sid, lambda r, s: s.update(stage="operator"))
                return self.flow.dial_operator(number)
            return await self.start_recording(call_sid, "petition", notice="operator_closed")
        return await self.start_recording(call_sid, "petition")

    async def _turn_done(self, request, form, call_sid: str, kind: str) -> tuple[str | None, dict | None]:
        """Shared by petition/address done: (TwiML to return now, or the segment result)."""
        name = request.query.get("seg", "")
        if form.get("Digits") == "hangup":  # <Record> reports the caller hanging up
            await self.hung_up(call_sid)
            return self.flow.empty(), None
        row = await self.load(call_sid)
        if row.case_id is not None:
            return await self.file_and_say(call_sid), None
        round_ = int(request.query.get("round", "0") or 0)
        result = await self.segment_result(call_sid, name, round_)
        if result is None:
            return self.flow.wait(f"/twilio/{kind}/done", seg=name, round=round_ + 1), None
        return None, result

    @webhook
    async def petition_done(self, request, form, call_sid) -> str:
        reply, result = await self._turn_done(request, form, call_sid, "petition")
        if reply is not None:
            return reply
        row = await self.load(call_sid)
        state = row.state or {}
        text = (result.get("text") or "").strip()
        attempt = int((state.get("petition") or {}).get("attempt", 1))
        if not text:
            if attempt < self.petition_cfg["attempts"]:
                return await self.start_recording(call_sid, "petition", notice="petition_empty", again=True)
            # Nothing recognised after every attempt: keep the audio for the operator.
            if float(result.get("speech_s") or 0) >= self.petition_cfg["min_speech_s"]:
                await self.mutate(call_sid, lambda r, s: s["petition"].update(confirmed=True, unconfirmed=True))
                return await self.after_petition(call_sid, state)
            await self.mutate(call_sid, lambda r, s: setattr(r, "outcome", "no_petition"))
            return self.flow.goodbye("bye")
        await self.mutate(call_sid, lambda r, s: s.update(stage="readback", confirm_tries=0))
        return self.flow.readback(segment=request.query.get("seg", ""), text=text)

    async def _confirm(self, call_sid: str, form, kind: str, readback: Callable[[dict, str | None], str]) -> str:
        digit = (form.get("Digits") or "")[:1]
        row = await self.load(call_sid)
        if row.case_id is not None:
            return await self.file_and_say(call_sid)
        state = row.state or {}
        turn = state.get(kind) or {}
        limit = self.petition_cfg["attempts"] if kind == "petition" else self.config["address"]["attempts"]
        if digit == "2" and int(turn.get("attempt", 1)) < limit:
            return await self.start_recording(call_sid, kind, again=True)
        if digit not in ("1", "2"):
            def count(r, s):
                s["confirm_tries"] = int(s.get("confirm_tries", 0)) + 1
                return s["confirm_tries"]

            _, tries = await self.mutate(call_sid, count)
            if tries < self.config["confirm"]["tries"]:
                return readback(state, "readback_no_input")

        def confirm(r, s):
            s[kind]["confirmed"] = True
            if digit != "1":
                s[kind]["unconfirmed"] = True

        row, _ = await self.mutate(call_sid, confirm)
        if kind == "petition":
            return await self.after_petition(call_sid, row.state)
        return await self.file_and_say(call_sid)

    @webhook
    async def petition_confirm(self, request, form, call_sid) -> str:
        def again(state, notice):
            seg = (state.get("petition") or {}).get("segment", "")
            text = ((state.get("segments") or {}).get(seg) or {}).get("text", "")
            return self.flow.readback(segment=seg, text=text, notice=notice)

        return await self._confirm(call_sid, form, "petition", again)

    @webhook
    async def address_done(self, request, form, call_sid) -> str:
        reply, result = await self._turn_done(request, form, call_sid, "address")
        if reply is not None:
            return reply
        heard = (result.get("text") or "").strip()
        match = None
        if heard:
            gaz = await self.gazetteer()
            found = await self.db(gaz.match, heard)
            if found is not None:
                names = [c.entry.name for c in gaz.candidates(heard) if c.entry.grid_id == found.grid_id]
                match = {"name": names[0] if names else heard, "grid_id": found.grid_id,
                         "confidence": found.confidence}

        def record(r, s):
            s["address"].update(heard=heard or s["address"].get("heard"), name=None, grid_id=None)
            if match:
                s["address"].update(match)
                s["stage"] = "address_confirm"
                s["confirm_tries"] = 0
            return int(s["address"].get("attempt", 1))

        _, attempt = await self.mutate(call_sid, record)
        if match:
            return self.flow.readback(segment=request.query.get("seg", ""), text=match["name"], kind="address")
        if attempt < self.config["address"]["attempts"]:
            return await self.start_recording(call_sid, "address", notice="address_unknown", again=True)
        return await self.file_and_say(call_sid)  # the operator will place it (triage)

    @webhook
    async def address_confirm(self, request, form, call_sid) -> str:
        def again(state, notice):
            a = state.get("address") or {}
            return self.flow.readback(segment=a.get("segment", ""), text=a.get("name") or "", kind="address",
                                      notice=notice)

        return await self._confirm(call_sid, form, "address", again)

    @webhook
    async def case_status(self, request, form, call_sid) -> str:
        digits = "".join(c for c in (form.get("Digits") or "") if c.isdigit())
        info = None
        if digits:
            info = await self.db(calls.case_status, self.engine, digits, self.settings.timezone,
                                 self.config.language)
        if info is not None:
            await self.mutate(call_sid, lambda r, s: s.update(status_tries=0,
                                                              queried=[*s.get("queried", []), info.number]))
            return self.flow.status_result(number=info.number, status=info.status, due=info.due,
                                           closed=info.closed)

        def count(r, s):
            s["status_tries"] = int(s.get("status_tries", 0)) + 1
            return s["status_tries"]

        _, tries = await self.mutate(call_sid, count)
        if tries >= self.config["status"]["tries"]:
            return self.flow.goodbye("bye")
        if digits:
            return self.flow.status_ask(notice="status_not_found", digits=digits)
        return self.flow.status_ask(notice="status_no_input")

    @webhook
    async def operator_after(self, request, form, call_sid) -> str:
        if form.get("DialCallStatus") == "completed":
            await self.mutate(call_sid, lambda r, s: setattr(r, "outcome", "operator"))
            return self.flow.goodbye("bye")
        return await self.start_recording(call_sid, "petition", notice="operator_busy")

    @webhook
    async def status(self, request, form, call_sid) -> str:
        await self.load(call_sid)
        call_status = (form.get("CallStatus") or "")[:24]
        duration = form.get("CallDuration")

        def update(r, s):
            if call_status:
                r.status = call_status
            if duration and duration.isdigit():
                r.duration_s = int(duration)
            if call_status in calls.TERMINAL_STATUSES and r.ended_at is None:
                r.ended_at = utcnow()

        await self.mutate(call_sid, update)
        if call_status in calls.TERMINAL_STATUSES:
            await self.hung_up(call_sid)
        return self.flow.empty()

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        return await self.registry.handle(request)

    # -- lifecycle ------------------------------------------------------------------------

    async def startup(self, app: web.Application) -> None:
        if not self.settings.twilio_auth_token:
            log.warning("GRIDLINE_TWILIO_AUTH_TOKEN is not set: the hotline accepts simulator "
                        "signatures (key %r) only; do not expose this server to Twilio", SIMULATOR_TOKEN)
        pool = self.registry.pool
        if pool is not None and hasattr(pool, "warm_up"):
            await pool.warm_up()  # load the model now, not during the first caller's petition
        await self.recover(0.0)
        self._sweeper = asyncio.create_task(self._sweep_periodically())

    async def recover(self, min_age_s: float) -> list[calls.Filed]:
        return await self.db(sweep, self.engine, self.services.speech, self.config.data, min_age_s,
                             self.settings.data_dir)

    async def _sweep_periodically(self) -> None:
        every = float(self.config["recovery"]["sweep_every_s"])
        while True:
            await asyncio.sleep(every)
            try:
                await self.recover(float(self.config["recovery"]["stale_after_s"]))
            except Exception:
                log.exception("periodic recovery sweep failed")

    async def shutdown(self, app: web.Application) -> None:
        await self.registry.close_sockets()

    async def cleanup(self, app: web.Application) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.registry.close()


def _outcome_for(state: dict) -> str:
    stage = state.get("stage")
    if stage == "status" or state.get("queried"):
        return "status_query"
    if stage == "operator":
        return "operator"
    return "hung_up"


def setup(app: web.Application, services) -> Hotline:
    """Mount the hotline. ``services.extras["ivr_flow"]`` may hold a FlowConfig (tests)."""
    config = services.extras.get("ivr_flow") or FlowConfig.load()
    hotline = Hotline(services, config)
    app[HOTLINE] = hotline
    for path, fn in (
        ("/twilio/voice", Hotline.voice),
        ("/twilio/menu", Hotline.menu),
        ("/twilio/petition/done", Hotline.petition_done),
        ("/twilio/petition/confirm", Hotline.petition_confirm),
        ("/twilio/address/done", Hotline.address_done),
        ("/twilio/address/confirm", Hotline.address_confirm),
        ("/twilio/case-status", Hotline.case_status),
        ("/twilio/operator/after", Hotline.operator_after),
        ("/twilio/status", Hotline.status),
    ):
        app.router.add_post(path, fn)  # webhook() made each a handler(request)
    app.router.add_get("/twilio/stream", hotline.stream)
    app.on_startup.append(hotline.startup)
    app.on_shutdown.append(hotline.shutdown)
    app.on_cleanup.append(hotline.cleanup)
    return hotline

