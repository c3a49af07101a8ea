"""What Gridline asks of Twilio's REST API, through the real ``twilio`` client: place a
follow-up call, find the calls already placed for one (after a process died between
``calls.create`` and recording it), read a call's status, send a progress SMS and find
one already sent.

The REST base is ``GRIDLINE_TWILIO_API_URL`` when set (``ivr.twilio_http``): a local fake
in the tests, a Twilio-compatible provider in production. Every method is synchronous
(``requests``); callers run them in a thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from ivr.twilio_http import AsyncBaseUrlHttpClient, http_client_from_settings

log = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# Calls whose record lags behind: a call created a little before the moment we wrote down
# (clocks of two machines) still counts.
CLOCK_SKEW = timedelta(minutes=2)


def missing_credentials(settings: Any, *, sms: bool = False) -> str | None:
    """Why this process cannot use Twilio (the settings to set), or ``None``."""
    missing = [name for name, value in (("GRIDLINE_TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                                        ("GRIDLINE_TWILIO_AUTH_TOKEN", settings.twilio_auth_token)) if not value]
    if not settings.hotline_number and not (sms and settings.twilio_messaging_service_sid):
        missing.append("GRIDLINE_HOTLINE_NUMBER" if not sms else
                       "GRIDLINE_HOTLINE_NUMBER or GRIDLINE_TWILIO_MESSAGING_SERVICE_SID")
    if not missing:
        return None
    return f"no Twilio credentials ({', '.join(missing)} not set)"


@dataclass(frozen=True)
class PlaceCall:
    to: str  # E.164
    from_: str
    url: str  # the call's TwiML, with the attempt's token
    status_callback: str  # with the same token
    timeout_s: int
    machine_detection: bool


@dataclass(frozen=True)
class CallInfo:
    sid: str
    status: str
    answered_by: str | None = None
    duration: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


@dataclass
class FoundCalls:
    """Calls placed to a number since a moment: ``ours`` carries our token in a URL Twilio
    requested for it; ``unattributed`` have made no request yet (still queued at Twilio),
    so nothing tells whose they are."""

    ours: CallInfo | None = None
    unattributed: list[CallInfo] = field(default_factory=list)


class LiveCalls:
    """Calls in progress, changed through the REST API without a thread: the ``twilio``
    client on its aiohttp transport (``*_async`` methods). Make it inside the running event
    loop and ``close()`` it when done."""

    def __init__(self, account_sid: str, auth_token: str, *, api_url: str = "", timeout: float = 2.0):
        http = AsyncBaseUrlHttpClient(api_url, timeout=timeout) if api_url else AsyncTwilioHttpClient(timeout=timeout)
        self.client = Client(account_sid, auth_token, http_client=http)

    async def redirect(self, sid: str, url: str) -> None:
        """Move a call in progress to ``url`` now (Twilio abandons the verb it is on and
        requests ``url``, signed, with POST): how the hotline ends a turn on our own
        end-of-speech detection instead of waiting for <Record>'s quiet."""
        await self.client.calls(sid).update_async(url=url, method="POST")

    async def close(self) -> None:
        await self.client.http_client.close()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _info(call: Any) -> CallInfo:
    return CallInfo(call.sid, str(call.status or ""), call.answered_by, call.duration)


class TwilioApi:
    """The account's REST API (``Client`` with the configurable base URL)."""

    def __init__(self, account_sid: str, auth_token: str, *, api_url: str = "", timeout: float = 15.0):
        self.client = Client(account_sid, auth_token, http_client=http_client_from_settings(api_url, timeout=timeout))

    @classmethod
    def from_settings(cls, settings: Any) -> TwilioApi:
        return cls(settings.twilio_account_sid, settings.twilio_auth_token, api_url=settings.twilio_api_url)

    # -- calls ------------------------------------------------------------------------------

    def place_call(self, call: PlaceCall) -> str:
        """``calls.create``; returns the CallSid. Twilio requests ``url`` when the callee
        answers (with ``AnsweredBy`` under machine detection) and posts the call's progress
        to ``status_callback``; "initiated" is asked for so that a request carrying the token
        exists as soon as Twilio dials (see ``find_calls``)."""
        extra = {"machine_detection": "Enable"} if call.machine_detection else {}
        created = self.client.calls.create(
            to=call.to, from_=call.from_, url=call.url, method="POST",
            status_callback=call.status_callback, status_callback_method="POST",
            status_callback_event=["initiated", "answered", "completed"],
            timeout=call.timeout_s, **extra)
        return created.sid

    def call_info(self, sid: str) -> CallInfo | None:
        """The call's status now; ``None`` when Twilio has no such call."""
        try:
            return _info(self.client.calls(sid).fetch())
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise

    def find_calls(self, *, to: str, from_: str, since: datetime, token: str) -> FoundCalls:
        """Calls from ``from_`` to ``to`` created since ``since`` (naive UTC): the one whose
        requests carry ``token`` (Twilio's Call Events list every request it made for a
        call, URL included), and those that made none yet."""
        after = _aware(since) - CLOCK_SKEW
        seen: dict[str, Any] = {}
        # Calls that started (were dialled) since then, and calls still waiting in the
        # account's queue (no start time yet: Twilio queues calls beyond the calls per second).
        for call in self.client.calls.list(to=to, from_=from_, start_time_after=after, limit=100):
            seen[call.sid] = call
        for call in self.client.calls.list(to=to, from_=from_, status="queued", limit=100):
            seen[call.sid] = call
        found = FoundCalls()
        for call in seen.values():
            if call.date_created is not None and call.date_created < after:
                continue
            urls = [str((event.request or {}).get("url") or "") for event in self.client.calls(call.sid).events.list(limit=50)]
            if any(token in url for url in urls):
                found.ours = _info(call)
                return found
            if not urls:
                found.unattributed.append(_info(call))
        return found

    # -- messages -----------------------------------------------------------------------------

    def send_sms(self, *, to: str, body: str, from_: str = "", messaging_service_sid: str = "") -> str:
        """``messages.create`` from the Messaging Service when one is set, else from ``from_``."""
        sender = {"messaging_service_sid": messaging_service_sid} if messaging_service_sid else {"from_": from_}
        return self.client.messages.create(to=to, body=body, **sender).sid

    def find_sms(self, *, to: str, since: datetime, body: str) -> str | None:
        """An SMS with this body sent to ``to`` since ``since`` (a send that was not recorded)."""
        after = _aware(since) - CLOCK_SKEW
        for message in self.client.messages.list(to=to, date_sent_after=after, limit=100):
            if message.body == body:
                return message.sid
        return None
