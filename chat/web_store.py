"""What the web chat asks of the database, as plain synchronous functions (run off the
event loop through ``services.db.run``). Case state changes only through ``core.actions``
(filing: ``chat.store.file``; the survey: ``chat.store.record_survey``)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from chat.models import WebChatDevice, WebChatPhoneCode, WebChatRequest, WebChatSecret
from core import actions
from core.cases.models import Case, Category
from core.followup.models import Survey, SurveyStatus
from core.people.models import Resident
from core.places.models import Grid, GridLevel, Household
from core.places.routing import phone_variants
from core.platform.clock import utcnow
from core.platform.db import session_scope

MESSAGES_KEPT = 60  # the conversation the page shows after a reload
REQUESTS_KEPT = timedelta(days=2)  # an offline page sends its queue within this


def chat_key(device_id: str) -> str:
    """The device's name where the core keeps a chat (``Resident.chat_id``): never a number,
    so the Telegram jobs leave it alone."""
    return f"web:{device_id}"


def signing_secret(engine: Engine) -> bytes:
    """The key every instance signs with: made by the first one that asks."""
    with session_scope(engine) as session:
        row = session.get(WebChatSecret, 1)
        if row is not None:
            return row.secret.encode()
    try:
        with session_scope(engine) as session:
            session.add(WebChatSecret(id=1, secret=secrets.token_urlsafe(48)))
    except IntegrityError:
        pass  # another instance made it first: theirs is the key
    with session_scope(engine) as session:
        return session.get(WebChatSecret, 1).secret.encode()


@dataclass
class Device:
    id: str
    resident_id: int | None
    language: str
    state: str | None
    draft: dict | None
    messages: list[dict]
    grid_hint: str | None
    version: int


def _device(row: WebChatDevice) -> Device:
    return Device(row.id, row.resident_id, row.language, row.state, row.draft,
                  list((row.messages or {}).get("items") or []), row.grid_hint, row.version)


def device(engine: Engine, device_id: str) -> Device | None:
    with session_scope(engine) as session:
        row = session.get(WebChatDevice, device_id)
        return _device(row) if row is not None else None


def open_device(engine: Engine, device_id: str, language: str, grid_hint: str | None) -> Device:
    """The device's row, made on its first visit; a grid code seen later replaces the hint."""
    with session_scope(engine) as session:
        row = session.get(WebChatDevice, device_id)
        if row is None:
            row = WebChatDevice(id=device_id, language=language, grid_hint=grid_hint, messages={"items": []})
            session.add(row)
            try:
                session.flush()
            except IntegrityError:  # the same new device twice at once
                session.rollback()
                row = session.get(WebChatDevice, device_id)
        elif grid_hint and row.grid_hint != grid_hint:
            row.grid_hint = grid_hint
            session.add(row)
        return _device(row)


def set_language(engine: Engine, device_id: str, language: str) -> None:
    with session_scope(engine) as session:
        session.execute(update(WebChatDevice).where(WebChatDevice.id == device_id).values(language=language))


def set_resident(engine: Engine, device_id: str, resident_id: int) -> None:
    with session_scope(engine) as session:
        session.execute(update(WebChatDevice).where(WebChatDevice.id == device_id).values(resident_id=resident_id))


def for_step(engine: Engine, device_id: str, key: str) -> tuple[dict | None, Device | None]:
    """The answer already given to this post (if it was), and the device: one round trip."""
    with session_scope(engine) as session:
        row = session.get(WebChatRequest, (device_id, key))
        if row is not None:
            return row.answer, None
        device_row = session.get(WebChatDevice, device_id)
        return None, _device(device_row) if device_row is not None else None


def answered(engine: Engine, device_id: str, key: str) -> dict | None:
    with session_scope(engine) as session:
        row = session.get(WebChatRequest, (device_id, key))
        return row.answer if row is not None else None


