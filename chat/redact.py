"""Keep the bot's token out of every log line.

The Bot API puts the token in the URL path (``…/bot<token>/sendMessage``,
``…/file/bot<token>/photos/…``), and httpx logs every request URL at INFO; PTB, httpcore
and our own exceptions can carry it too. ``install(token, …)`` registers the secrets and,
once per process, makes every log record redact them as it is created (message, arguments
and the rendered traceback), whichever logger made it and whichever handler writes it.
The same filter also sits on the root logger's handlers and on the httpx, httpcore and
telegram loggers, in case something later swaps the record factory.
"""

from __future__ import annotations

import logging
import threading
import traceback
from urllib.parse import quote

MASK = "<redacted>"
WATCHED_LOGGERS = ("httpx", "httpcore", "telegram", "telegram.ext", "aiohttp", "chat")


class SecretRedactor(logging.Filter):
    """Replaces registered secrets in a log record; never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, *secrets: str) -> None:
        with self._lock:
            found = set(self._secrets)
            for secret in secrets:
                for form in _forms(secret):
                    found.add(form)
            # Longest first, so a token is masked whole before its secret half is looked for.
            self._secrets = tuple(sorted(found, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        self.scrub(record)
        return True

    def scrub(self, record: logging.LogRecord) -> None:
        if not self._secrets or getattr(record, "_gridline_redacted", False):
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let logging report it as usual
            return
        clean = self.redact(message)
        if clean != message:  # otherwise the record keeps its template and arguments
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        record._gridline_redacted = True


def _forms(secret: str) -> list[str]:
    """The secret as written, URL-encoded, and (for a bot token ``<id>:<key>``) the key
    alone: the bot id is public, the key is what must not leak."""
    secret = (secret or "").strip()
    if len(secret) < 8:
        return []
    forms = [secret, quote(secret, safe="")]
    if ":" in secret:
        key = secret.split(":", 1)[1]
        if len(key) >= 8:
            forms.append(key)
    return [f for f in forms if f]


REDACTOR = SecretRedactor()
_installed = False
_install_lock = threading.Lock()


def install(*secrets: str) -> SecretRedactor:
    """Register ``secrets`` and make sure every log record is redacted (idempotent)."""
    global _installed
    REDACTOR.add(*secrets)
    with _install_lock:
        if not _installed:
            previous = logging.getLogRecordFactory()

            def factory(*args, **kwargs) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                REDACTOR.scrub(record)
                return record

            logging.setLogRecordFactory(factory)
            for name in WATCHED_LOGGERS:
                logging.getLogger(name).addFilter(REDACTOR)
            _installed = True
        for handler in logging.getLogger().handlers:  # the handlers there are now
            if REDACTOR not in handler.filters:
                handler.addFilter(REDACTOR)
    return REDACTOR
