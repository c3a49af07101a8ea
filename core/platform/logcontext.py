"""Which request or call a log line belongs to.

A context variable each: the composition root's middleware sets the request id for every
HTTP request, the hotline sets the call id (Twilio's CallSid) in its webhooks and on the
Media Streams socket. Tasks started from there inherit them, and a logging filter
(``gridline.logs``) writes them on every record, so one grep (or one query in a log
shipper) finds everything that happened for one caller across webhooks, the socket and
the instances that served them.
"""

from __future__ import annotations

import re
from contextvars import ContextVar

# What an id may look like (a CallSid is CA and 32 hex digits; a request id from a proxy is
# often a UUID): anything else, a line break above all, could forge log lines, so it is
# not taken.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

request_id: ContextVar[str | None] = ContextVar("gridline_request_id", default=None)
call_id: ContextVar[str | None] = ContextVar("gridline_call_id", default=None)


def acceptable(value: str | None) -> bool:
    """Whether ``value`` may be written into a log line as an id."""
    return bool(value) and _ID.fullmatch(value) is not None


def bind_request(value: str | None) -> None:
    """The request this task (and the tasks it starts) works for."""
    request_id.set(value if acceptable(value) else None)


def bind_call(call_sid: str | None) -> None:
    """The call this task (and the tasks it starts) works for."""
    call_id.set(call_sid if acceptable(call_sid) else None)


def current() -> dict[str, str]:
    """The ids set here and now, by name (only those that are set)."""
    found = {"request_id": request_id.get(), "call_id": call_id.get()}
    return {name: value for name, value in found.items() if value}
