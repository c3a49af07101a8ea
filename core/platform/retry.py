"""One retry policy for the whole code base: what a transient failure is, and how long to
wait before the next try.

A failure is *transient* when the same work, tried again a moment later (on a fresh
database connection), may well succeed: the database connection was lost or refused (a
restarted or failed-over PostgreSQL, ``pg_terminate_backend``), PostgreSQL rolled the
transaction back to break a deadlock or a serialization conflict, SQLite's writer lock was
held too long ("database is locked"), every database thread was busy; a network problem
talking to the Telegram Bot API, Twilio or the media store (a timeout, a reset or refused
connection, an answer 5xx or 429). Anything else (a constraint violation, a refused request,
a bug) fails the same way next time.

The hotline (``ivr.database``, ``ivr.stream``), the bot (``chat.web``) and the job runner
(``core.platform.runner``) all ask ``transient``; the loops are ``tenacity`` retryers built from
``wait_backoff`` (doubling pauses, at least what a server's Retry-After asks for).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from tenacity import RetryCallState, retry_if_exception
from tenacity.retry import retry_base
from tenacity.wait import wait_base

# PostgreSQL's SQLSTATEs worth another try: class 08 (connection exception), class 40
# (transaction rollback: serialization failure, deadlock), the server shutting down or
# starting (57P01 admin shutdown, which pg_terminate_backend sends too; 57P02 crash
# shutdown; 57P03 cannot connect now) and too many connections (53300).
PG_TRANSIENT_CLASSES = ("08", "40")
PG_TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# SQLite's SQLITE_BUSY and SQLITE_LOCKED primary result codes ("database is locked").
SQLITE_BUSY_CODES = frozenset({5, 6})

CHAIN_LIMIT = 16  # links of __cause__/__context__ looked at


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling, nearest first."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < CHAIN_LIMIT:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def transient(exc: BaseException | None) -> bool:
    """Whether another try of the work that raised ``exc`` may succeed (see the module's
    docstring). The whole chain counts: a ``PendingRollbackError`` raised because the
    connection was lost earlier in the transaction is transient too."""
    return any(_transient_itself(e) for e in causes(exc))


def _loaded(module: str, *names: str) -> tuple[type, ...]:
    """The classes ``names`` of ``module`` when it is imported, else none: an error of a
    client library this process never imported cannot be in the chain (so the classifier
    does not import Telegram's, Twilio's and S3's clients into every command)."""
    found = sys.modules.get(module)
    return tuple(getattr(found, name) for name in names) if found is not None else ()


def _transient_itself(e: BaseException) -> bool:
    if getattr(e, "transient", False) is True:  # ours that say so: DatabaseBusy, MediaUnavailable, …
        return True
    if isinstance(e, DBAPIError):
        # SQLAlchemy recognised a dropped connection and invalidated the pool's copy of it.
        return e.connection_invalidated or (e.orig is not None and _transient_itself(e.orig))
    if isinstance(e, DisconnectionError | PoolTimeout):
        return True
    if isinstance(e, _loaded("psycopg", "Error")):
        state = e.sqlstate
        if state is None:  # raised by the client: the connection failed or was lost
            return isinstance(e, _loaded("psycopg", "OperationalError"))
        return state.startswith(PG_TRANSIENT_CLASSES) or state in PG_TRANSIENT_STATES
    if isinstance(e, sqlite3.OperationalError):
        code = getattr(e, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in SQLITE_BUSY_CODES
        return "locked" in str(e)
    if isinstance(e, _loaded("telegram.error", "RetryAfter")):
        return True
    if isinstance(e, _loaded("telegram.error", "NetworkError")):  # PTB's timeouts, resets and 5xx
        return not isinstance(e, _loaded("telegram.error", "BadRequest"))  # a NetworkError too
    if isinstance(e, _loaded("twilio.base.exceptions", "TwilioRestException") + _loaded("aiohttp", "ClientResponseError")):
        return _status_transient(e.status)
    if isinstance(e, _loaded("aiohttp", "ClientConnectionError") + _loaded("requests", "ConnectionError", "Timeout")):
        return True
    if isinstance(e, _loaded("botocore.exceptions", "ClientError")):
        return _status_transient(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    if isinstance(e, _loaded("botocore.exceptions", "ConnectionError", "HTTPClientError")):
        return True
    return isinstance(e, TimeoutError | ConnectionError)  # socket timeouts, resets, refusals


def _status_transient(status: int | None) -> bool:
    return status is not None and (status == 429 or 500 <= status <= 599)


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds a server asked us to wait before the next try (Telegram's ``RetryAfter``, a
    ``Retry-After`` header on an HTTP answer), or None when none did."""
    for e in causes(exc):
        if isinstance(e, _loaded("telegram.error", "RetryAfter")):
            with warnings.catch_warnings():  # PTB 22 warns that the int will become a timedelta
                warnings.simplefilter("ignore")
                value = e.retry_after
            return value.total_seconds() if isinstance(value, timedelta) else float(value)
        headers: Any = None
        if isinstance(e, _loaded("aiohttp", "ClientResponseError")):
            headers = e.headers
        elif isinstance(e, _loaded("botocore.exceptions", "ClientError")):
            headers = e.response.get("ResponseMetadata", {}).get("HTTPHeaders")
        elif isinstance(e, _loaded("requests", "HTTPError")) and e.response is not None:
            headers = e.response.headers
        seconds = _header_seconds(headers)
        if seconds is not None:
            return seconds
        if isinstance(getattr(e, "retry_after", None), int | float):  # ours that carry one
            return float(e.retry_after)
    return None


def _header_seconds(headers: Any) -> float | None:
    """A ``Retry-After`` header: delay seconds, or an HTTP date."""
    if not headers:
        return None
    value = None
    for name in ("Retry-After", "retry-after"):
        value = headers.get(name)
        if value:
            break
    if not value:
        return None
    value = str(value).strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class wait_backoff(wait_base):  # noqa: N801 (named like tenacity's own waits)
    """Pauses that start at ``first`` seconds and double up to ``longest``; when the failure
    carries a server's Retry-After, at least that."""

    def __init__(self, first: float, longest: float):
        self.first = first
        self.longest = longest

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.pause(retry_state.attempt_number, _error_of(retry_state))

    def pause(self, attempt: int, error: BaseException | None = None) -> float:
        """The pause after failed attempt number ``attempt`` (1 for the first)."""
        doubled = min(self.first * 2 ** max(attempt - 1, 0), self.longest)
        asked = retry_after(error)
        return max(doubled, asked) if asked is not None else doubled


def _error_of(retry_state: RetryCallState) -> BaseException | None:
    outcome = retry_state.outcome
    return outcome.exception() if outcome is not None and outcome.failed else None


retry_if_transient = retry_if_exception(transient)


def log_retry(logger: logging.Logger, what: Callable[[RetryCallState], str],
              level: int | None = None) -> Callable[[RetryCallState], None]:
    """A ``before_sleep`` hook: one line naming the work (``what``), the error and the pause,
    without a stack; at WARNING for a transient error (it is expected to pass), at ERROR for
    another (unless ``level`` says)."""

    def hook(retry_state: RetryCallState) -> None:
        error = _error_of(retry_state)
        chosen = level if level is not None else logging.WARNING if transient(error) else logging.ERROR
        logger.log(chosen, "%s failed (%s); trying again in %.2f s (attempt %d)", what(retry_state),
                   short(error), retry_state.upcoming_sleep, retry_state.attempt_number + 1)

    return hook


class retry_unless_set(retry_base):  # noqa: N801 (named like tenacity's own predicates)
    """No further try once ``event`` is set (the process is stopping)."""

    def __init__(self, event: asyncio.Event | threading.Event):
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self.event.is_set()


def short(exc: BaseException | None) -> str:
    """An error in one line of at most 200 characters, for a log line."""
    if exc is None:
        return "no error"
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
