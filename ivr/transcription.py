"""Deferred recognition: ``transcribe_recording`` jobs.

A hotline case filed before its words were recognised (no speech model in the process,
every live recognition slot busy, or recognition slower than the caller could wait)
carries the flag ``transcript_pending`` and a job queued in the same transaction. Any
Gridline process that shares the database and the data directory and has a speech model
takes such jobs: ``gridline serve`` (one at a time, when a recognition slot is free, so
live calls come first) and ``gridline jobs --speech`` (only these jobs, as many at once
as its ``--concurrency``) — that is how a busy district adds recognition on a second machine.

The words go to the case through ``core.actions.set_transcript``. When the live
recogniser of the same turn is still running in this process, the job waits for it rather
than recognising the audio twice.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from core.places.indexes import indexes_for
from core.platform.media import LocalStore, MediaMissing, MediaStore, fetched
from core.platform.models import Job
from core.platform.runner import JobRunner
from core.platform.storage import resolve, stored_path
from ivr import calls
from ivr.address import file_phrase_pass, hear_address
from ivr.calls import SPEECH_JOB_KINDS, TRANSCRIBE_JOB
from ivr.config import FlowConfig
from ivr.database import run_db
from ivr.stream import Db, RecognitionSlots, StreamRegistry
from ivr.survey_calls import COMMENT_JOB
from ivr.survey_jobs import CommentTranscriber
from speech_models.audio import AudioError, read_wav

log = logging.getLogger(__name__)

__all__ = ["SPEECH_JOB_KINDS", "TRANSCRIBE_JOB", "Transcriptions", "run_speech_jobs", "speech_runners"]

LIVE_WAIT_S = 600.0  # a live recogniser still working on the same turn: wait this long for it


class Transcriptions:
    """The handler of ``transcribe_recording`` jobs."""

    def __init__(self, engine: Engine, pool: Any, *, data_dir: Path, db: Db, slots: RecognitionSlots,
                 registry: StreamRegistry | None = None, flow: FlowConfig | None = None,
                 store: MediaStore | None = None):
        self.engine = engine
        self.pool = pool
        self.data_dir = Path(data_dir)
        # Recordings are read from the spool while it has them, else from the media store.
        self.store = store or LocalStore(self.data_dir)
        self.db = db
        self.slots = slots
        self.registry = registry
        self.done = 0
        address = (flow or FlowConfig.load())["address"]  # the hotline's address settings
        self.address_min_confidence = float(address["min_confidence"])
        self.phrase_pass_s = float(address["phrase_pass_s"]) * 10  # nobody is waiting on the line

    async def handle(self, job: Job) -> None:
        payload = job.payload or {}
        case_id = int(payload["case_id"])
        call_sid = payload.get("call_sid")
        if not await self.db(calls.transcript_pending, self.engine, case_id):
            return  # recognised already (a second run of the job)
        heard = {}
        for part in ("petition", "address"):
            if payload.get(part, {}).get("parts"):  # a petition the caller went on with over its read-back
                heard[part] = joined(payload[part]["segment"],
                                     [await self.recognise(call_sid, p) for p in payload[part]["parts"]])
            elif payload.get(part):
                heard[part] = await self.recognise(call_sid, payload[part])
        if heard.get("address", {}).get("text"):
            heard["address"]["text"] = await self.settle_address(heard["address"]["text"], payload["address"])
        written = await self.db(calls.apply_transcript, self.engine, case_id, call_sid, heard)
        self.done += 1
        if written:
            text = (heard.get("petition") or {}).get("text") or ""
            log.info("case %s: transcript ready (%d characters)", case_id, len(text))

    async def settle_address(self, text: str, recording: dict) -> str:
        """The address words that route deepest: the free words, or the gazetteer's phrase
        list pass over the same WAV (``ivr.address``)."""

        snapshot = await self.db(indexes_for, self.engine)
        gazetteer = snapshot.gazetteer_at(self.address_min_confidence)
        async with fetched(self.store, self._key(recording["path"])) as path:
            free = file_phrase_pass(self.pool, path, self.phrase_pass_s)

            async def phrase_pass(phrases):
                async with self.slots.for_job():
                    return await free(phrases)

            best = await hear_address(gazetteer, text, phrase_pass if free is not None else None)
        return best.text

    def _key(self, path: str) -> str:
        return stored_path(resolve(path, self.data_dir), self.data_dir)

    async def recognise(self, call_sid: str | None, recording: dict) -> dict:
        name = recording.get("segment") or ""
        seg = self.registry.get(call_sid, name) if self.registry is not None and call_sid else None
        if seg is not None and seg.live:
            await seg.wait_done(LIVE_WAIT_S)
            live = seg.transcript()
            if live is not None:
                return live
        key = self._key(recording["path"])
        try:
            async with fetched(self.store, key) as path:
                audio = await asyncio.to_thread(read_wav, path)
        except MediaMissing:
            raise FileNotFoundError(f"recording {key} is neither in the spool nor in {self.store.description}: "
                                    f"was it taken by an instance with another GRIDLINE_MEDIA_URL?") from None
        except AudioError as exc:
            log.warning("recording %s cannot be read (%s): filed without words", key, exc)
            return {"segment": name, "text": "", "confidence": None, "segments": []}
        async with self.slots.for_job():
            transcript = await self.pool.transcribe_pcm(audio.pcm, audio.sample_rate)
        return {
            "segment": name,
            "text": transcript.text,
            "confidence": round(transcript.confidence, 4) if transcript.words else None,
            "segments": [s.to_dict() for s in transcript.segments if s.text],
        }


def joined(segment: str, parts: list[dict]) -> dict:
    """The words of a petition's parts (``ivr.state.CallState.petition_heard``) as one."""
    confs = [p["confidence"] for p in parts if p.get("confidence") is not None]
    return {"segment": segment, "text": "".join((p.get("text") or "").strip() for p in parts),
            "confidence": round(sum(confs) / len(confs), 4) if confs else None,
            "segments": [s for p in parts for s in p.get("segments") or []], "parts": parts}


def speech_runners(engine: Engine, handler: Transcriptions, count: int, *, poll_seconds: float = 2.0) -> list[JobRunner]:
    """``count`` job runners that take only speech jobs, one job at a time each."""

    comments = CommentTranscriber(handler)  # the follow-up call's comments, recognised the same way
    runners = []
    for _ in range(max(1, count)):
        runner = JobRunner(engine, poll_seconds=poll_seconds, batch=1)
        runner.register(TRANSCRIBE_JOB, handler.handle)
        runner.register(COMMENT_JOB, comments.handle)
        runners.append(runner)
    return runners


async def run_speech_jobs(engine: Engine, pool: Any, data_dir: Path, concurrency: int,
                          stop: asyncio.Event, store: MediaStore | None = None) -> Transcriptions:
    """``gridline jobs --speech``: take transcription jobs until ``stop`` is set."""
    handler = Transcriptions(engine, pool, data_dir=data_dir, db=run_db, slots=RecognitionSlots(concurrency),
                             store=store)
    await pool.warm_up()
    runners = speech_runners(engine, handler, concurrency)
    log.info("speech jobs: up to %d recording(s) transcribed at once; taking %s jobs", concurrency,
             ", ".join(runners[0].handlers))
    for runner in runners:
        runner.start()
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.stop()
    return handler
