"""Admission: how many requests one serving process answers at once.

Beyond ``[admission] max_in_flight`` requests in progress, one more is refused at once with
503 and ``Retry-After`` instead of joining a queue that grows to seconds: Telegram, Twilio
and Open311 clients all send it again, and the requests already admitted keep their speed.
A refused request has not reached a handler, so nothing of it was written.

The hotline never refuses a caller: the Twilio webhooks (``exempt_paths``) are neither
counted nor refused (a saturated recogniser makes a call recording-only instead), nor are
the health checks and ``/metrics``, which a balancer and a scraper must always reach.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger(__name__)


@dataclass
class Admission:
    max_in_flight: int
    retry_after_seconds: int = 1
    exempt_paths: tuple[str, ...] = ()
    in_flight: int = 0  # admitted requests being answered now
    refused: int = 0  # requests answered 503 at the door, since the process started

    @classmethod
    def from_rules(cls, rules: dict) -> Admission:
        section = rules["admission"]
        return cls(max_in_flight=int(section["max_in_flight"]),
                   retry_after_seconds=max(1, int(section["retry_after_seconds"])),
                   exempt_paths=tuple(str(p) for p in section["exempt_paths"]))

    def exempt(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.exempt_paths)

    @web.middleware
    async def middleware(self, request: web.Request, handler):  # noqa: ANN001, ANN201
        if self.max_in_flight <= 0 or self.exempt(request.path):
            return await handler(request)
        if self.in_flight >= self.max_in_flight:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:  # a flood must not flood the log too
                log.warning("%d requests in progress: refusing %s %s with 503 (%d refused so far)",
                            self.in_flight, request.method, request.path, self.refused)
            return web.json_response({"status": "busy", "detail": "please try again"}, status=503,
                                     headers={"Retry-After": str(self.retry_after_seconds)})
        self.in_flight += 1
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1
