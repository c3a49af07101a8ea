"""The hotline's database work: call sessions and the one core intake call.

Synchronous functions (run them with ``asyncio.to_thread``). A call's progress lives in
``CallSession.state`` (JSON):

    stage        menu | petition | readback | address | address_confirm | status | operator | filed
    caller       {"known", "grid_id", "community", "resident_id"} from the household registry
    petition     {"segment", "attempt", "confirmed", "unconfirmed"}
    address      {"segment", "attempt", "heard", "name", "grid_id", "confidence", "confirmed"}
    segments     {segment: {"kind", "audio_path", "text", "confidence", "speech_s", "duration",
                            "final", "ended_by", "segments"}}  (written by the stream)
    counters     menu_tries, confirm_tries, status_tries, wait_round

Case state is never touched here except through ``core.intake.file_petition_in``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from core import actions
from core.clock import utcnow
from core.db import session_scope
from core.errors import NotFound
from core.intake import file_petition_in
from core.models import CallSession, Case, Channel, Grid, GridLevel, Resident
from core.routing import normalise_phone, route_by_phone  # imported now: heavy (pypinyin, shapely)
from core.storage import resolve, stored_path
from core.texts import status_name

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


def case_key(call_sid: str) -> str:
    return actions.idempotency_key("hotline", call_sid)


def _community_of(session, grid_id: int) -> str | None:
    grid = session.get(Grid, grid_id)
    while grid is not None and grid.level != GridLevel.community:
        grid = session.get(Grid, grid.parent_id) if grid.parent_id else None
    return grid.name if grid is not None else None


def _caller(session, phone: str | None) -> dict[str, Any]:
    found = route_by_phone(session, phone) if phone else None
    if found is None:
        return {"known": False}
    norm = normalise_phone(phone)
    resident = session.exec(select(Resident).where(Resident.phone == norm)).first() if norm else None
    return {
        "known": True,
        "grid_id": found.grid_id,
        "community": _community_of(session, found.grid_id),
        "resident_id": resident.id if resident else None,
    }


def open_call(engine: Engine, call_sid: str, *, from_number: str | None, to_number: str | None,
              status: str | None, direction: str = "inbound") -> tuple[CallSession, bool]:
    """The call's session, created on the first webhook (retries find the same row)."""
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
            resident_id=caller.get("resident_id"),
            state={"stage": "menu", "caller": caller, "segments": {}},
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:  # a concurrent retry of the same webhook created it
            row = session.exec(select(CallSession).where(CallSession.call_sid == call_sid)).one()
            return row, False
        return row, True


def load(engine: Engine, call_sid: str) -> CallSession | None:
    with session_scope(engine) as session:
        return session.exec(select(CallSession).where(CallSession.call_sid == call_sid)).first()


def mutate(engine: Engine, call_sid: str, fn: Callable[[CallSession, dict], Any]) -> tuple[CallSession, Any]:
    """Lock the row, let ``fn(row, state)`` change it (``state`` is a copy written back)."""
    with session_scope(engine) as session:
        row = session.exec(
            select(CallSession).where(CallSession.call_sid == call_sid).with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"no call {call_sid}")
        state = copy.deepcopy(row.state or {})
        result = fn(row, state)
        row.state = state
        row.updated_at = utcnow()
        session.add(row)
        return row, result


def check_token(engine: Engine, call_sid: str, token: str) -> bool:
    row = load(engine, call_sid)
    return bool(row and row.stream_token and token and secrets.compare_digest(row.stream_token, token))


# ---------------------------------------------------------------- filing


@dataclass
class Filed:
    number: str | None
    created: bool = False
    outcome: str = ""