def save_step(engine: Engine, device_id: str, version: int, state: str | None, draft: dict | None,
              new_messages: list[dict], key: str, answer: dict) -> bool:
    """The step's result and the post's answer in one transaction, if nobody changed the
    device since ``version`` was read and the post was not answered meanwhile; False if so
    (the caller answers with what the database now holds)."""
    try:
        with session_scope(engine) as session:
            row = session.exec(select(WebChatDevice).where(WebChatDevice.id == device_id).with_for_update()).first()
            if row is None or row.version != version:
                return False
            items = list((row.messages or {}).get("items") or []) + new_messages
            row.state, row.draft = state, draft
            row.messages = {"items": items[-MESSAGES_KEPT:]}
            row.version = version + 1
            row.updated_at = utcnow()
            session.add(row)
            session.add(WebChatRequest(device_id=device_id, key=key, answer=answer))
            session.flush()
            return True
    except IntegrityError:
        return False


def forget_requests(engine: Engine) -> int:

    with session_scope(engine) as session:
        result = session.execute(delete(WebChatRequest).where(WebChatRequest.at < utcnow() - REQUESTS_KEPT))
        return result.rowcount or 0


# ---------------------------------------------------------------- the device's cases


@dataclass
class CaseLine:
    number: str
    status: str
    category: str | None
    description: str
    created: datetime
    due: datetime | None
    survey: int | None  # a pending survey the resident may answer here
    updated: datetime


def _residents(session, device_id: str) -> list[int]:
    """The device's residents: its own, the registered one it is linked to, and whoever is
    registered under the number it verified (their hotline cases are the device's too)."""
    found = {r.id for r in session.exec(select(Resident).where(Resident.chat_id == chat_key(device_id))).all()}
    row = session.get(WebChatDevice, device_id)
    if row is not None and row.phone:
        variants = sorted(phone_variants(row.phone))
        found.update(session.exec(select(Resident.id).where(Resident.phone.in_(variants))).all())
    return sorted(found)


def cases(engine: Engine, device_id: str, limit: int = 20) -> list[CaseLine]:
    with session_scope(engine) as session:
        ids = _residents(session, device_id)
        if not ids:
            return []
        rows = session.exec(select(Case).where(Case.resident_id.in_(ids))
                            .order_by(Case.created_at.desc(), Case.id.desc()).limit(limit)).all()
        out = []
        for case in rows:
            category = session.get(Category, case.category_id) if case.category_id else None
            survey = session.exec(select(Survey.id).where(Survey.case_id == case.id,
                                                          Survey.status == SurveyStatus.pending)).first()
            due = case.resolution_due if case.status.value not in ("closed", "merged") else None
            out.append(CaseLine(case.number, case.status.value, category.name if category else None,
                                case.description, case.created_at, due, survey, case.updated_at))
        return out


def statuses(engine: Engine, device_id: str) -> dict[str, str]:
    """number -> status (with a pending survey marked), for the live progress stream."""
    return {c.number: c.status + ("+survey" if c.survey else "") for c in cases(engine, device_id)}


def grid_map(engine: Engine) -> dict:
    """The micro grids' outlines (lon/lat rings) and the box around them, for the page's map."""

    with session_scope(engine) as session:
        grids = session.exec(select(Grid).where(Grid.level == GridLevel.micro, Grid.geometry.is_not(None))).all()
        out, xs, ys = [], [], []
        for grid in grids:
            geometry = grid.geometry or {}
            polygons = geometry.get("coordinates") or []
            if geometry.get("type") == "Polygon":
                polygons = [polygons]
            rings = [[[round(x, 6), round(y, 6)] for x, y, *_ in polygon[0]] for polygon in polygons if polygon]
            for ring in rings:
                xs += [p[0] for p in ring]
                ys += [p[1] for p in ring]
            if rings:
                out.append({"name": grid.name, "rings": rings})
        box = [min(xs), min(ys), max(xs), max(ys)] if xs else [0, 0, 1, 1]
        return {"box": box, "grids": out}


# ---------------------------------------------------------------- phone verification


def code_refusal(engine: Engine, device_id: str, phone: str, rules: dict) -> str | None:
    """Why no code may be sent now (a catalogue key), or ``None``: sends in the last
    ``verify_window_minutes`` per device and per number, and a pause between two sends."""
    now = utcnow()
    since = now - timedelta(minutes=float(rules["verify_window_minutes"]))
    with session_scope(engine) as session:
        def sent(*where) -> int:
            return session.exec(select(func.count()).select_from(WebChatPhoneCode)
                                .where(WebChatPhoneCode.created_at >= since, *where)).one()

        if sent(WebChatPhoneCode.device_id == device_id) >= int(rules["verify_sends_per_device"]):
            return "web.phone_too_many"
        if sent(WebChatPhoneCode.phone == phone) >= int(rules["verify_sends_per_number"]):
            return "web.phone_too_many"
        last = session.exec(select(func.max(WebChatPhoneCode.created_at))
                            .where(WebChatPhoneCode.device_id == device_id)).one()
        if last is not None and (now - last).total_seconds() < float(rules["verify_resend_seconds"]):
            return "web.phone_wait"
    return None


