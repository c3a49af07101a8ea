"""A local fake of Twilio's REST API (Calls, Call Events, Messages), good enough for the
real ``twilio`` client, and the people it calls.

Covers ``/2010-04-01/Accounts/{AccountSid}/Calls.json`` (create; list filtered by To, From,
Status and start time), ``/Calls/{CallSid}.json`` (fetch, update, delete),
``/Calls/{CallSid}/Events.json`` (the requests Twilio made for the call, URLs included),
``/Messages.json`` (create; list filtered by To, From and date sent) and
``/Messages/{Sid}.json``, plus the Account fetch, with HTTP Basic auth against the account
sid / auth token and Twilio's JSON error bodies (``{"code", "message", "more_info",
"status"}``).

**Callees.** ``fake.callee(number, Callee(...), ...)`` says how the next calls to a number
go: busy, no answer, failed, an answering machine, or a person who picks up; the fake then
plays the call against the app's webhooks as Twilio would: the status callbacks it was
asked for (signed), the call's ``Url`` with ``AnsweredBy``, and the person following the
TwiML with ``ivr.simulator`` (keys pressed, speech streamed over Media Streams). A call to
a number with no callee stays queued (Twilio's queue backed up). ``fake.hold_creates()``
keeps the HTTP answer to creates back until released: the call exists at "Twilio", the
client does not know it yet (a worker killed in between).

The server runs on its own thread and event loop, so the synchronous twilio client
(``requests``) may be called from anywhere, even from inside a running event loop, and
plain synchronous tests can use it too::

    async with FakeTwilio() as fake:                      # or: with FakeTwilio() as fake:
        client = make_twilio_client(fake)
        call = client.calls.create(to="+8613912345678", from_=fake.phone_number,
                                   url="https://gl.example/ivr/survey")
        assert fake.calls[call.sid]["status"] == "queued"
        fake.set_call_status(call.sid, "completed", duration=42)
        await fake.deliver_status_callback(call.sid)      # signed, like Twilio

Test hooks: :meth:`FakeTwilio.fail_next` (e.g. a 503 on the next create),
:meth:`FakeTwilio.set_call_status`, :meth:`FakeTwilio.deliver_status_callback`,
:meth:`FakeTwilio.deliver_answer`, :meth:`FakeTwilio.callee`, :meth:`FakeTwilio.hold_creates`,
:attr:`FakeTwilio.played` (what each callee heard) and the :attr:`FakeTwilio.requests` record.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from twilio.rest import Client

from core.platform import clock
from ivr.simulator import CallResult, CallScript, Simulator, Turn
from ivr.twilio_http import AsyncBaseUrlHttpClient, BaseUrlHttpClient
from tests.support.twilio_signing import SIGNATURE_HEADER, sign_twilio_request

DEFAULT_ACCOUNT_SID = "AC3f9d2a8b7c6e5f4a3b2c1d0e9f8a7b6c"
DEFAULT_AUTH_TOKEN = "5c0e2b9d7a4f18e3c6b2a9d0f7e41c8b"
DEFAULT_PHONE_NUMBER = "+14155550143"
API_VERSION = "2010-04-01"

TERMINAL_STATUSES = {"completed", "busy", "no-answer", "failed", "canceled"}
CALL_STATUSES = {"queued", "ringing", "in-progress"} | TERMINAL_STATUSES
_MULTI_VALUED = {"StatusCallbackEvent", "RecordingStatusCallbackEvent"}


def _now() -> datetime:
    """The fake's clock is the app's (``core.platform.clock``): a test that freezes time freezes both."""
    return clock.utcnow().replace(tzinfo=UTC)


def rfc2822(moment: datetime | None = None) -> str:
    """Twilio's date format: ``Wed, 12 Jun 2024 02:41:07 +0000``."""
    return format_datetime((moment or _now()).astimezone(UTC))


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