def file_case(engine: Engine, call_sid: str, *, min_speech_s: float, low_confidence: float,
              hung_up: bool = False, recovered: bool = False, data_dir: Path | None = None) -> Filed:
    """Turn what the caller said into a case through the core intake (idempotent per CallSid).

    A caller who hung up (or a call found by the recovery sweep) needs ``min_speech_s`` of
    speech, otherwise only the call record remains."""
    row = load(engine, call_sid)
    if row is None:
        raise NotFound(f"no call {call_sid}")
    if row.case_id is not None:
        with session_scope(engine) as session:
            case = session.get(Case, row.case_id)
        return Filed(case.number if case else None, False, row.outcome or "case_filed")
    state = row.state or {}
    petition = state.get("petition") or {}
    seg = (state.get("segments") or {}).get(petition.get("segment") or "", {})
    text = (seg.get("text") or "").strip()
    speech_s = float(seg.get("speech_s") or 0.0)
    audio_path = seg.get("audio_path")
    confirmed = bool(petition.get("confirmed"))
    if (hung_up or recovered) and not confirmed and speech_s < min_speech_s:
        outcome = "no_petition"
        mutate(engine, call_sid, lambda r, s: setattr(r, "outcome", r.outcome or outcome))
        return Filed(None, False, outcome)
    if not text and not audio_path:
        mutate(engine, call_sid, lambda r, s: setattr(r, "outcome", r.outcome or "no_petition"))
        return Filed(None, False, "no_petition")

    flags: list[str] = []
    confidence = seg.get("confidence")
    if hung_up:
        flags.append("caller_hung_up")
    if recovered:
        flags.append("recovered_after_restart")
    if not text or confidence is None or float(confidence) < low_confidence:
        flags.append("low_confidence")
    if petition.get("unconfirmed"):
        flags.append("transcript_unconfirmed")
    address = state.get("address") or {}
    address_text = None
    if address.get("confirmed") and address.get("name"):
        address_text = address["name"]
    elif address.get("heard"):
        address_text = address["heard"]
        flags.append("address_unconfirmed")
    caller = state.get("caller") or {}
    petition_obj = actions.Petition(
        channel=Channel.hotline,
        description=text,
        idempotency_key=case_key(call_sid),
        contact_phone=row.from_number,
        resident_id=caller.get("resident_id"),
        transcript=seg.get("segments") or None,
        transcript_confidence=float(confidence) if confidence is not None else None,
        files=_recording(audio_path, data_dir),
        address_text=address_text,
        flags=tuple(flags),
    )
    outcome = "recovered_case" if recovered else ("hung_up_case" if hung_up else "case_filed")
    # One transaction, one disk flush: the case, its recording and the call's outcome.
    with session_scope(engine) as session:
        result = file_petition_in(session, petition_obj, actor="hotline")
        row = session.exec(select(CallSession).where(CallSession.call_sid == call_sid).with_for_update()).one()
        state = copy.deepcopy(row.state or {})
        state["stage"] = "filed"
        row.case_id, row.outcome, row.state, row.updated_at = result.case.id, outcome, state, utcnow()
        session.add(row)
    return Filed(result.case.number, result.created, outcome)


def _recording(audio_path: str | None, data_dir: Path | None) -> tuple[actions.FileRef, ...]:
    """The caller's recording as a file of the case, stored relative to the data directory."""
    if not audio_path:
        return ()
    path = resolve(audio_path, data_dir)
    size = sha = None
    if path.is_file():
        data = path.read_bytes()
        size, sha = len(data), hashlib.sha256(data).hexdigest()
    return (actions.FileRef(kind="recording", path=stored_path(path, data_dir), mime_type="audio/wav",
                            size=size, sha256=sha),)


# ---------------------------------------------------------------- status of a case


@dataclass
class CaseStatusInfo:
    number: str
    status: str
    due: datetime | None  # local time
    closed: datetime | None


def case_status(engine: Engine, number: str, tz: str, language: str = "zh") -> CaseStatusInfo | None:
    digits = "".join(c for c in number if c.isdigit())
    if not digits:
        return None
    with session_scope(engine) as session:
        try:
            case = actions.get_case(session, digits)
        except NotFound:
            return None

    def local(at: datetime | None) -> datetime | None:
        return at.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz)) if at else None

    return CaseStatusInfo(case.number, status_name(case.status, language), local(case.resolution_due),
                          local(case.closed_at))
