"""Admission: how many requests one serving process answers at once.

A request is refused at once with 503 and ``Retry-After`` when taking it would make the
requests already in progress wait too long: Telegram, Twilio and Open311 clients all send it
again, and the requests admitted keep their speed instead of all joining a queue that grows
to seconds. A refused request has not reached a handler, so nothing of it was written.

How many is "too many" follows what this process achieves (Little's law): requests in
progress ≈ requests finished per second of busy time × the time each takes, so at most
``rate × [admission] target_seconds`` are admitted — on a quiet 2-core machine dozens, on
one that other work starves a handful — never fewer than ``min_in_flight`` nor more than
``max_in_flight``. The rate is measured over the time the process had requests in hand, so an
idle process does not mistake quiet for slowness.

The hotline never refuses a caller: the Twilio webhooks (``exempt_paths``) are neither
counted nor refused (a saturated recogniser makes a call recording-only instead), nor are
Telegram's webhook (it bounds its own connections), the health checks and ``/metrics``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from console import open311

log = logging.getLogger(__name__)

WINDOW_SECONDS = 0.5  # how often the rate is measured again
SMOOTHING = 0.5  # weight of the newest measurement in the rate
MIN_BUSY_SECONDS = 0.05  # a window busier than this measures the rate; a quieter one keeps it


@dataclass
class Admission:
    max_in_flight: int
    retry_after_seconds: int = 1
    exempt_paths: tuple[str, ...] = ()
    target_seconds: float = 0.0  # 0: the fixed limit max_in_flight alone
    min_in_flight: int = 1
    clock: Callable[[], float] = time.monotonic
    in_flight: int = 0  # admitted requests being answered now
    refused: int = 0  # requests answered 503 at the door, since the process started
    rate: float = 0.0  # requests finished per busy second (0: not measured yet)
    _window_start: float = field(default=0.0, repr=False)
    _window_done: int = field(default=0, repr=False)
    _busy: float = field(default=0.0, repr=False)  # busy seconds in this window so far
    _busy_since: float | None = field(default=None, repr=False)

    @classmethod
    def from_rules(cls, rules: dict) -> Admission:
        section = rules["admission"]
        return cls(max_in_flight=int(section["max_in_flight"]),
                   retry_after_seconds=max(1, int(section["retry_after_seconds"])),
                   exempt_paths=tuple(str(p) for p in section["exempt_paths"]),
                   target_seconds=float(section["target_seconds"]),
                   min_in_flight=max(1, int(section["min_in_flight"])))

    def exempt(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.exempt_paths)

    @property
    def limit(self) -> int:
        """Requests admitted at once now."""
        if self.target_seconds <= 0 or self.rate <= 0:
            return self.max_in_flight
        return max(self.min_in_flight, min(self.max_in_flight, int(self.rate * self.target_seconds)))

    def admit(self) -> bool:
        """Take one request in, or say it must be refused."""
        if self.max_in_flight > 0 and self.in_flight >= self.limit:
            self.refused += 1
            return False
        if self.in_flight == 0:
            self._busy_since = self.clock()
            if not self._window_start:  # the first request starts the first window
                self._window_start = self._busy_since
        self.in_flight += 1
        return True

    def finish(self) -> None:
        """An admitted request has been answered (or failed)."""
        now = self.clock()
        self.in_flight -= 1
        self._window_done += 1
        if self.in_flight == 0 and self._busy_since is not None:
            self._busy += now - self._busy_since
            self._busy_since = None
        if now - self._window_start < WINDOW_SECONDS:
            return
        busy = self._busy + (now - self._busy_since if self._busy_since is not None else 0.0)
        if busy >= MIN_BUSY_SECONDS:
            measured = self._window_done / busy
            self.rate = measured if self.rate <= 0 else SMOOTHING * measured + (1 - SMOOTHING) * self.rate
        self._window_start, self._window_done, self._busy = now, 0, 0.0
        if self._busy_since is not None:
            self._busy_since = now

    def refusal(self, request: web.Request) -> web.Response:
        """503 with Retry-After, in the shape the caller reads: Open311 clients get the
        GeoReport error list (JSON or XML, as asked), everyone else a small JSON object."""
        seconds = str(self.retry_after_seconds)
        detail = f"the server is busy; please try again in {seconds} s"
        if request.path.startswith(open311.PREFIX + "/"):
            fmt = "xml" if request.path.endswith(".xml") else "json"
            refused = open311.error(fmt, 503, detail)
        else:
            refused = web.json_response({"status": "busy", "detail": detail}, status=503)
        refused.headers["Retry-After"] = seconds
        return refused

    @web.middleware
    async def middleware(self, request: web.Request, handler):  # noqa: ANN001, ANN201
        if self.max_in_flight <= 0 or self.exempt(request.path):
            return await handler(request)
        if not self.admit():
            if self.refused == 1 or self.refused % 1000 == 0:  # a flood must not flood the log too
                log.warning("%d requests in progress (limit %d now, %.0f/s): refusing %s %s with 503 "
                            "(%d refused so far)", self.in_flight, self.limit, self.rate, request.method,
                            request.path, self.refused)
            return self.refusal(request)
        try:
            return await handler(request)
        finally:
            self.finish()
