"""Recovery sweep: a call that left audio but no case (the server died mid-call, or no
status callback ever came) becomes a case, so nothing a caller said is lost.

Run in the background after start-up for every such session last touched before the
process started, and periodically for sessions untouched for ``recovery.stale_after_s``.
Nothing is recognised here: each turn's WAV is measured on disk (its header made true
first: a crash leaves the last second out of it), the case is filed with its recordings
and ``transcript_pending``, and a ``transcribe_recording`` job recognises the words
through the speech pool of whichever process has a model.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import select

from core.db import session_scope
from core.media import MediaStore
from core.models import CallSession
from ivr import calls
from ivr.stream import Db

log = logging.getLogger(__name__)


def pending_calls(engine: Engine, before: datetime) -> list[str]:
    """Calls with a recording on record, no case, no outcome, untouched since ``before``."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(CallSession.call_sid).where(
                CallSession.audio_path.is_not(None),
                CallSession.case_id.is_(None),
                CallSession.outcome.is_(None),
                CallSession.updated_at <= before,
            ).order_by(CallSession.id)
        ).all()
    return list(rows)


async def sweep(db: Db, engine: Engine, flow: dict, *, before: datetime, data_dir: Path | None,
                store: MediaStore | None = None, spool: str = "") -> list[calls.Filed]:
    """File every pending call; returns what happened to each."""
    out = []
    for call_sid in await db(pending_calls, engine, before):
        try:
            filed = await db(calls.file_case, engine, call_sid, min_speech_s=flow["petition"]["min_speech_s"],
                             recovered=True, data_dir=data_dir, speech_rms=float(flow["stream"]["speech_rms"]),
                             store=store, spool=spool)
        except Exception:
            log.exception("recovery of call %s failed; will retry on the next sweep", call_sid)
            continue
        log.info("recovered call %s: %s %s", call_sid, filed.outcome, filed.number or "")
        out.append(filed)
    return out
