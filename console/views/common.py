"""What the page modules share: permission checks, forms, keyset cursors, audit rows."""

from __future__ import annotations

import base64
import functools
from datetime import datetime

from aiohttp import web

from console.auth import client_address
from console.web import lang, principal, render  # noqa: F401  (re-exported for the pages)
from core.errors import InvalidInput
from core.people import audit


def needs_page(page: str):  # noqa: ANN201
    """The handler opens only for roles whose rules list ``page``."""

    def wrap(handler):  # noqa: ANN001, ANN202
        @functools.wraps(handler)
        async def inner(request: web.Request) -> web.StreamResponse:
            p = principal(request)
            if p is None or not p.may_open(page):
                raise web.HTTPForbidden()
            return await handler(request)

        return inner

    return wrap


async def form(request: web.Request) -> dict[str, str]:
    data = await request.post()
    return {k: v.strip() for k, v in data.items() if isinstance(v, str)}


def audit_view(session, request_info: tuple[str, str], action: str, target_type: str, target_id: object,  # noqa: ANN001
               detail: dict | None = None) -> None:
    actor, remote = request_info
    audit.record(session, actor=actor, action=action, target_type=target_type, target_id=target_id,
                 detail=detail, remote=remote)


def who(request: web.Request) -> tuple[str, str]:
    """(actor, remote address) for audit rows written in a worker thread."""
    p = principal(request)
    return (p.actor if p else "console:?", client_address(request))


# Keyset pagination: the page after (time, id). Opaque to people, checked when read.

def encode_cursor(at: datetime | None, row_id: int) -> str:
    raw = f"{at.isoformat() if at else ''}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime | None, int] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, row_id = raw.split("|")
        return (datetime.fromisoformat(at) if at else None), int(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("this page link is damaged; start the list again",
                           code="console.damaged_link") from exc
