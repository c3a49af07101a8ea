"""Recovery sweep: a call that left audio but no case (the server died mid-call, or no
status callback ever came) becomes a case, so nothing a caller said is lost.

Several instances share the database, so a call is taken only when nobody is moving it
on: the instance that last moved it (``CallSession.instance_id``) has let its lease run
out (``core.platform.instances``: it was killed, or stopped), or the call has been untouched for
``recovery.stale_after_s``; and never while a stream of the call is open on an instance
that is alive. The sweep runs in the background at start-up and every
``recovery.sweep_every_s``, in every instance (filing is idempotent per call).
Nothing is recognised here: each turn's WAV is measured on disk (its header made true
first: a crash leaves the last second out of it), the case is filed with its recordings
and ``transcript_pending``, and a ``transcribe_recording`` job recognises the words
through the speech pool of whichever process has a model.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, exists, or_
from sqlmodel import select

from core.cases.models import CallSession
from core.platform import instances, uploads
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.media import MediaStore
from core.platform.models import StreamSegment
from ivr import calls
from ivr.stream import Db

log = logging.getLogger(__name__)


def pending_calls(engine: Engine, before: datetime, *, stale_before: datetime | None = None,
                  now: datetime | None = None) -> list[str]:
    """Calls with a recording on record, no case, no outcome, that nobody is moving on:
    their instance is gone, or they were untouched since ``stale_before``, or (calls that
    name no instance, from before instances kept leases) since ``before``, or a stream of
    theirs was open on an instance that is gone and no webhook came for a lease; and none
    of their streams is open on a live instance."""
    now = now or utcnow()
    holder = CallSession.instance_id
    stream_open_on_live = exists(select(StreamSegment.id).where(
        StreamSegment.call_sid == CallSession.call_sid, StreamSegment.audio_closed.is_(False),
        StreamSegment.instance_id.is_not(None), instances.held_by_live(StreamSegment.instance_id, now)))
    # The call's socket was on an instance that is gone while the call's webhooks went to a
    # live one: once no webhook moved the call on for a lease, nobody will (the caller's
    # audio died with that socket); its parts make the recording.
    stream_on_gone = exists(select(StreamSegment.id).where(
        StreamSegment.call_sid == CallSession.call_sid, StreamSegment.audio_closed.is_(False),
        instances.gone(StreamSegment.instance_id, now)))
    quiet_for_a_lease = CallSession.updated_at <= now - instances.lease_length()
    takeable = or_(instances.gone(holder, now), holder.is_(None) & (CallSession.updated_at <= before),
                   stream_on_gone & quiet_for_a_lease)
    if stale_before is not None:
        takeable = or_(takeable, CallSession.updated_at <= stale_before)
    with session_scope(engine) as session:
        rows = session.exec(
            select(CallSession.call_sid).where(
                CallSession.audio_path.is_not(None),
                CallSession.case_id.is_(None),
                CallSession.outcome.is_(None),
                takeable,
                ~stream_open_on_live,
            ).order_by(CallSession.id)
        ).all()
    return list(rows)


async def sweep(db: Db, engine: Engine, flow: dict, *, before: datetime, data_dir: Path | None,
                stale_before: datetime | None = None, store: MediaStore | None = None,
                spool: str = "") -> list[calls.Filed]:
    """File every pending call; returns what happened to each."""
    out = []
    for call_sid in await db(pending_calls, engine, before, stale_before=stale_before):
        try:
            filed = await db(calls.file_case, engine, call_sid, min_speech_s=flow["petition"]["min_speech_s"],
                             recovered=True, data_dir=data_dir, speech_rms=float(flow["stream"]["speech_rms"]),
                             store=store, spool=spool)
        except Exception:
            log.exception("recovery of call %s failed; will retry on the next sweep", call_sid)
            continue
        log.info("recovered call %s: %s %s", call_sid, filed.outcome, filed.number or "")
        if filed.to_upload and store is not None:  # the case is committed: now the bucket
            await asyncio.to_thread(uploads.upload_after_commit, engine, store, list(filed.to_upload), spool)
        out.append(filed)
    return out
