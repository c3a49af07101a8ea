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
from chat.texts import t
from core import actions
from core.cases.models import OPEN_STATUSES, Case, Category
from core.followup.models import Survey, SurveyStatus
from core.people.models import Resident
from core.places.models import Grid, GridLevel, Household
from core.places.routing import phone_variants
from core.platform import buckets, jobs
from core.platform.clock import utcnow
from core.platform.db import session_scope

MESSAGES_KEPT = 60  # the conversation the page shows after a reload
REQUESTS_KEPT = timedelta(days=2)  # an offline page sends its queue within this
SEEN_EVERY = timedelta(days=1)  # a device's use is noted (``updated_at``) at most this often when it only looks
CLEANUP_JOB = jobs.declare("web_chat_cleanup", "chat/resident_web.py: removes web chat devices and drafts left unused")


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
        else:
            if grid_hint and row.grid_hint != grid_hint:
                row.grid_hint = grid_hint
                session.add(row)
            if row.updated_at < utcnow() - SEEN_EVERY:  # opened again: in use (see ``sweep_devices``)
                row.updated_at = utcnow()
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


# ---------------------------------------------------------------- devices left unused


@dataclass
class Swept:
    devices: int = 0  # rows removed, with their answered posts and SMS codes
    drafts: int = 0  # unfinished petitions let go
    kept: int = 0  # unused devices kept: a case of theirs is still open or its survey pending


def _still_needed(session, device_id: str) -> bool:
    """A case of the device's residents still open, or a survey of one still waiting for an
    answer: the page is where the resident will hear of it and answer."""
    ids = _residents(session, device_id)
    if not ids:
        return False
    open_case = session.exec(select(Case.id).where(Case.resident_id.in_(ids),
                                                   Case.status.in_(sorted(OPEN_STATUSES))).limit(1)).first()
    if open_case is not None:
        return True
    # the case whose caller a survey asks: a merged duplicate's, else its own
    asks = Case.id == func.coalesce(Survey.caller_case_id, Survey.case_id)
    pending = session.exec(select(Survey.id).join(Case, asks)
                           .where(Case.resident_id.in_(ids), Survey.status == SurveyStatus.pending).limit(1)).first()
    return pending is not None


def sweep_devices(engine: Engine, rules: dict, *, now: datetime | None = None, limit: int = 500) -> Swept:
    """Devices nobody opened for ``device_idle_days`` (rules ``[web_chat]``) are removed, unless
    a case of theirs is open or its survey pending; a petition left unfinished for
    ``draft_idle_days`` is let go, with a note the page shows when it is opened again. A device
    with a verified number lets it go (``core.actions.unlink_verified_phone``), so the
    registered resident can be linked from another phone."""
    now = now or utcnow()
    device_cutoff = now - timedelta(days=float(rules["device_idle_days"]))
    draft_cutoff = now - timedelta(days=float(rules["draft_idle_days"]))
    swept = Swept()
    with session_scope(engine) as session:
        idle = session.exec(select(WebChatDevice.id).where(WebChatDevice.updated_at < device_cutoff)
                            .order_by(WebChatDevice.updated_at).limit(limit)).all()
    for device_id in idle:
        with session_scope(engine) as session:
            row = session.exec(select(WebChatDevice).where(WebChatDevice.id == device_id).with_for_update()).first()
            if row is None or row.updated_at >= device_cutoff:
                continue  # used meanwhile
            if _still_needed(session, device_id):
                swept.kept += 1
                continue
            if row.phone:
                actions.unlink_verified_phone(session, chat_key(device_id), row.phone, actor="system:web_chat_cleanup")
            session.execute(delete(WebChatRequest).where(WebChatRequest.device_id == device_id))
            session.execute(delete(WebChatPhoneCode).where(WebChatPhoneCode.device_id == device_id))
            session.delete(row)
            swept.devices += 1
    with session_scope(engine) as session:
        stale = session.exec(select(WebChatDevice).where(WebChatDevice.state.is_not(None),
                                                         WebChatDevice.updated_at < draft_cutoff)
                             .limit(limit).with_for_update()).all()
        for row in stale:
            note = {"from": "bot", "kind": "note", "text": t(row.language, "web.draft_expired"),
                    "at": now.isoformat(timespec="seconds")}
            items = list((row.messages or {}).get("items") or []) + [note]
            row.state, row.draft = None, None
            row.messages = {"items": items[-MESSAGES_KEPT:]}
            row.version += 1  # a page open on the old step is answered from the new state
            session.add(row)  # ``updated_at`` stays: the device's idleness goes on counting
            swept.drafts += 1
    return swept


