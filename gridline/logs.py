"""How the server's log lines look: text for people, or one JSON object per line for log
shippers (``GRIDLINE_LOG_FORMAT=json``). Either way every line carries the request id and
the call id it was written for (``core.platform.logcontext``), when there is one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from core.platform import logcontext

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"
FORMATS = ("text", "json")


class ContextFilter(logging.Filter):
    """Writes ``request_id`` and ``call_id`` on every record (``None`` when there is none),
    and ``context``, the two as text for the text format. A value already on the record
    (the access log passes the request's own) is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = logcontext.current()
        for name in ("request_id", "call_id"):
            if getattr(record, name, None) is None:
                setattr(record, name, ids.get(name))
        shown = [f"{label}={value}" for label, value in (("req", record.request_id), ("call", record.call_id))
                 if value]
        record.context = f" [{' '.join(shown)}]" if shown else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, pid, the
    request and call ids when set, and the exception's traceback when there is one. The
    message's own line breaks are escaped, so a line is always one record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        for name in ("request_id", "call_id"):
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(log_format: str = "text", level: int = logging.INFO, *, with_process: bool = False) -> logging.Handler:
    """The root logger writes to stderr in ``log_format`` (``text`` or ``json``), with the
    request and call ids. Replaces handlers an earlier call installed, so it may be called
    again (tests); returns the handler."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    text_format = TEXT_FORMAT.replace("%(name)s", "[%(process)d] %(name)s") if with_process else TEXT_FORMAT
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    handler._gridline = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_gridline", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # a library's warning is a record too, not a bare line
    logging.getLogger("botocore").setLevel(logging.WARNING)  # it says where it found credentials, at INFO
    return handler