_DEFAULT_ERRORS = {
    400: (21211, "Invalid 'To' Phone Number"),
    401: (20003, "Authenticate"),
    404: (20404, "The requested resource was not found"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
}


class _TwilioHTTPError(Exception):
    def __init__(self, status: int, code: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response(
            twilio_error(self.status, self.code, self.message),
            status=self.status,
            headers=self.headers,
        )


@dataclass
class TwilioApiRequest:
    """One request the fake received. ``params`` merges query and form body; names given
    several times (StatusCallbackEvent) are lists."""

    method: str
    path: str
    params: dict[str, Any]
    operation: str = "unknown"  # create | list | fetch | update | delete | account
    authorized: bool = False
    status: int = 0
    at: float = field(default_factory=time.time)


@dataclass
class Callee:
    """How a call to a number goes. ``answer``: "human", "machine" (answering machine),
    "busy", "no-answer" or "failed". A human presses ``digits`` at each keypad question
    (None = no key) and says ``speech`` (µ-law bytes or an audio file) at each recording,
    ending it with ``end`` ("#", "silence", "hangup")."""

    answer: str = "human"
    digits: list[str | None] = field(default_factory=list)
    speech: list[bytes | str | None] = field(default_factory=list)
    end: str = "#"
    ring_s: float = 0.0
    operator_answers: bool = False
    hangup_after_prompts: int | None = None


@dataclass
class _Failure:
    operation: str
    status: int
    code: int
    message: str
    times: int


def _format_number(number: str) -> str:
    if number.startswith("+1") and len(number) == 12 and number[1:].isdigit():
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number


class FakeTwilio:
    """Twilio REST (Calls) on 127.0.0.1, on a background thread. See module docstring."""

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        phone_number: str = DEFAULT_PHONE_NUMBER,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.phone_number = phone_number
        self.phone_number_sid = new_sid("PN")
        self.host = host
        self._port = port
        self.requests: list[TwilioApiRequest] = []
        self.calls: dict[str, dict[str, Any]] = {}  # sid -> Call resource JSON
        self.call_params: dict[str, dict[str, Any]] = {}  # sid -> create (+update) params
        self.call_events: dict[str, list[dict[str, Any]]] = {}  # sid -> requests made for the call
        self.messages: dict[str, dict[str, Any]] = {}  # sid -> Message resource JSON
        self.callees: dict[str, list[Callee]] = {}  # number -> how its next calls go
        self.played: dict[str, CallResult] = {}  # sid -> what the callee heard
        self.play_errors: dict[str, str] = {}  # sid -> why playing the call failed
        self._plays: set[asyncio.Task] = set()
        self._hold: threading.Event | None = None
        self._hold_updates: threading.Event | None = None
        self._carried: dict[str, Any] = {}  # sid -> the simulator's Live of a call it plays
        # Outbound calls played here honour live updates too (answers may be ended by a redirect).
        self.live_outbound = False
        self._sequence: dict[str, int] = {}
        self._failures: list[_Failure] = []
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start_sync(self) -> FakeTwilio:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._serve, name="fake-twilio", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._startup_error is not None:
            raise RuntimeError("fake Twilio failed to start") from self._startup_error
        return self

    def stop_sync(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, runner = self._loop, self._runner
        if self._hold is not None:
            self._hold.set()
        asyncio.run_coroutine_threadsafe(self._cancel_plays(), loop).result(10)
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None

    async def start(self) -> FakeTwilio:
        return await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    def __enter__(self) -> FakeTwilio:
        return self.start_sync()

    def __exit__(self, *exc: object) -> None:
        self.stop_sync()

    async def __aenter__(self) -> FakeTwilio:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except BaseException as exc:  # surfaced by start_sync
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _setup(self) -> None:
        app = web.Application()
        prefix = f"/{API_VERSION}/Accounts/{{account}}"
        app.router.add_route("*", prefix + ".json", self._wrap("account", self._account))
        app.router.add_route("*", prefix + "/Calls.json", self._wrap("calls", self._calls))
        app.router.add_route("*", prefix + "/Calls/{sid}.json", self._wrap("call", self._call))
        app.router.add_route("*", prefix + "/Calls/{sid}/Events.json", self._wrap("events", self._events))
        app.router.add_route("*", prefix + "/Messages.json", self._wrap("messages", self._messages))
        app.router.add_route("*", prefix + "/Messages/{sid}.json", self._wrap("message", self._message))
        app.router.add_route("*", "/{tail:.*}", self._wrap("unknown", self._not_found))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """Where ``https://api.twilio.com`` is; use as GRIDLINE_TWILIO_API_URL."""
        return f"http://{self.host}:{self._port}"

    def account_path(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}"

    # ------------------------------------------------------------------ test hooks

    def fail_next(
        self,
        status: int = 503,
        *,
        operation: str = "create",
        code: int | None = None,
        message: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests of ``operation`` (create, list, fetch, update,
        delete, or ``*``) with ``status`` and Twilio's error JSON (429 gets Retry-After)."""
        default_code, default_message = _DEFAULT_ERRORS.get(status, (20500, "Injected failure"))
        with self._lock:
            self._failures.append(
                _Failure(operation, status, code or default_code, message or default_message, times)
            )

    def fail_next_create(self, status: int = 503, **kwargs: Any) -> None:
        self.fail_next(status, operation="create", **kwargs)

    def set_call_status(
        self,
        sid: str,
        status: str,
        *,
        duration: int | None = None,
        answered_by: str | None = None,
    ) -> dict[str, Any]:
        """Move a call along (ringing, in-progress, completed, busy, no-answer, failed ...)."""
        if status not in CALL_STATUSES:
            raise ValueError(f"unknown call status {status!r}")
        with self._lock:
            call = self.calls[sid]
            self._transition(call, status, duration=duration)
            if answered_by is not None:
                call["answered_by"] = answered_by
            return copy.deepcopy(call)

    def callee(self, number: str, *callees: Callee) -> None:
        """The next calls to ``number`` go as these say, one each, in order; after them,
        calls to it stay queued."""
        with self._lock:
            self.callees.setdefault(number, []).extend(callees)

    def carry(self, simulator: Simulator) -> Simulator:
        """Inbound calls ``simulator`` plays are calls of this account: the REST API finds
        them, and an update with a ``Url`` moves them on live as Twilio does (the current verb
        abandoned, the URL requested, signed, and its TwiML played)."""
        simulator.carrier = self
        return simulator

    def started(self, sid: str, params: dict[str, str], live: Any) -> None:
        """(The simulator) a call it plays begins: an inbound one is in progress at "Twilio"
        from now; either may be updated live."""
        now = rfc2822()
        with self._lock:
            if sid in self.calls:  # an outbound call placed here (``live_outbound``)
                self._carried[sid] = live
                return
            self.calls[sid] = {
                "account_sid": self.account_sid, "answered_by": None, "api_version": API_VERSION,
                "date_created": now, "date_updated": now, "direction": "inbound", "duration": None,
                "end_time": None, "from": params.get("From"), "to": params.get("To"), "parent_call_sid": None,
                "price": None, "price_unit": "USD", "sid": sid, "start_time": None, "status": "queued",
                "uri": f"{self.account_path()}/Calls/{sid}.json",
            }
            self.call_params[sid] = {}
            self._transition(self.calls[sid], "in-progress")
            self._carried[sid] = live

    def ended(self, sid: str) -> None:
        with self._lock:
            self._carried.pop(sid, None)
            if sid in self.calls and self.calls[sid]["direction"] == "inbound":
                self._transition(self.calls[sid], "completed")

    def hold_updates(self) -> threading.Event:
        """Live updates of calls reach them only once the returned event is set (the REST
        answer is not held): a redirect that Twilio acts on late, after the turn ended itself."""
        self._hold_updates = threading.Event()
        return self._hold_updates

    @property
    def redirects(self) -> list[tuple[str, str]]:
        """(call sid, URL) of every live update with a Url, in order."""
        with self._lock:
            return [(r.path.rsplit("/", 1)[-1].removesuffix(".json"), str(r.params.get("Url")))
                    for r in self.requests if r.operation == "update" and r.status == 200 and r.params.get("Url")]

    def hold_creates(self) -> threading.Event:
        """Creates answer only once the returned event is set (the call exists meanwhile)."""
        self._hold = threading.Event()
        return self._hold

    def calls_to(self, number: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(c) for c in self.calls.values() if c["to"] == number]

    async def wait_played(self, sid: str, timeout: float = 30) -> CallResult | None:
        """Wait until the call ``sid`` was played to its end (its last callback sent)."""
        deadline = time.monotonic() + timeout
        while sid not in self.played and sid not in self.play_errors:
            if time.monotonic() > deadline:
                raise TimeoutError(f"call {sid} not played within {timeout}s")
            await asyncio.sleep(0.02)
        return self.played.get(sid)

    @property
    def created_calls(self) -> list[dict[str, Any]]:
        """Params of every successful create, oldest first."""
        with self._lock:
            return [copy.deepcopy(self.call_params[sid]) for sid in self.calls]

    @property
    def last_call(self) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(next(reversed(self.calls.values()), None))

    async def wait_for_request(
        self, operation: str = "create", *, count: int = 1, timeout: float = 5
    ) -> TwilioApiRequest:
        """Wait until ``count`` requests of ``operation`` have been answered; returns the last."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                done = [r for r in self.requests if r.operation == operation and r.status]
            if len(done) >= count:
                return done[count - 1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(done)} {operation} request(s) after {timeout}s")
            await asyncio.sleep(0.01)

    def status_callback_params(
        self, sid: str, status: str | None = None, *, sequence_number: int | None = None
    ) -> dict[str, str]:
        """The form parameters Twilio posts to a call's StatusCallback."""
        with self._lock:
            call = self.calls[sid]
            status = status or call["status"]
            if sequence_number is None:
                sequence_number = self._sequence.get(sid, 0)
                self._sequence[sid] = sequence_number + 1
            params = self._call_webhook_params(call, status)
            params.update(
                {
                    "CallbackSource": "call-progress-events",
                    "SequenceNumber": str(sequence_number),
                    "Timestamp": rfc2822(),
                }
            )
            if call.get("answered_by"):
                params["AnsweredBy"] = call["answered_by"]
            if status in TERMINAL_STATUSES:
                seconds = int(call.get("duration") or 0)
                params["CallDuration"] = str(seconds)
                params["Duration"] = str(math.ceil(seconds / 60))
            return dict(sorted(params.items()))

    async def deliver_status_callback(
        self,
        sid: str,
        status: str | None = None,
        *,
        url: str | None = None,
        sequence_number: int | None = None,
        signed: bool = True,
    ) -> int:
        """POST (or GET, per StatusCallbackMethod) a signed status callback; returns status.

        ``status`` defaults to the call's current status; a terminal status given here is
        applied to the call first (so duration/end_time are consistent).
        """
        with self._lock:
            if status is not None and status != self.calls[sid]["status"]:
                self._transition(self.calls[sid], status)
            created = self.call_params[sid]
            target = url or created.get("StatusCallback")
            method = str(created.get("StatusCallbackMethod") or "POST").upper()
        if not target:
            raise ValueError(f"call {sid} was created without StatusCallback")
        params = self.status_callback_params(sid, status, sequence_number=sequence_number)
        status_code, _ = await self._send_webhook(target, method, params, signed=signed)
        return status_code

    async def deliver_answer(
        self, sid: str, *, answered_by: str | None = None, signed: bool = True
    ) -> tuple[int, str]:
        """The callee picked up: the call goes in-progress and Twilio requests its ``Url``.

        Returns (HTTP status, response body: the TwiML your app answered with).
        """
        with self._lock:
            call = self.calls[sid]
            created = self.call_params[sid]
            target = created.get("Url")
            method = str(created.get("Method") or "POST").upper()
            if not target:
                raise ValueError(f"call {sid} has inline Twiml, nothing to request")
            self._transition(call, "in-progress")
            if answered_by is None and created.get("MachineDetection"):
                answered_by = "human"
            if answered_by is not None:
                call["answered_by"] = answered_by
            params = self._call_webhook_params(call, "in-progress")
            if answered_by is not None:
                params["AnsweredBy"] = answered_by
        return await self._send_webhook(target, method, dict(sorted(params.items())), signed=signed)

    # ------------------------------------------------------------------ internals

    def _call_webhook_params(self, call: dict, status: str) -> dict[str, str]:
        return {
            "AccountSid": call["account_sid"],
            "ApiVersion": API_VERSION,
            "CallSid": call["sid"],
            "CallStatus": status,
            "Called": call["to"],
            "Caller": call["from"],
            "Direction": call["direction"],
            "From": call["from"],
            "To": call["to"],
        }

    def _record_event(self, method: str, url: str, params: dict[str, str], status: int | None,
                      error: str | None = None) -> None:
        sid = params.get("CallSid")
        if not sid:
            return
        with self._lock:
            self.call_events.setdefault(sid, []).append({
                "request": {"method": method, "url": url, "parameters": dict(params)},
                "response": {"response_code": status, "date_created": rfc2822(), "request_duration": 0,
                             **({"error": error} if error else {})},
            })

    async def _send_webhook(
        self, url: str, method: str, params: dict[str, str], *, signed: bool
    ) -> tuple[int, str]:
        try:
            status, body = await self._request_webhook(url, method, params, signed=signed)
        except aiohttp.ClientError as exc:
            self._record_event(method, url, params, None, f"{type(exc).__name__}: {exc}")
            raise
        self._record_event(method, url, params, status)
        return status, body

    async def _request_webhook(
        self, url: str, method: str, params: dict[str, str], *, signed: bool
    ) -> tuple[int, str]:
        headers = {"User-Agent": "TwilioProxy/1.1"}
        async with aiohttp.ClientSession() as http:
            if method == "GET":
                sep = "&" if urlsplit(url).query else "?"
                full = url + sep + urlencode(params)
                if signed:
                    headers[SIGNATURE_HEADER] = sign_twilio_request(self.auth_token, full)
                async with http.get(full, headers=headers) as resp:
                    return resp.status, await resp.text()
            if signed:
                headers[SIGNATURE_HEADER] = sign_twilio_request(self.auth_token, url, params)
            async with http.post(url, data=params, headers=headers) as resp:
                return resp.status, await resp.text()

    def _transition(self, call: dict, status: str, *, duration: int | None = None) -> None:
        now = _now()
        if status in ("ringing", "in-progress") and "_started_at" not in call:
            call["_started_at"] = now.timestamp()
            call["start_time"] = rfc2822(now)
        if status == "in-progress" and "_answered_at" not in call:
            call["_answered_at"] = now.timestamp()
        if status in TERMINAL_STATUSES and call["status"] not in TERMINAL_STATUSES:
            call["end_time"] = rfc2822(now)
            if duration is None:
                answered = status == "completed" and "_answered_at" in call
                duration = int(now.timestamp() - call["_answered_at"]) if answered else 0
            if status == "completed":
                call["price"] = f"-{0.014 * max(1, math.ceil(duration / 60)):.5f}"
        if duration is not None:
            call["duration"] = str(duration)
        call["status"] = status
        call["date_updated"] = rfc2822(now)

    def _take_failure(self, operation: str) -> _Failure | None:
        for rule in self._failures:
            if rule.times > 0 and rule.operation in (operation, "*"):
                rule.times -= 1
                if rule.times == 0:
                    self._failures.remove(rule)
                return rule
        return None

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token
        )

    def _wrap(self, resource: str, handler):
        async def endpoint(request: web.Request) -> web.StreamResponse:
            params = await _read_params(request)
            operation = _operation(resource, request.method)
            record = TwilioApiRequest(
                method=request.method, path=request.path, params=params, operation=operation
            )
            with self._lock:
                self.requests.append(record)
            try:
                record.authorized = self._authorized(request)
                if not record.authorized:
                    raise _TwilioHTTPError(
                        401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
                    )
                account = request.match_info.get("account")
                if account is not None and account != self.account_sid:
                    raise _TwilioHTTPError(
                        404, 20404, f"The requested resource {request.path} was not found"
                    )
                with self._lock:
                    failure = self._take_failure(operation)
                    if failure is not None:
                        headers = {"Retry-After": "1"} if failure.status == 429 else None
                        raise _TwilioHTTPError(
                            failure.status, failure.code, failure.message, headers
                        )
                    response = handler(request, params)
            except _TwilioHTTPError as exc:
                response = exc.response()
            hold = self._hold
            if operation == "create" and response.status == 201 and hold is not None:
                await asyncio.to_thread(hold.wait, 300)  # the call exists; the client waits
            record.status = response.status
            return response

        return endpoint

    def _not_found(self, request: web.Request, params: dict) -> web.Response:
        raise _TwilioHTTPError(404, 20404, f"The requested resource {request.path} was not found")

    def _account(self, request: web.Request, params: dict) -> web.Response:
        if request.method != "GET":
            raise _TwilioHTTPError(405, 20004, "Method not allowed")
        now = rfc2822()
        return web.json_response(
            {
                "auth_token": self.auth_token,
                "date_created": now,
                "date_updated": now,
                "friendly_name": "Gridline test account",
                "owner_account_sid": self.account_sid,
                "sid": self.account_sid,
                "status": "active",
                "subresource_uris": {"calls": f"{self.account_path()}/Calls.json"},
                "type": "Full",
                "uri": f"{self.account_path()}.json",
            }
        )

    def _calls(self, request: web.Request, params: dict) -> web.Response:
        if request.method == "POST":
            return self._create_call(params)
        if request.method == "GET":
            return self._list_calls(params)
        raise _TwilioHTTPError(405, 20004, "Method not allowed")

    def _create_call(self, params: dict) -> web.Response:
        to, from_ = params.get("To"), params.get("From")
        if not to:
            raise _TwilioHTTPError(400, 21201, "No 'To' number is specified")
        if not from_:
            raise _TwilioHTTPError(400, 21213, "No 'From' number is specified")
        url = params.get("Url")
        if not (url or params.get("Twiml") or params.get("ApplicationSid")):
            raise _TwilioHTTPError(400, 21205, "Url parameter is required.")
        for name in ("Url", "StatusCallback", "FallbackUrl"):
            value = params.get(name)
            if value and urlsplit(str(value)).scheme not in ("http", "https"):
                raise _TwilioHTTPError(400, 21205, f"{name} is not a valid URL: {value}")
        for name in ("Method", "StatusCallbackMethod", "FallbackMethod"):
            value = params.get(name)
            if value and str(value).upper() not in ("GET", "POST"):
                raise _TwilioHTTPError(400, 21209, f"{name} must be either GET or POST")
        events = params.get("StatusCallbackEvent") or []
        for event in events:
            if event not in ("initiated", "ringing", "answered", "completed"):
                raise _TwilioHTTPError(400, 21626, f"Invalid StatusCallbackEvent: {event}")
        if params.get("Timeout") is not None:
            try:
                timeout = int(params["Timeout"])
            except ValueError:
                raise _TwilioHTTPError(400, 21210, "Timeout must be an integer") from None
            params["Timeout"] = str(max(1, min(600, timeout)))

        sid = new_sid("CA")
        now = rfc2822()
        base = f"{self.account_path()}/Calls/{sid}"
        call = {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": from_,
            "from_formatted": _format_number(str(from_)),
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": self.phone_number_sid if from_ == self.phone_number else None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {
                "feedback": f"{base}/Feedback.json",
                "user_defined_messages": f"{base}/UserDefinedMessages.json",
                "notifications": f"{base}/Notifications.json",
                "recordings": f"{base}/Recordings.json",
                "streams": f"{base}/Streams.json",
                "payments": f"{base}/Payments.json",
                "user_defined_message_subscriptions": f"{base}/UserDefinedMessageSubscriptions.json",
                "siprec": f"{base}/Siprec.json",
                "events": f"{base}/Events.json",
                "feedback_summaries": f"{self.account_path()}/Calls/FeedbackSummary.json",
                "transcriptions": f"{base}/Transcriptions.json",
            },
            "to": to,
            "to_formatted": _format_number(str(to)),
            "trunk_sid": None,
            "uri": f"{base}.json",
        }
        self.calls[sid] = call
        self.call_params[sid] = dict(params)
        queue = self.callees.get(str(to))
        if queue:
            task = asyncio.get_running_loop().create_task(self._play(sid, queue.pop(0)), name=f"play {sid}")
            self._plays.add(task)
            task.add_done_callback(self._plays.discard)
        return web.json_response(_public(call), status=201)

    def _list_calls(self, params: dict) -> web.Response:
        calls = list(reversed(self.calls.values()))  # newest first, like Twilio
        for name, key in (("To", "to"), ("From", "from"), ("Status", "status")):
            if params.get(name):
                calls = [c for c in calls if c[key] == params[name]]
        if params.get("ParentCallSid"):
            calls = [c for c in calls if c["parent_call_sid"] == params["ParentCallSid"]]
        calls = _by_date(calls, params, "StartTime")
        filters = {k: params[k] for k in ("To", "From", "Status", "ParentCallSid", "StartTime>", "StartTime<",
                                          "StartTime") if params.get(k)}
        path = f"{self.account_path()}/Calls.json"
        return web.json_response(_page("calls", [_public(c) for c in calls], params, path, filters))

    # ------------------------------------------------------------------ playing a call

    async def _cancel_plays(self) -> None:
        for task in list(self._plays):
            task.cancel()
        for task in list(self._plays):
            with contextlib.suppress(BaseException):
                await task

    def _set(self, sid: str, status: str, **kw: Any) -> None:
        with self._lock:
            self._transition(self.calls[sid], status, **kw)

    async def _callback(self, sid: str, status: str, events: set[str], event: str) -> None:
        """A status callback the call asked for (``event``), best effort like Twilio's."""
        with self._lock:
            created = self.call_params[sid]
            target = created.get("StatusCallback")
            method = str(created.get("StatusCallbackMethod") or "POST").upper()
        if not target or event not in events:
            return
        params = self.status_callback_params(sid, status)
        with contextlib.suppress(aiohttp.ClientError):
            await self._send_webhook(target, method, params, signed=True)

    async def _play(self, sid: str, callee: Callee) -> None:
        try:
            self.played[sid] = await self._play_call(sid, callee)
        except asyncio.CancelledError:
            self.play_errors[sid] = "cancelled"
            raise
        except Exception as exc:  # the test reads it (a webhook answered 403, the server was down …)
            self.play_errors[sid] = f"{type(exc).__name__}: {exc}"

    async def _play_call(self, sid: str, callee: Callee) -> CallResult:
        with self._lock:
            created = dict(self.call_params[sid])
            call = self.calls[sid]
            to, from_ = call["to"], call["from"]
        events = set(created.get("StatusCallbackEvent") or ["completed"])
        await asyncio.sleep(0)  # Twilio dials after it has accepted the call

        async def progress(status: str, answered_by: str | None) -> None:
            if answered_by is not None:
                with self._lock:
                    call["answered_by"] = answered_by
            if status != "initiated":
                self._set(sid, status)
            event = {"in-progress": "answered"}.get(status, status if status in ("initiated", "ringing")
                                                   else "completed")
            await self._callback(sid, status, events, event)
            if status == "in-progress":  # Twilio requests the call's Url (recorded in its Events)
                self._record_event("POST", str(created["Url"]), {"CallSid": sid, "CallStatus": status}, 200)

        parts = urlsplit(str(created.get("Url") or ""))
        sim = Simulator(f"{parts.scheme}://{parts.netloc}", self.auth_token, speed=0)
        if self.live_outbound:
            self.carry(sim)
        script = CallScript(from_number=from_, to_number=to, digits=list(callee.digits),
                            turns=[Turn(s, end=callee.end) for s in callee.speech],
                            operator_answers=callee.operator_answers,
                            hangup_after_prompts=callee.hangup_after_prompts, call_sid=sid)
        return await sim.play_outbound(url=str(created.get("Url") or ""), call_sid=sid, from_number=from_,
                                       to_number=to, answer=callee.answer, script=script,
                                       machine_detection=bool(created.get("MachineDetection")), progress=progress,
                                       ring_s=callee.ring_s, account_sid=self.account_sid)

    # ------------------------------------------------------------------ events, messages

    def _events(self, request: web.Request, params: dict) -> web.Response:
        sid = request.match_info["sid"]
        if request.method != "GET":
            raise _TwilioHTTPError(405, 20004, "Method not allowed")
        if sid not in self.calls:
            raise _TwilioHTTPError(404, 20404, f"The requested resource {request.path} was not found")
        events = list(self.call_events.get(sid, []))
        path = f"{self.account_path()}/Calls/{sid}/Events.json"
        return web.json_response(_page("events", events, params, path, {}))

    def _messages(self, request: web.Request, params: dict) -> web.Response:
        if request.method == "POST":
            return self._send_message(params)
        if request.method != "GET":
            raise _TwilioHTTPError(405, 20004, "Method not allowed")
        messages = list(reversed(self.messages.values()))
        for name, key in (("To", "to"), ("From", "from")):
            if params.get(name):
                messages = [m for m in messages if m[key] == params[name]]
        messages = _by_date(messages, params, "DateSent")
        filters = {k: params[k] for k in ("To", "From", "DateSent>", "DateSent<", "DateSent") if params.get(k)}
        path = f"{self.account_path()}/Messages.json"
        return web.json_response(_page("messages", [_public(m) for m in messages], params, path, filters))

    def _send_message(self, params: dict) -> web.Response:
        to, from_, service = params.get("To"), params.get("From"), params.get("MessagingServiceSid")
        if not to:
            raise _TwilioHTTPError(400, 21604, "A 'To' phone number is required.")
        if not (from_ or service):
            raise _TwilioHTTPError(400, 21603, "A 'From' phone number or MessagingServiceSid is required.")
        if not params.get("Body") and not params.get("MediaUrl"):
            raise _TwilioHTTPError(400, 21602, "Message body is required.")
        now = _now()
        sid = new_sid("SM")
        message = {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": params.get("Body"),
            "date_created": rfc2822(now), "date_sent": rfc2822(now), "date_updated": rfc2822(now),
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": from_ or self.phone_number, "messaging_service_sid": service, "num_media": "0",
            "num_segments": str(max(1, math.ceil(len(params.get("Body") or "") / 70))), "price": None,
            "price_unit": "USD", "sid": sid, "status": "queued", "subresource_uris": {},
            "to": to, "uri": f"{self.account_path()}/Messages/{sid}.json", "_sent_at": now.timestamp(),
        }
        self.messages[sid] = message
        return web.json_response(_public(message), status=201)

    def _message(self, request: web.Request, params: dict) -> web.Response:
        message = self.messages.get(request.match_info["sid"])
        if message is None or request.method != "GET":
            raise _TwilioHTTPError(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(_public(message))

    def _forward(self, live: Any, url: str) -> None:
        hold = self._hold_updates
        if hold is None:
            live.redirect(url)
            return

        async def later() -> None:
            await asyncio.to_thread(hold.wait, 300)
            live.redirect(url)

        task = asyncio.get_running_loop().create_task(later(), name="held update")
        self._plays.add(task)
        task.add_done_callback(self._plays.discard)

    def _call(self, request: web.Request, params: dict) -> web.Response:
        sid = request.match_info["sid"]
        call = self.calls.get(sid)
        if call is None:
            raise _TwilioHTTPError(
                404, 20404, f"The requested resource {request.path} was not found"
            )
        if request.method == "GET":
            return web.json_response(_public(call))
        if request.method == "DELETE":
            del self.calls[sid]
            return web.Response(status=204)
        if request.method != "POST":
            raise _TwilioHTTPError(405, 20004, "Method not allowed")
        status = params.get("Status")
        if status is not None and status not in ("canceled", "completed"):
            raise _TwilioHTTPError(400, 20001, f"Invalid Status: {status}")
        redirect = {k: params[k] for k in ("Url", "Twiml", "Method") if params.get(k)}
        if redirect and call["status"] in TERMINAL_STATUSES:
            raise _TwilioHTTPError(400, 21220, "Call is not in-progress. Cannot redirect.")
        if redirect:
            self.call_params[sid].setdefault("redirects", []).append(redirect)
            self.call_params[sid].update(redirect)
            live = self._carried.get(sid)
            if live is not None and redirect.get("Url"):
                self._forward(live, str(redirect["Url"]))
        if status == "canceled" and call["status"] in ("queued", "ringing"):
            self._transition(call, "canceled")
        elif status == "completed" and call["status"] not in TERMINAL_STATUSES:
            self._transition(call, "completed")
        for name in ("StatusCallback", "StatusCallbackMethod"):
            if params.get(name):
                self.call_params[sid][name] = params[name]
        return web.json_response(_public(call))


def _public(call: dict) -> dict:
    return {k: v for k, v in call.items() if not k.startswith("_")}


def _moment(value: str, name: str) -> tuple[datetime | date, bool]:
    """A date filter's value: ``YYYY-MM-DD`` (compared by day) or ``YYYY-MM-DDTHH:MM:SSZ``."""
    try:
        if len(value) == 10:
            return date.fromisoformat(value), True
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC), False
    except ValueError:
        raise _TwilioHTTPError(400, 20001, f"Invalid {name}: {value}") from None


def _at(epoch: float, whole_day: bool) -> datetime | date:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.date() if whole_day else moment


_WHEN = {"StartTime": "_started_at", "DateSent": "_sent_at"}


def _by_date(items: list[dict], params: dict, name: str) -> list[dict]:
    """Twilio's date filters: ``Name>`` (on or after), ``Name<`` (on or before), ``Name``
    (that day); an item without the date never matches one."""
    for suffix, keep in ((">", lambda t, v: t >= v), ("<", lambda t, v: t <= v), ("", lambda t, v: t == v)):
        if params.get(name + suffix):
            bound, whole_day = _moment(params[name + suffix], name + suffix)
            items = [i for i in items if _WHEN[name] in i and keep(_at(i[_WHEN[name]], whole_day), bound)]
    return items


def _page(key: str, items: list, params: dict, path: str, filters: dict) -> dict:
    page_size = max(1, min(1000, int(params.get("PageSize") or 50)))
    page = max(0, int(params.get("Page") or 0))
    start = page * page_size
    chunk = items[start : start + page_size]

    def page_uri(n: int) -> str:
        return f"{path}?{urlencode({**filters, 'PageSize': page_size, 'Page': n})}"

    return {
        key: chunk,
        "end": start + max(0, len(chunk) - 1),
        "first_page_uri": page_uri(0),
        "next_page_uri": page_uri(page + 1) if start + page_size < len(items) else None,
        "page": page,
        "page_size": page_size,
        "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        "start": start,
        "uri": page_uri(page),
    }


def _operation(resource: str, method: str) -> str:
    if resource == "calls":
        return "create" if method == "POST" else "list"
    if resource == "call":
        return {"GET": "fetch", "POST": "update", "DELETE": "delete"}.get(method, "unknown")
    if resource == "messages":
        return "send_sms" if method == "POST" else "list_sms"
    if resource == "message":
        return "fetch_sms"
    return resource


async def _read_params(request: web.Request) -> dict[str, Any]:
    merged: dict[str, list[str]] = {}
    for key, value in request.query.items():
        merged.setdefault(key, []).append(value)
    if request.method in ("POST", "PUT") and request.can_read_body:
        form = await request.post()
        for key, value in form.items():
            merged.setdefault(key, []).append(str(value))
    return {
        key: values if key in _MULTI_VALUED or len(values) > 1 else values[0]
        for key, values in merged.items()
    }


def make_twilio_client(
    fake: FakeTwilio,
    *,
    account_sid: str | None = None,
    auth_token: str | None = None,
    timeout: float = 5,
) -> Client:
    """The real ``twilio.rest.Client``, talking to ``fake`` through ``BaseUrlHttpClient``."""
    http_client = BaseUrlHttpClient(fake.base_url, timeout=timeout)
    if http_client.session is not None:
        http_client.session.trust_env = False  # no HTTP(S)_PROXY detour for 127.0.0.1
    return Client(
        account_sid or fake.account_sid,
        auth_token or fake.auth_token,
        http_client=http_client,
    )


def make_async_twilio_client(
    fake: FakeTwilio,
    *,
    account_sid: str | None = None,
    auth_token: str | None = None,
    timeout: float = 5,
) -> Client:
    """Like :func:`make_twilio_client` for the ``*_async`` methods (aiohttp transport).

    Call inside the event loop; ``await client.http_client.close()`` afterwards.
    """
    return Client(
        account_sid or fake.account_sid,
        auth_token or fake.auth_token,
        http_client=AsyncBaseUrlHttpClient(fake.base_url, timeout=timeout),
    )
