"""The access log of ``gridline serve``: the path and a redacted query, never the query as sent.

A console phone search (``?phone=139…``), a survey link's token (``?t=…``) and the text of a
search are personal data or secrets; an access log is kept longer and read by more people
than the database. So the values of keys that carry them are written as ``***`` (the key
stays, so the log still says what was asked), and so is any value that looks like a phone
number, an ID number or an e-mail address whatever its key. A value that is itself a path
with a query (the login page's ``next=``) has its query redacted the same way.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, quote

from aiohttp.abc import AbstractAccessLogger

from gridline.metrics import REQUEST_ID

MASK = "***"
# Keys whose values are personal data or secrets, whatever they look like (lower case).
SECRET_KEYS = frozenset({
    "phone", "t", "token", "text", "api_key", "key", "password", "secret", "signature", "sig",
    "name", "email", "address", "address_string", "description", "first_name", "last_name",
})
# Seven or more digits, possibly spelt with spaces, dashes, dots or brackets (139-1234-5678,
# +86 139 1234 5678, 350499199001011234, 35049919900101123X): a phone or ID number.
_LONG_NUMBER = re.compile(r"\d(?:[\s\-.()/]*\d){6,}")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?$")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")


def _value(key: str, value: str) -> str:
    if key.lower() in SECRET_KEYS:
        return MASK
    if "?" in value:  # a link inside the query (next=/console/search?phone=…)
        path, _, query = value.partition("?")
        return f"{path}?{redact_query(query)}"
    if _EMAIL.search(value) or (_LONG_NUMBER.search(value) and not _ISO_DATE.match(value)):
        return MASK
    return value


def redact_query(query_string: str) -> str:
    """``query_string`` with personal values replaced by ``***``; keys and order kept."""
    if not query_string:
        return ""
    parts = []
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        shown = _value(key, value)
        parts.append(f"{quote(key, safe='')}={shown if shown == MASK else quote(shown, safe='/:,?=*')}")
    return "&".join(parts)


def redacted_target(raw_path: str) -> str:
    """The request target as the log shows it: its path, and its query redacted."""
    path, sep, query = raw_path.partition("?")
    if not sep:
        return path
    return f"{path}?{redact_query(query)}"


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log line (address, request line, status, size, seconds, user agent)
    with the query redacted; the referrer is left out, since it is another page's query."""

    def log(self, request, response, time: float) -> None:  # noqa: ANN001
        if not self.logger.isEnabledFor(logging.INFO):
            return
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        # The request id from the request itself; the call id (a Twilio webhook's CallSid)
        # from the request's context, where the webhook put it (gridline.logs adds both).
        self.logger.info('%s "%s %s %s" %s %s %.3fs "%s"', request.remote or "-", request.method,
                         redacted_target(request.raw_path), version, response.status,
                         response.body_length, time, request.headers.get("User-Agent", "-"),
                         extra={"request_id": request.get(REQUEST_ID)})
