"""``gridline simulate-survey``: Twilio and the resident for the follow-up calls due now,
against a running server, without a Twilio account.

The command takes the due ``survey_phone`` jobs itself and runs the same handler the
server runs (``ivr.survey_jobs.SurveyJobs``) with ``SimulatedTwilio`` in place of the REST
client: a call "placed" is played at once, as Twilio would play it, against the server's
webhooks (signed status callbacks, the answer URL with ``AnsweredBy``) and by a resident
who answers, presses the given keys and says a WAV (``ivr.simulator``). The server itself
must not place the calls (no Twilio credentials: its survey jobs are paused).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from ivr.simulator import CallResult, CallScript, Simulator
from ivr.twilio_api import CallInfo, FoundCalls, PlaceCall

TERMINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


@dataclass
class SimulatedTwilio:
    """Stands in for ``ivr.twilio_api.TwilioApi``: calls are played at once on ``loop``."""

    simulator: Simulator
    loop: asyncio.AbstractEventLoop
    script: CallScript
    answer: str = "human"  # human, machine, busy, no-answer, failed
    results: dict[str, CallResult] = field(default_factory=dict)
    statuses: dict[str, CallInfo] = field(default_factory=dict)
    plays: list[Any] = field(default_factory=list)

    def place_call(self, call: PlaceCall) -> str:
        """Called from the handler's worker thread, like the REST client."""
        sid = "CA" + uuid.uuid4().hex
        self.statuses[sid] = CallInfo(sid, "queued")
        self.plays.append(asyncio.run_coroutine_threadsafe(self._play(sid, call), self.loop))
        return sid

    async def _play(self, sid: str, call: PlaceCall) -> None:
        async with aiohttp.ClientSession() as http:
            sequence = 0

            async def progress(status: str, answered_by: str | None) -> None:
                nonlocal sequence
                self.statuses[sid] = CallInfo(sid, status, answered_by)
                params = {"AccountSid": Simulator.ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": sid,
                          "CallStatus": status, "Direction": "outbound-api", "From": call.from_, "To": call.to,
                          "Called": call.to, "Caller": call.from_, "CallbackSource": "call-progress-events",
                          "SequenceNumber": str(sequence)}
                sequence += 1
                if answered_by:
                    params["AnsweredBy"] = answered_by
                if status in TERMINAL:
                    params["CallDuration"] = "0"
                await self.simulator.post(http, call.status_callback, params, CallResult(sid))

            self.results[sid] = await self.simulator.play_outbound(
                url=call.url, call_sid=sid, from_number=call.from_, to_number=call.to, answer=self.answer,
                script=self.script, machine_detection=call.machine_detection, progress=progress)

    async def finished(self) -> None:
        """Wait until every call placed so far has been played to its end."""
        for play in list(self.plays):
            await asyncio.wrap_future(play)

    def find_calls(self, *, to: str, from_: str, since: datetime, token: str) -> FoundCalls:
        return FoundCalls()  # this stand-in placed none before it started

    def call_info(self, sid: str) -> CallInfo | None:
        return self.statuses.get(sid)
