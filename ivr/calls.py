"""The hotline's database work: call sessions, the one core intake call, transcripts that
arrive later.

Synchronous functions; ``ivr.web.Hotline.db`` runs them off the event loop (and retries
them when the database connection drops). A call's flow state is ``ivr.state.CallState``
in ``CallSession.state``; it changes only through ``apply`` with a named transition.
Case state is never touched here except through ``core.cases.intake.file_petition_in`` and
``core.actions``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core import actions
from core.cases.intake import file_petition_in, route_after_words
from core.cases.models import CallSession, Case, Channel
from core.cases.queries import open_cases_of_caller
from core.cases.texts import status_name
from core.deadlines.sla import calendar_for
from core.errors import NotFound
from core.people.models import Resident
from core.places.models import Grid, GridLevel
from core.places.routing import (  # imported now: heavy (pypinyin, shapely)
    normalise_phone,
    phone_variants,
    route_by_phone,
)
from core.platform import jobs, media_types, uploads
from core.platform.clock import utcnow
from core.platform.db import savepoint, session_scope
from core.platform.media import LocalStore, MediaStore, _write_atomically
from core.platform.models import AudioPart, Job, JobStatus, StreamSegment
from core.platform.storage import data_dir as data_dir_default
from core.platform.storage import resolve, stored_path
from ivr.handover import recording_of
from ivr.loudness import pcm_speech_seconds
from ivr.spool import (
    HEADER_BYTES,
    KEEP_HELD_JOB,
    assemble,
    delete_store_parts,
    drop_handover_copies,
    held_parts_in,
    mark_held,
)
from ivr.state import TERMINAL_STATUSES, Call, Caller, CallState, Recording, Stage, recording_path
from speech_models.audio import AudioError, read_wav, repair_wav_header

log = logging.getLogger(__name__)

__all__ = ["TERMINAL_STATUSES", "TRANSCRIBE_JOB", "Filed", "apply", "file_case", "load", "load_call",
           "open_call", "stream_path"]

# The durable job that recognises a recording filed before its words were known.
TRANSCRIBE_JOB = jobs.declare("transcribe_recording", "ivr/transcription.py: recognises a hotline recording filed before its words")
SPEECH_JOB_KINDS = (TRANSCRIBE_JOB,)

T = TypeVar("T")
RECORDING_INCOMPLETE = actions.RECORDING_INCOMPLETE  # a case flag: part of a recording could be kept nowhere


def case_key(call_sid: str) -> str:
    return actions.idempotency_key("hotline", call_sid)


def _community_of(session, grid_id: int) -> str | None:
    grid = session.get(Grid, grid_id)
    while grid is not None and grid.level != GridLevel.community:
        grid = session.get(Grid, grid.parent_id) if grid.parent_id else None
    return grid.name if grid is not None else None


def _caller(session, phone: str | None) -> Caller:
    found = route_by_phone(session, phone) if phone else None
    if found is None:
        return Caller()
    norm = normalise_phone(phone)
    resident = session.exec(select(Resident).where(Resident.phone == norm)).first() if norm else None
    return Caller(known=True, grid_id=found.grid_id, community=_community_of(session, found.grid_id),
                  resident_id=resident.id if resident else None)


def open_call(engine: Engine, call_sid: str, *, from_number: str | None, to_number: str | None,
              status: str | None, direction: str = "inbound", holder: str | None = None,
              arrived_at: datetime | None = None) -> tuple[CallSession, bool]:
    """The call's session, created on the first webhook (retries find the same row).
    ``arrived_at``: when that webhook reached us (the call's arrival in the service figures)."""
    with session_scope(engine) as session:
        row = session.exec(select(CallSession).where(CallSession.call_sid == call_sid)).first()
        if row is not None:
            return row, False
        caller = _caller(session, from_number)
        row = CallSession(
            call_sid=call_sid,
            direction="inbound" if direction.startswith("inbound") else direction[:16],
            from_number=from_number,
            to_number=to_number,
            status=(status or "ringing")[:24],
            stream_token=secrets.token_urlsafe(24),
            resident_id=caller.resident_id,
            state=CallState(caller=caller).dump(),
            instance_id=holder,
            started_at=arrived_at or utcnow(),
        )
        try:
            with savepoint(session):
                session.add(row)
                session.flush()
        except IntegrityError:  # a concurrent retry of the same webhook created it
            row = session.exec(select(CallSession).where(CallSession.call_sid == call_sid)).one()
            return row, False
        return row, True


def load(engine: Engine, call_sid: str) -> CallSession | None:
    with session_scope(engine) as session:
        return session.exec(select(CallSession).where(CallSession.call_sid == call_sid)).first()


def load_call(engine: Engine, call_sid: str) -> Call | None:
    row = load(engine, call_sid)
    return Call.of(row) if row is not None else None


class UnknownCall(NotFound):
    """A webhook that moves a call on names a CallSid we have no row for (never started
    here, or forged with a valid signature): the caller hears a polite goodbye."""


def _locked(session: Session, call_sid: str) -> CallSession:
    row = session.exec(select(CallSession).where(CallSession.call_sid == call_sid).with_for_update()).first()
    if row is None:
        raise UnknownCall(f"no call {call_sid}")
    return row


def _next_version(row: CallSession) -> datetime:
    """The row's new ``updated_at``: now, and always later than the one it had, so that a
    write made from an older read of the row is refused (``_store_if_unchanged``) even when
    two writes fall in the same microsecond or the clock is pinned."""
    now = utcnow()
    old = row.updated_at
    return now if old is None or now > old else old + timedelta(microseconds=1)


def _store(session: Session, call: Call, holder: str | None = None) -> None:
    call.row.state = call.state.dump()
    call.row.updated_at = _next_version(call.row)
    if holder is not None:
        call.row.instance_id = holder
    session.add(call.row)


CALL_COLUMNS = tuple(c.name for c in CallSession.__table__.columns if c.name not in ("id", "call_sid", "state",
                                                                                     "updated_at"))


def _detached(row: CallSession) -> CallSession:
    """A copy of a row read earlier, for a transition to change without touching the original."""
    return CallSession(id=row.id, call_sid=row.call_sid, state=row.state, updated_at=row.updated_at,
                       **{name: getattr(row, name) for name in CALL_COLUMNS})


def _store_if_unchanged(engine: Engine, call: Call, read: CallSession, holder: str | None) -> bool:
    """Write ``call`` (made from ``read``) in one UPDATE that holds only while the row is still
    as it was read (its ``updated_at``, which every write of the state moves on). Only the
    columns the transition changed are written. False: someone wrote the row since."""
    values: dict[str, Any] = {name: getattr(call.row, name) for name in CALL_COLUMNS
                              if getattr(call.row, name) != getattr(read, name)}
    if holder is not None:
        values["instance_id"] = holder
    values["state"] = call.state.dump()
    values["updated_at"] = _next_version(read)
    table = CallSession.__table__
    with engine.begin() as conn:
        done = conn.execute(update(table).where(table.c.call_sid == call.call_sid,
                                                table.c.updated_at == read.updated_at).values(**values))
        if done.rowcount != 1:
            return False
    call.row.state, call.row.updated_at = values["state"], values["updated_at"]
    if holder is not None:
        call.row.instance_id = holder
    return True


def apply(engine: Engine, call_sid: str, transition: Callable[..., T], *args: Any,
          holder: str | None = None, known: Call | None = None) -> tuple[Call, T]:
    """Run ``transition(call, *args)`` (a ``Call`` method or another named function of a
    ``Call``) and write the row and its state back in one commit. ``holder``: the instance
    moving the call on (the recovery sweep leaves it alone while that instance lives).

    ``known``: the call as this webhook last read or wrote it. The transition then runs on a
    copy of it and is written by one conditional UPDATE, no read and no lock, when nobody
    wrote the row since; otherwise (another request moved the call on meanwhile) the row is
    locked, read again and the transition run on what it holds, as without ``known``. Either
    way the transition runs on the row as it is in the database: a claim (``Call.claim_end``)
    is still won by one request only."""
    if known is not None:
        call = Call(_detached(known.row), CallState.load(known.row.state))
        result = transition(call, *args)
        if _store_if_unchanged(engine, call, known.row, holder):
            return call, result
    with session_scope(engine) as session:
        call = Call.of(_locked(session, call_sid))
        result = transition(call, *args)
        _store(session, call, holder)
        return call, result


def stream_path(engine: Engine, call_sid: str, token: str, segment: str) -> str | None:
    """Where a stream's audio goes (relative to the data directory) when its token is the
    call's; ``None`` refuses the stream."""
    row = load(engine, call_sid)
    if not (row and row.stream_token and token and secrets.compare_digest(row.stream_token, token)):
        return None
    planned = CallState.load(row.state).segments.get(segment)
    if planned is not None and planned.audio_path:
        return planned.audio_path
    return recording_path(call_sid, segment)  # a turn begun by an older version of the flow


# ---------------------------------------------------------------- filing


@dataclass
class Filed:
    number: str | None
    created: bool = False
    outcome: str = ""
    # Kept for an operator instead of dispatched (core.cases.flood): "duplicate" or "flood".
    held: str | None = None
    # Recordings filed as waiting in this instance's spool: to upload now the case is committed.
    to_upload: tuple[str, ...] = ()
    call: Call | None = field(default=None, repr=False)  # the call as filing left it in the database


def complete_from_disk(call: Call, data_dir: Path | None, speech_rms: float, *, repair: bool = False,
                       store: Any = None, session: Session | None = None, spool: str = "") -> None:
    """Turns that never ended in this process (it died, or the stream was served by
    another) are measured from their WAV on disk: the audio is there even if nothing else
    is. Their words are left to a transcribe_recording job. ``repair`` (after a crash:
    nobody writes the file any more) makes the WAV header match the audio.

    A turn whose WAV is not on this instance's disk was heard by another instance's socket:
    what that instance handed over (``ivr.handover``: the turn's seconds and words, and
    without a bucket a copy of the WAV in the database) or kept (the whole WAV in the
    store, else the parts it sent while the caller spoke) makes it (``turn_elsewhere``)."""
    for name, rec in call.state.recordings():
        if not rec.audio_path:
            continue
        path = resolve(rec.audio_path, data_dir)
        if rec.ended:
            if not (rec.sha256 and rec.size) and session is not None and store is not None and not path.is_file():
                # Ended through the handover, its WAV on the socket's instance: without a
                # bucket that instance left a copy in the database, kept here now.
                copied = _copy_in(rec, store, session, speech_rms, spool)
                if copied is not None:
                    call.turn_heard(name, copied)
            continue
        if not path.is_file():
            if store is not None and session is not None:
                found = turn_elsewhere(session, call.call_sid, name, rec, store, speech_rms, spool)
                if found is not None:
                    log.info("recording %s of call %s: %s (%.2f s)", rec.audio_path, call.call_sid,
                             "handed over by the instance that heard it" if found.ended_by != "recovered"
                             else "made from what its instance kept", found.duration)
                    call.turn_heard(name, found)
            continue
        try:
            if repair and repair_wav_header(path):
                log.info("recording %s of call %s: WAV header repaired", rec.audio_path, call.call_sid)
            audio = read_wav(path)
        except (AudioError, OSError) as exc:
            log.warning("recording %s of call %s unreadable: %s", path, call.call_sid, exc)
            continue
        heard = rec.model_copy(update={
            "speech_s": round(pcm_speech_seconds(audio.pcm, audio.sample_rate, speech_rms), 2),
            "duration": round(audio.duration, 2), "ended_by": "recovered", "final": False, "deferred": True})
        call.turn_heard(name, heard)


def _handed_over(session: Session, call_sid: str, name: str, rec: Recording) -> Recording | None:
    """The turn as the socket's instance wrote it down once its audio closed (seconds,
    seconds of speech, the words if recognised); ``None`` if it never closed there."""
    row = session.exec(select(StreamSegment).where(StreamSegment.call_sid == call_sid,
                                                   StreamSegment.segment == name)).first()
    if row is None or not row.audio_closed:
        return None
    heard = recording_of(row, rec.kind)
    return heard.model_copy(update={"audio_path": rec.audio_path or heard.audio_path})


def _copy_in(rec: Recording, store: Any, session: Session, speech_rms: float, spool: str) -> Recording | None:
    """``rec`` (its seconds and words known) with the WAV the socket's instance left in the
    database kept here; ``None`` when there is no such copy."""
    if not held_parts_in(session, rec.audio_path):
        return None
    rebuilt = rebuild_from_parts(rec, store, session, speech_rms, spool)
    if rebuilt is None:
        return None
    return rec.model_copy(update={k: getattr(rebuilt, k) for k in ("size", "sha256", "held", "waiting_in")})


def turn_elsewhere(session: Session, call_sid: str, name: str, rec: Recording, store: Any, speech_rms: float,
                   spool: str = "") -> Recording | None:
    """A turn that never ended here and whose WAV is not on this disk, as the instance that
    held its socket left it: its handover row (the turn's numbers and words), and its audio
    from the database copy or the parts (``rebuild_from_parts``), else the whole WAV in the
    store (measured from it when no handover row says how much was speech). ``None``:
    nothing of it anywhere."""
    handed = _handed_over(session, call_sid, name, rec)
    rebuilt = rebuild_from_parts(rec, store, session, speech_rms, spool)
    if rebuilt is not None:
        if handed is None:
            return rebuilt
        # the words and speech the handover row says; the seconds the file has (parts may lack the last)
        return handed.model_copy(update={k: getattr(rebuilt, k)
                                         for k in ("size", "sha256", "held", "waiting_in", "duration")})
    if getattr(store, "spool_is_store", True):
        return handed
    try:
        size = store.stat(rec.audio_path)
    except Exception as exc:  # the bucket is away: the next sweep looks again
        log.warning("recording %s of call %s: cannot look in the store: %s", rec.audio_path, call_sid, exc)
        return handed
    if size is None or size <= HEADER_BYTES:
        return handed
    # The socket's instance kept the whole WAV (uploaded, parts removed) before the webhook
    # that ended the turn could store it with the call: the object is the turn.
    if handed is not None:
        return handed  # _file_ref attaches the object as it is kept
    whole = store.get_bytes(rec.audio_path)
    audio = read_wav(whole)
    return rec.model_copy(update={
        "speech_s": round(pcm_speech_seconds(audio.pcm, audio.sample_rate, speech_rms), 2),
        "duration": round(audio.duration, 2), "ended_by": "recovered", "final": False, "deferred": True,
        "size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()})


def turn_from_parts(engine: Engine, call_sid: str, name: str, store: Any, speech_rms: float,
                    spool: str = "") -> Recording | None:
    """The turn ``name`` made whole from what its stream's instance left (``turn_elsewhere``),
    for a webhook that waited in vain for that instance's handover (it died with the socket,
    or the webhook that asked for it died). ``None``: nothing of it anywhere."""
    with session_scope(engine) as session:
        row = session.exec(select(CallSession).where(CallSession.call_sid == call_sid)).first()
        if row is None:
            return None
        rec = Call.of(row).state.segments.get(name)
        if rec is None or rec.ended or not rec.audio_path:
            return None
        return turn_elsewhere(session, call_sid, name, rec, store, speech_rms, spool)


def rebuild_from_parts(rec: Recording, store: Any, session: Session | None, speech_rms: float,
                       spool: str = "") -> Recording | None:
    """A turn whose spool file is gone, made whole from its parts. The WAV is written to
    this instance's spool and filed as waiting there (``spool``): the upload comes after the
    case's transaction, and the parts go once the whole file is confirmed in the store
    (``core.platform.uploads``). A spool that cannot take it: put to the store now, as a last resort."""

    db_parts = held_parts_in(session, rec.audio_path) if session is not None else []
    whole = assemble(store, None, rec.audio_path, db_parts=db_parts)
    if whole is None:
        return None
    digest = hashlib.sha256(whole).hexdigest()
    audio = read_wav(whole)
    measured = {"speech_s": round(pcm_speech_seconds(audio.pcm, audio.sample_rate, speech_rms), 2),
                "duration": round(audio.duration, 2), "ended_by": "recovered", "final": False, "deferred": True,
                "size": len(whole), "sha256": digest}
    if spool and not getattr(store, "spool_is_store", True):
        try:
            _write_atomically(store.spool_path(rec.audio_path), iter((whole,)))
            return rec.model_copy(update={**measured, "waiting_in": spool})
        except OSError as exc:
            log.warning("recording %s: assembled from its parts, the spool cannot take it (%s): to the store now",
                        rec.audio_path, exc)
    held = False
    try:
        stored = store.put_bytes(rec.audio_path, whole)
        if stored.sha256 != digest:
            raise ValueError(f"stored with sha256 {stored.sha256}, assembled {digest}")
    except Exception as exc:
        log.warning("recording %s: assembled from its parts but not stored: %s", rec.audio_path, exc)
        if not db_parts:
            return None
        held = True  # the parts stay in the database; keep_held_audio stores the WAV later
        jobs.enqueue(session, KEEP_HELD_JOB, {"key": rec.audio_path, "size": len(whole), "sha256": digest},
                     dedupe_key=f"{KEEP_HELD_JOB}:{rec.audio_path}", max_attempts=1000)
    if not held:
        delete_store_parts(store, rec.audio_path)
        if session is not None:
            session.execute(delete(AudioPart).where(AudioPart.key == rec.audio_path))
    return rec.model_copy(update={**measured, "held": held})


def _file_ref(rec: Recording, data_dir: Path | None, store: MediaStore | None, spool: str) -> actions.FileRef | None:
    """The turn's WAV as a file of the case: kept already by ``ivr.spool`` as the turn ended,
    or still in the spool (never ended here: the process died, or the turn was measured from
    disk), then filed as waiting in the spool and uploaded after the case's transaction
    (``core.platform.uploads.upload_after_commit``). Our own WAV writer made it (never a caller's
    upload): its type is known, not guessed. 44 bytes: a header and no audio."""
    if rec.audio_path and rec.sha256 and rec.size and rec.size > 44:
        # kept by ivr.spool as the turn ended (in the store, waiting in the spool, or held in
        # the database for the store): known without the file
        return actions.FileRef(kind="recording", path=rec.audio_path, mime_type=media_types.WAV, size=rec.size,
                               sha256=rec.sha256, waiting_in=rec.waiting_in)
    if not rec.audio_path:
        return None
    key = stored_path(resolve(rec.audio_path, data_dir), data_dir)
    return uploads.spooled_file(store or LocalStore(Path(data_dir or data_dir_default())), spool, "recording", key,
                                media_types.WAV, min_bytes=45)


@dataclass
class PetitionOfCall:
    """What the call's recordings make: the core petition, and what is left to recognise."""

    petition: actions.Petition
    pending: dict[str, dict]  # "petition"/"address" → {"segment", "path"} for the transcribe job


def petition_of(call: Call, *, min_speech_s: float, hung_up: bool, recovered: bool,
                data_dir: Path | None, store: MediaStore | None = None, spool: str = "") -> PetitionOfCall | None:
    """The petition a call's recordings make, or ``None`` when the caller said nothing.

    Any attempt with at least ``min_speech_s`` of speech is a petition, as is words the
    caller confirmed. The petition's words are the current attempt's when it has speech
    or words, else the last attempt's that has; every attempt's recording is attached."""
    state = call.state
    attempts = state.recordings("petition")

    def counts(rec: Recording) -> bool:
        if rec.intent not in (None, "petition"):
            return False  # words that asked for something else (a status, a person, 再说一遍)
        return rec.speech_s >= min_speech_s or bool(rec.final and rec.text.strip() and state.petition.confirmed)

    # the current attempt joined with what it continues (the caller went on over its read-back)
    current = state.petition_heard()
    if current is not None and current.kind == "petition" and counts(current):
        name, chosen = state.petition.segment, current
    else:
        spoken = [(n, r) for n, r in attempts if counts(r)]
        if not spoken:
            return None
        name, chosen = spoken[-1]

    text = chosen.text.strip() if chosen.final else ""
    pending: dict[str, dict] = {}
    flags: list[str] = []
    if hung_up:
        flags.append("caller_hung_up")
    if recovered:
        flags.append("recovered_after_restart")
    if chosen.transcript_pending:
        flags.append(actions.TRANSCRIPT_PENDING)
        pending["petition"] = {"segment": name, "path": chosen.audio_path}
        if name == state.petition.segment and state.petition.parts:  # joined: every part is recognised
            pending["petition"]["parts"] = [{"segment": n, "path": state.segments[n].audio_path}
                                            for n in [*state.petition.parts, name]
                                            if n in state.segments and state.segments[n].audio_path]
    elif actions.is_low_confidence(text, chosen.confidence):
        flags.append(actions.LOW_CONFIDENCE)
    if state.petition.unconfirmed:
        flags.append("transcript_unconfirmed")
    event_data = None
    incomplete = {n: {"kept_s": r.kept_s, "heard_s": r.heard_s} for n, r in state.recordings() if r.incomplete}
    # A short answer (对, 保密, a case number) is not the resident's petition: not attached; nor
    # is a turn whose stream heard no audio at all, nor an open question skipped with a key
    # before a word was said (its stream holds the greeting's silence, more or less of it).
    # An answer turn as long as a petition is attached: the caller went on talking over the
    # read-back (a pause had ended their turn), and those words are theirs too.
    # So is the read-back's answer stream of a petition the caller went on with over it (its part).
    refs = {n: _file_ref(rec, data_dir, store, spool) for n, rec in state.recordings()
            if (rec.kind != "answer" or rec.speech_s >= min_speech_s or n in state.petition.parts)
            and not (rec.ended and rec.duration == 0 and not rec.heard_s)
            and not (rec.intent == "keyed" and rec.speech_s == 0)}
    for n, r in state.recordings():
        if n in refs and refs[n] is None and r.speech_s > 0 and n not in incomplete:
            # heard (the handover says how much), but its WAV is nowhere this instance can
            # reach (the instance that heard it is gone with its disk): filed all the same
            incomplete[n] = {"kept_s": 0.0, "heard_s": r.heard_s if r.heard_s is not None else r.duration}
    if incomplete:  # the spool and every fallback failed: say how much of what was said is kept
        flags.append(RECORDING_INCOMPLETE)
        event_data = {RECORDING_INCOMPLETE: incomplete}

    address = state.address
    address_text = None
    if address.confirmed and address.name:
        address_text = address.name
        if address.building_keyed and address.needs_building:
            flags.append("building_not_found")  # keyed, but no such building in the estate
    elif address.heard:
        address_text = address.heard
        flags.append("address_unconfirmed")
    else:
        spoken_address = [(n, r) for n, r in state.recordings("address")
                          if r.transcript_pending and r.speech_s > 0]
        if spoken_address:  # said, not yet recognised: the job will read it
            n, r = spoken_address[-1]
            pending["address"] = {"segment": n, "path": r.audio_path}
            flags.append("address_unconfirmed")
            if actions.TRANSCRIPT_PENDING not in flags:
                flags.append(actions.TRANSCRIPT_PENDING)

    files = tuple(ref for ref in refs.values() if ref is not None)
    petition = actions.Petition(
        channel=Channel.hotline,
        description=text,
        idempotency_key=case_key(call.call_sid),
        contact_phone=call.row.from_number,
        resident_id=state.caller.resident_id,
        transcript=(chosen.segments or None) if chosen.final else None,
        transcript_confidence=chosen.confidence if chosen.final else None,
        files=files,
        address_text=address_text,
        flags=tuple(flags),
        event_data=event_data,
        confidential=state.confidential,
    )
    return PetitionOfCall(petition, pending)


def file_case(engine: Engine, call_sid: str, *, min_speech_s: float, hung_up: bool = False,
              recovered: bool = False, data_dir: Path | None = None, speech_rms: float = 300.0,
              store: MediaStore | None = None, spool: str = "") -> Filed:
    """Turn what the caller said into a case through the core intake (idempotent per
    CallSid). One transaction: the case with every recording, the transcription job when
    words are still to be recognised, and the call's outcome. Recordings still in this
    instance's spool are filed as waiting there and uploaded after the commit, so the call
    and case rows are never held locked while the bucket answers.
    ``Filed.to_upload`` names them: the caller uploads them once the caller has its answer
    (``core.platform.uploads.upload_after_commit``), and their ``media_upload`` jobs if it cannot."""
    with session_scope(engine) as session:
        call = Call.of(_locked(session, call_sid))
        if call.row.case_id is not None:
            case = session.get(Case, call.row.case_id)
            return Filed(case.number if case else None, False, call.row.outcome or "case_filed", call=call)
        # the turns whose upload ivr.spool tried as they ended (the bucket was away): their job retries
        tried = {rec.audio_path for _, rec in call.state.recordings() if rec.waiting_in}
        complete_from_disk(call, data_dir, speech_rms, repair=recovered, store=store, session=session, spool=spool)
        made = petition_of(call, min_speech_s=min_speech_s, hung_up=hung_up, recovered=recovered,
                           data_dir=data_dir, store=store, spool=spool)
        # The turns' database copies (``ivr.handover``) are no longer needed either way.
        drop_handover_copies(session, [rec.audio_path for _, rec in call.state.recordings() if rec.audio_path])
        if made is None:  # a status query or a call for a person is no petition
            asked = call.state.queried or call.state.stage in (Stage.status, Stage.operator)
            # gone during the open question with nothing said: "hung_up", as at the old menu
            gone_at_once = hung_up and call.state.stage == Stage.open
            outcome = call.end(None if asked or gone_at_once else "no_petition")
            _store(session, call)
            return Filed(None, False, outcome, call=call)
        result = file_petition_in(session, made.petition, actor="hotline")
        for _, rec in call.state.recordings():
            if rec.held and rec.audio_path and result.created:
                mark_held(session, rec.audio_path)
        if made.pending and result.created:
            jobs.enqueue(session, TRANSCRIBE_JOB, {"case_id": result.case.id, "call_sid": call_sid, **made.pending},
                         dedupe_key=f"{TRANSCRIBE_JOB}:{result.case.id}", max_attempts=8)
        outcome = "recovered_case" if recovered else ("hung_up_case" if hung_up else "case_filed")
        call.filed(result.case.id, outcome)
        _store(session, call)
        upload = tuple(f.path for f in made.petition.files
                       if spool and f.waiting_in == spool and f.path not in tried) if result.created else ()
    return Filed(result.case.number, result.created, outcome, result.held.reason if result.held else None, upload,
                 call)


# ---------------------------------------------------------------- transcripts that come later


def transcript_pending(engine: Engine, case_id: int) -> bool:
    with session_scope(engine) as session:
        case = session.get(Case, case_id)
        return case is not None and actions.TRANSCRIPT_PENDING in (case.flags or [])


def apply_transcript(engine: Engine, case_id: int, call_sid: str | None, heard: dict[str, dict]) -> bool:
    """The words of a case's recordings, recognised afterwards (``heard``: "petition" and
    maybe "address" → {"segment", "text", "confidence", "segments"}): the case through
    ``actions.set_transcript``, the call's recordings alongside, one commit."""
    with session_scope(engine) as session:
        case = actions.get_case(session, case_id, lock=True)
        petition = heard.get("petition") or {}
        address = heard.get("address") or {}
        if not petition:  # only the address was pending: the petition's words are in already
            petition = {"text": case.description, "segments": case.transcript, "confidence": case.transcript_confidence}
        written = actions.set_transcript(
            session, case, actor="hotline:speech", text=petition.get("text") or "",
            segments=petition.get("segments") or None, confidence=petition.get("confidence"),
            address_text=address.get("text") or None)
        if written is not None:
            route_after_words(session, case, actor="hotline:speech")
        row = session.exec(select(CallSession).where(CallSession.call_sid == call_sid)).first() if call_sid else None
        if row is not None:
            call = Call.of(row)
            petition = heard.get("petition") or {}
            # a joined petition's words go to each of its parts (the case has them as one)
            for part in (*(petition.get("parts") or [petition]), heard.get("address")):
                rec = call.state.segments.get((part or {}).get("segment") or "")
                if rec is not None:
                    call.state.segments[part["segment"]] = rec.model_copy(update={
                        "text": part.get("text") or "", "confidence": part.get("confidence"),
                        "segments": part.get("segments") or [], "final": True})
            _store(session, call)
        return written is not None


def transcription_backlog(engine: Engine) -> dict[str, int]:
    """Transcription jobs by status (queued, running, failed), for /healthz."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Job.status, func.count()).where(Job.kind.in_(SPEECH_JOB_KINDS),
                                                   Job.status != JobStatus.done).group_by(Job.status)
        ).all()
    return {str(getattr(status, "value", status)): int(n) for status, n in rows}


# ---------------------------------------------------------------- status of a case


@dataclass
class CaseStatusInfo:
    number: str
    status: str
    due: datetime | None  # local time
    closed: datetime | None


def _status_info(case: Case, tz: str, language: str) -> CaseStatusInfo:
    def local(at: datetime | None) -> datetime | None:
        return at.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz)) if at else None

    return CaseStatusInfo(case.number, status_name(case.status, language), local(case.resolution_due),
                          local(case.closed_at))


def case_status(engine: Engine, number: str, tz: str, language: str = "zh") -> CaseStatusInfo | None:
    digits = "".join(c for c in number if c.isdigit())
    if not digits:
        return None
    with session_scope(engine) as session:
        try:
            case = actions.get_case(session, digits)
        except NotFound:
            return None
        return _status_info(case, tz, language)


def caller_open_cases(engine: Engine, phone: str | None, resident_id: int | None, tz: str,
                      language: str = "zh") -> list[CaseStatusInfo]:
    """The open cases of the caller on the line (by the number they call from, or the
    resident the registry knows them as): one of them needs no case number said."""
    phones = (set(phone_variants(phone)) | {phone}) if phone else set()
    with session_scope(engine) as session:
        return [_status_info(case, tz, language) for case in open_cases_of_caller(session, phones, resident_id)]


# ---------------------------------------------------------------- the operator line


def operator_calendar_exceptions(engine: Engine, tz: str) -> dict:
    """The working calendar's holidays and make-up days (the operator keeps office days)."""
    with session_scope(engine) as session:
        return calendar_for(session, tz).exceptions