def keep_code(engine: Engine, device_id: str, phone: str, code_hash: str, minutes: float) -> int:
    """A code about to be sent (its HMAC only); earlier codes of the device stop working."""
    now = utcnow()
    with session_scope(engine) as session:
        session.execute(update(WebChatPhoneCode).where(WebChatPhoneCode.device_id == device_id,
                                                       WebChatPhoneCode.used_at.is_(None))
                        .values(expires_at=now))
        row = WebChatPhoneCode(device_id=device_id, phone=phone, code_hash=code_hash, created_at=now,
                               expires_at=now + timedelta(minutes=minutes))
        session.add(row)
        session.flush()
        return row.id


def drop_code(engine: Engine, code_id: int) -> None:
    """The SMS could not be sent: the code never reached anyone (the send still counts)."""
    with session_scope(engine) as session:
        session.execute(update(WebChatPhoneCode).where(WebChatPhoneCode.id == code_id).values(expires_at=utcnow()))


@dataclass
class Checked:
    outcome: str  # "ok", "wrong", "expired", "locked"
    phone: str | None = None
    left: int = 0
    household: str | None = None


def check_code(engine: Engine, device_id: str, hashed: Callable[[str, str], str], code: str, rules: dict,
               language: str) -> Checked:
    """The code the resident typed, against the device's last one: right -> the number is
    the device's and links it to the resident registered under it (``core.actions``)."""
    now = utcnow()
    tries = int(rules["verify_attempts"])
    with session_scope(engine) as session:
        row = session.exec(select(WebChatPhoneCode).where(WebChatPhoneCode.device_id == device_id)
                           .order_by(WebChatPhoneCode.id.desc()).with_for_update()).first()
        if row is None or row.used_at is not None or row.expires_at <= now:
            return Checked("expired")
        if row.attempts >= tries:
            return Checked("locked")
        if not hmac.compare_digest(row.code_hash, hashed(row.phone, code)):
            row.attempts += 1
            session.add(row)
            return Checked("wrong" if row.attempts < tries else "locked", left=tries - row.attempts)
        row.used_at = now
        session.add(row)
        resident = actions.link_verified_phone(session, chat_key(device_id), row.phone,
                                               actor=f"resident:{chat_key(device_id)}", language=language)
        session.execute(update(WebChatDevice).where(WebChatDevice.id == device_id)
                        .values(phone=row.phone, phone_verified_at=now, resident_id=resident.id))
        household = session.get(Household, resident.household_id) if resident.household_id else None
        return Checked("ok", phone=row.phone, household=household.address if household else None)


def set_live(engine: Engine, device_id: str, until: datetime | None) -> None:
    """The page's progress stream is open until ``until`` (``None``: it closed)."""
    with session_scope(engine) as session:
        session.execute(update(WebChatDevice).where(WebChatDevice.id == device_id).values(live_until=until))


def _case_device(session, case: Case) -> WebChatDevice | None:
    if not case.resident_id:
        return None
    resident = session.get(Resident, case.resident_id)
    chat_id = resident.chat_id if resident is not None else None
    if not chat_id or not chat_id.startswith("web:"):
        return None
    return session.get(WebChatDevice, chat_id.removeprefix("web:"))


def verified_number(session, case: Case) -> str | None:
    """For ``core.followup.sms``: the number a web chat case's device verified, if any."""
    row = _case_device(session, case)
    return row.phone if row is not None and row.phone_verified_at is not None else None


def page_open(session, case: Case) -> bool:
    """For ``core.followup.sms``: the device's page is open (its stream tells the resident)."""
    row = _case_device(session, case)
    return row is not None and row.live_until is not None and row.live_until > utcnow()


def verified(engine: Engine, device_id: str) -> str | None:
    with session_scope(engine) as session:
        row = session.get(WebChatDevice, device_id)
        return row.phone if row is not None and row.phone_verified_at is not None else None