def schedule_cleanup(engine: Engine) -> None:
    """Queue today's sweep (one a day across all instances: the dedupe key)."""
    with session_scope(engine) as session:
        jobs.enqueue(session, CLEANUP_JOB, {}, dedupe_key=f"{CLEANUP_JOB}:{utcnow():%Y-%m-%d}")


# ---------------------------------------------------------------- rate limits

BUCKETS = "webchat:"  # the web chat's rows in ``send_bucket``, beside the Telegram sender's


def post_buckets(device_id: str, address: str, rules: dict) -> list[buckets.Bucket]:
    """A post is counted against its device and its client address (rules ``[web_chat]``
    ``device_per_minute``, ``address_per_minute``): a minute's worth at once, then evenly."""
    per_device, per_address = float(rules["device_per_minute"]), float(rules["address_per_minute"])
    # The device's bucket first, the address's (shared by many devices) last: see buckets.take.
    return [buckets.Bucket(f"{BUCKETS}device:{device_id}", per_device / 60.0, per_device),
            buckets.Bucket(f"{BUCKETS}address:{address}", per_address / 60.0, per_address)]


def take_post(engine: Engine, device_id: str, address: str, rules: dict) -> buckets.Taken:
    """A token for one post from the device's and the address's buckets, or the wait."""
    return buckets.take(engine, post_buckets(device_id, address, rules))


def forget_buckets(engine: Engine) -> int:
    """Buckets untouched for an hour are full again (a minute refills them): their rows go."""
    return buckets.forget(engine, BUCKETS, older_than_s=3600.0)


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
            # its own caller's follow-up, or (a merged duplicate) the one asking them on the surviving case
            mine = (Survey.caller_case_id == case.id) | ((Survey.case_id == case.id) & Survey.caller_case_id.is_(None))
            survey = session.exec(select(Survey.id).where(mine, Survey.status == SurveyStatus.pending)).first()
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
        device_row = session.get(WebChatDevice, device_id)
        if device_row is not None and device_row.phone and device_row.phone != row.phone:
            # a new number replaces the one verified before: that one is let go first
            actions.unlink_verified_phone(session, chat_key(device_id), device_row.phone,
                                          actor=f"resident:{chat_key(device_id)}")
        resident = actions.link_verified_phone(session, chat_key(device_id), row.phone,
                                               actor=f"resident:{chat_key(device_id)}", language=language)
        session.execute(update(WebChatDevice).where(WebChatDevice.id == device_id)
                        .values(phone=row.phone, phone_verified_at=now, resident_id=resident.id))
        household = session.get(Household, resident.household_id) if resident.household_id else None
        return Checked("ok", phone=row.phone, household=household.address if household else None)


def unlink_phone(engine: Engine, device_id: str) -> str | None:
    """The device lets its verified number go (``core.actions.unlink_verified_phone``): its
    hotline cases leave "my cases", progress SMS stop, codes not yet used stop working, and
    a number (this one or another) needs a new code to be linked again. Returns the number
    let go, or ``None`` when the device had none."""
    now = utcnow()
    with session_scope(engine) as session:
        row = session.exec(select(WebChatDevice).where(WebChatDevice.id == device_id).with_for_update()).first()
        if row is None or not row.phone:
            return None
        phone = row.phone
        actions.unlink_verified_phone(session, chat_key(device_id), phone, actor=f"resident:{chat_key(device_id)}")
        session.execute(update(WebChatPhoneCode).where(WebChatPhoneCode.device_id == device_id,
                                                       WebChatPhoneCode.used_at.is_(None))
                        .values(expires_at=now))
        row.phone, row.phone_verified_at, row.resident_id = None, None, None
        session.add(row)
        return phone


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
