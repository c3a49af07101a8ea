"""Recovery sweep: a call that left audio but no case (the server stopped mid-call, or no
status callback ever came) becomes a case, so nothing a caller said is lost.

Run at start-up for every such session, and periodically for sessions untouched for
``recovery.stale_after_s``. A transcript that was not finished is redone from the WAV
file on disk.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import select

from core.clock import utcnow
from core.db import session_scope
from core.models import CallSession
from ivr import calls
from ivr.stream import pcm_speech_seconds
from speech_models.audio import AudioError, read_wav

log = logging.getLogger(__name__)


def pending_calls(engine: Engine, min_age_s: float) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=min_age_s)
    with session_scope(engine) as session:
        rows = session.exec(
            select(CallSession.call_sid).where(
                CallSession.audio_path.is_not(None),
                CallSession.case_id.is_(None),
                CallSession.outcome.is_(None),
                CallSession.updated_at <= cutoff,
            )
        ).all()
    return list(rows)


def _redo_transcript(engine: Engine, call_sid: str, speech: Any, speech_rms: float) -> None:
    row = calls.load(engine, call_sid)
    state = row.state or {}
    name = (state.get("petition") or {}).get("segment")
    seg = dict((state.get("segments") or {}).get(name or "", {}))
    path = Path(seg.get("audio_path") or row.audio_path or "")
    if not path.is_file():
        return
    try:
        audio = read_wav(path)
    except AudioError as exc:
        log.warning("recording of call %s unreadable: %s", call_sid, exc)
        return
    seg["speech_s"] = round(pcm_speech_seconds(audio.pcm, audio.sample_rate, speech_rms), 2)
    seg["duration"] = round(audio.duration, 2)
    seg.setdefault("kind", "petition")
    seg["audio_path"] = str(path)
    transcriber = getattr(speech, "transcriber", None) or speech  # a SpeechPool or a bare transcriber
    if not seg.get("final") and transcriber is not None:
        t = transcriber.transcribe_pcm(audio.pcm, audio.sample_rate)
        seg.update(text=t.text, confidence=round(t.confidence, 4) if t.words else None,
                   segments=[s.to_dict() for s in t.segments], final=True, ended_by="recovered")

    def write(r: CallSession, s: dict) -> None:
        s.setdefault("segments", {})[name or "petition-1"] = seg
        s.setdefault("petition", {}).setdefault("segment", name or "petition-1")
        r.speech_seconds = seg["speech_s"]
        r.transcript = seg.get("segments") or None

    calls.mutate(engine, call_sid, write)


def sweep(engine: Engine, speech: Any, flow: dict, min_age_s: float = 0.0,
          data_dir: Path | None = None) -> list[calls.Filed]:
    """File every pending call; returns what happened to each."""
    out = []
    for call_sid in pending_calls(engine, min_age_s):
        try:
            _redo_transcript(engine, call_sid, speech, float(flow["stream"]["speech_rms"]))
            filed = calls.file_case(engine, call_sid, min_speech_s=flow["petition"]["min_speech_s"],
                                    low_confidence=flow["petition"]["low_confidence"], recovered=True,
                                    data_dir=data_dir)
            log.info("recovered call %s: %s %s", call_sid, filed.outcome, filed.number or "")
            out.append(filed)
        except Exception:
            log.exception("recovery of call %s failed; will retry on the next sweep", call_sid)
    return out
