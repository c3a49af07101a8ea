"""Staff chats: grid workers and departments' contact persons in the chat channel.

* **Linking.** A chat is linked to a worker (or a department) when the worker shares
  their own contact and the number is theirs, or when they open a signed, single-use
  invitation (``issue_invite`` / ``redeem_invite``; 7 days by default). A chat is a staff
  chat or a resident's chat, never both: a chat that ever spoke as a resident is refused.
  Every link and unlink writes an ``AuditEntry``.
* **Who hears what.** A case change may be news for staff: rules.toml ``[worker.messages]``
  maps an action (or ``action:status``) to a message and its recipients — ``owner`` (the
  case's worker), ``department`` (the linked contact of the case's department),
  ``checker`` (rules.toml ``[check] checker``) and ``leader:up`` / ``leader:<level>``.
  ``queue_case_messages`` runs as a subscriber of every case change (``core.cases.events``),
  in the action's transaction, so the job that carries the message commits with the
  change that caused it.
* **Authority.** ``owners`` and ``checker`` answer "who may act on this case now"; the
  channel asks them at the moment a button is pressed.

Nothing here changes a case; the case writers are ``core.actions``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.cases import catalogue, events
from core.cases.events import CaseChange
from core.cases.models import Case, CaseStatus, Category
from core.deadlines.sla import next_owner_level
from core.errors import DomainError, InvalidInput, NotFound
from core.people import audit
from core.people.models import Department, Resident, StaffChat, StaffInvite, Worker, WorkerGrid
from core.places.models import GRID_LEVELS, Grid, GridLevel
from core.places.routing import phone_variants
from core.platform import jobs
from core.platform.clock import utcnow
from core.platform.db import savepoint
from core.platform.rules import load_rules

log = logging.getLogger(__name__)

INVITE_DAYS = 7



# ---------------------------------------------------------------- who


@dataclass(frozen=True)
class Staff:
    """A worker or a department, as the chat channel addresses them."""

    kind: str  # "worker" or "department"
    id: int
    code: str
    name: str

    @property
    def key(self) -> str:
        """How jobs name a recipient: ``worker:<id>`` / ``department:<id>``."""
        return f"{self.kind}:{self.id}"

    @property
    def actor(self) -> str:
        """The actor written on case events and audit rows."""
        return f"{self.kind}:{self.code}"


def of_worker(worker: Worker) -> Staff:
    return Staff("worker", worker.id, worker.code, worker.name)


def of_department(department: Department) -> Staff:
    return Staff("department", department.id, department.code, department.name)


def staff_by_key(session: Session, key: str) -> Staff | None:
    kind, _, raw = key.partition(":")
    if not raw.isdigit():
        return None
    if kind == "worker":
        worker = session.get(Worker, int(raw))
        return of_worker(worker) if worker else None
    if kind == "department":
        department = session.get(Department, int(raw))
        return of_department(department) if department else None
    return None


def staff_by_code(session: Session, code: str, *, department: bool = False) -> Staff:
    """A worker by code, else a department by code (``department`` looks only there)."""
    code = code.strip()
    if not department:
        worker = session.exec(select(Worker).where(Worker.code == code)).first()
        if worker is not None:
            return of_worker(worker)
    found = session.exec(select(Department).where(Department.code == code)).first()
    if found is None:
        raise NotFound(f"no worker or department with code {code!r}", code="staff.not_found", staff=code)
    return of_department(found)


def chat_of(session: Session, staff: Staff) -> StaffChat | None:
    column = StaffChat.worker_id if staff.kind == "worker" else StaffChat.department_id
    return session.exec(select(StaffChat).where(column == staff.id)).first()


def staff_of_chat(session: Session, chat_id: str | int) -> Staff | None:
    link = session.get(StaffChat, str(chat_id))
    if link is None:
        return None
    return staff_by_key(session, f"worker:{link.worker_id}" if link.worker_id else f"department:{link.department_id}")


def _active(session: Session, staff: Staff) -> bool:
    if staff.kind == "worker":
        worker = session.get(Worker, staff.id)
        return worker is not None and worker.active
    return session.get(Department, staff.id) is not None


# ---------------------------------------------------------------- linking


class LinkRefused(DomainError):
    """A chat may not be linked; ``why`` is one of: resident_chat, taken, inactive, unknown,
    forged, expired, used."""

    code = "link_refused"

    def __init__(self, why: str, message: str):
        super().__init__(message, why=why)
        self.why = why


def is_resident_chat(session: Session, chat_id: str | int) -> bool:
    return session.exec(select(Resident.id).where(Resident.chat_id == str(chat_id)).limit(1)).first() is not None


def link_chat(session: Session, chat_id: str | int, staff: Staff, *, via: str, actor: str,
              language: str = "zh", remote: str | None = None) -> StaffChat:
    """Link ``chat_id`` to ``staff``. A chat that has spoken as a resident, or is linked to
    someone else, is refused; a staff member's earlier chat is unlinked (a new phone)."""
    chat_id = str(chat_id)
    if not _active(session, staff):
        raise LinkRefused("inactive", f"{staff.kind} {staff.code} is not active")
    if is_resident_chat(session, chat_id):
        raise LinkRefused("resident_chat", f"chat {chat_id} is a resident's chat; it cannot be a staff chat")
    current = session.get(StaffChat, chat_id, with_for_update=True)
    if current is not None:
        if (current.worker_id, current.department_id) == _ids(staff):
            return current
        raise LinkRefused("taken", f"chat {chat_id} is already linked to someone else")
    earlier = chat_of(session, staff)
    if earlier is not None:
        audit.record(session, actor=actor, action="staff.unlink_chat", target_type=staff.kind,
                     target_id=staff.code, detail={"chat_id": earlier.chat_id, "why": "linked elsewhere"},
                     remote=remote)
        session.delete(earlier)
        session.flush()
    worker_id, department_id = _ids(staff)
    # The bot chose the language among those it has words for (chat/locales); core keeps it.
    link = StaffChat(chat_id=chat_id, worker_id=worker_id, department_id=department_id,
                     language=language or "zh", via=via, linked_at=utcnow())
    session.add(link)
    try:
        with savepoint(session):
            session.flush()
    except IntegrityError:  # the same chat linked at the same moment by a racing update
        raise LinkRefused("taken", f"chat {chat_id} is already linked") from None
    audit.record(session, actor=actor, action="staff.link_chat", target_type=staff.kind, target_id=staff.code,
                 detail={"chat_id": chat_id, "via": via}, remote=remote)
    return link


def _ids(staff: Staff) -> tuple[int | None, int | None]:
    return (staff.id, None) if staff.kind == "worker" else (None, staff.id)


UNLINKED_JOB = jobs.declare("staff_unlinked", "chat/worker_jobs.py: tells a chat it was unlinked")


def unlink(session: Session, staff: Staff, *, actor: str) -> str | None:
    """Forget the staff member's chat; returns the chat id it had (None: none was linked).
    The chat is told (a job, sent when the bot runs)."""
    link = chat_of(session, staff)
    if link is None:
        return None
    chat_id = link.chat_id
    session.delete(link)
    audit.record(session, actor=actor, action="staff.unlink_chat", target_type=staff.kind, target_id=staff.code,
                 detail={"chat_id": chat_id})

    jobs.enqueue(session, UNLINKED_JOB, {"chat_id": chat_id, "language": link.language})
    return chat_id


def staff_by_phone(session: Session, phone: str) -> Staff | None:
    """The active worker (else the department) whose registered number this is, compared
    in every form intake normalises a number to."""

    variants = sorted(phone_variants(phone))
    if not variants:
        return None
    worker = session.exec(select(Worker).where(Worker.phone.in_(variants), Worker.active == True)  # noqa: E712
                          .order_by(Worker.id)).first()
    if worker is not None:
        return of_worker(worker)
    department = session.exec(select(Department).where(Department.phone.in_(variants))
                              .order_by(Department.id)).first()
    return of_department(department) if department else None


# ---------------------------------------------------------------- invitations


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _signature(key: bytes, body: str) -> str:
    mac = hmac.new(hashlib.sha256(b"gridline-staff-invite\0" + key).digest(), body.encode(), hashlib.sha256)
    return base64.b32encode(mac.digest()).decode()[:16].lower()


def _epoch(at: datetime) -> int:
    return int(at.replace(tzinfo=UTC).timestamp())


def invite_token(key: bytes, staff: Staff, expires_at: datetime, nonce: str) -> str:
    """``<w|d><id>_<expiry>_<nonce>_<signature>`` (base 36, at most ~40 characters of
    ``[a-z0-9_]``: fits Telegram's 64-character ``start`` parameter)."""
    body = f"{staff.kind[0]}{_b36(staff.id)}_{_b36(_epoch(expires_at))}_{nonce}"
    return f"{body}_{_signature(key, body)}"


@dataclass(frozen=True)
class InviteClaim:
    kind: str
    id: int
    expires_at: datetime
    nonce: str


def read_invite(key: bytes, token: str) -> InviteClaim | None:
    """The claim of a token we signed, else None (forged, tampered, malformed)."""
    if not isinstance(token, str) or len(token) > 64:
        return None
    body, _, signature = token.rpartition("_")
    if not body or not hmac.compare_digest(signature.encode(), _signature(key, body).encode()):
        return None
    parts = body.split("_")
    if len(parts) != 3 or len(parts[0]) < 2 or parts[0][0] not in "wd":
        return None
    try:
        target_id, expiry = int(parts[0][1:], 36), int(parts[1], 36)
    except ValueError:
        return None
    kind = "worker" if parts[0][0] == "w" else "department"
    return InviteClaim(kind, target_id, datetime.fromtimestamp(expiry, UTC).replace(tzinfo=None), parts[2])


def issue_invite(session: Session, staff: Staff, key: bytes, *, actor: str,
                 days: float = INVITE_DAYS) -> tuple[str, datetime]:
    """A new invitation for ``staff``: (token, expiry in naive UTC)."""
    if not key:
        raise InvalidInput("no signing key: set GRIDLINE_TELEGRAM_TOKEN", code="staff.no_signing_key")
    if not _active(session, staff):
        raise InvalidInput(f"{staff.kind} {staff.code} is not active",
                           code="staff.inactive", kind=staff.kind, staff=staff.code)
    now = utcnow()
    expires_at = (now + timedelta(days=days)).replace(microsecond=0)
    nonce = secrets.token_hex(5)
    worker_id, department_id = _ids(staff)
    session.add(StaffInvite(nonce=nonce, worker_id=worker_id, department_id=department_id, created_at=now,
                            expires_at=expires_at))
    audit.record(session, actor=actor, action="staff.invite", target_type=staff.kind, target_id=staff.code,
                 detail={"nonce": nonce, "expires_at": expires_at.isoformat()})
    return invite_token(key, staff, expires_at, nonce), expires_at


def redeem_invite(session: Session, token: str, key: bytes, chat_id: str | int, *,
                  language: str = "zh") -> Staff:
    """Link ``chat_id`` by an invitation. Refused (``LinkRefused``) when forged, expired,
    used by another chat, or when the chat cannot be a staff chat. Opening the same link
    again in the chat it linked is not an error (a redelivered update)."""
    claim = read_invite(key, token)
    if claim is None:
        raise LinkRefused("forged", "this invitation was not issued by us")
    if claim.expires_at < utcnow():
        raise LinkRefused("expired", "this invitation has expired")
    invite = session.get(StaffInvite, claim.nonce, with_for_update=True)
    ids = (claim.id, None) if claim.kind == "worker" else (None, claim.id)
    if invite is None or (invite.worker_id, invite.department_id) != ids:
        raise LinkRefused("forged", "this invitation is unknown")
    staff = staff_by_key(session, f"{claim.kind}:{claim.id}")
    if staff is None:
        raise LinkRefused("inactive", "the invited worker no longer exists")
    if invite.used_at is not None:
        if invite.used_by_chat == str(chat_id):
            current = staff_of_chat(session, chat_id)
            if current == staff:
                return staff
        raise LinkRefused("used", "this invitation has been used")
    link_chat(session, chat_id, staff, via="invite", actor=f"chat:{chat_id}", language=language)
    invite.used_at = utcnow()
    invite.used_by_chat = str(chat_id)
    session.add(invite)
    return staff


# ---------------------------------------------------------------- recipients and authority


def worker_rules() -> dict[str, Any]:
    return load_rules()["worker"]


def _leaders(session: Session, grid_id: int) -> list[Worker]:
    return list(session.exec(
        select(Worker).join(WorkerGrid, WorkerGrid.worker_id == Worker.id)
        .where(WorkerGrid.grid_id == grid_id, WorkerGrid.is_leader == True, Worker.active == True)  # noqa: E712
        .order_by(Worker.code)
    ).all())


def leader_from(session: Session, case: Case, level: GridLevel) -> Worker | None:
    """The leader of the case's grid at ``level`` (or the nearest level above with one),
    never the case's own worker: nobody checks or supervises their own work."""
    if case.grid_id is None:
        return None
    node = session.get(Grid, case.grid_id)
    # Up to the wanted level (a case filed at a higher grid starts where it is).
    while node is not None and GRID_LEVELS.index(node.level) < GRID_LEVELS.index(level):
        node = session.get(Grid, node.parent_id) if node.parent_id else None
    while node is not None:
        for leader in _leaders(session, node.id):
            if leader.id != case.worker_id:
                return leader
        node = session.get(Grid, node.parent_id) if node.parent_id else None
    return None


def _resolve(session: Session, case: Case, spec: str) -> list[Staff]:
    if spec == "owner":
        worker = session.get(Worker, case.worker_id) if case.worker_id else None
        return [of_worker(worker)] if worker else []
    if spec == "department":
        department = catalogue.department(session, case.department_id) if case.department_id else None
        return [Staff("department", department.id, department.code, department.name)] if department else []
    if spec == "checker":
        found = checker(session, case)
        return [found] if found else []
    if spec.startswith("leader:"):
        wanted = spec.split(":", 1)[1]
        if wanted == "up":
            level = next_owner_level(case.owner_level or GridLevel.micro)
            if level is None:
                return []
        else:
            level = GridLevel(wanted)
        leader = leader_from(session, case, level)
        return [of_worker(leader)] if leader else []
    raise InvalidInput(f"unknown recipient {spec!r} in rules.toml", code="rules.unknown_recipient", spec=spec)


def recipients(session: Session, case: Case, specs: list[str]) -> list[Staff]:
    """The staff named by ``specs``, each once, in order."""
    out: list[Staff] = []
    for spec in specs:
        for staff in _resolve(session, case, spec):
            if staff not in out:
                out.append(staff)
    return out


def checker(session: Session, case: Case) -> Staff | None:
    """Who checks (核查) the case's reported work: rules.toml ``[check] checker``."""
    spec = load_rules()["check"]["checker"]
    if spec == "checker":
        raise InvalidInput("[check] checker cannot be 'checker'", code="rules.checker_loop")
    found = _resolve(session, case, spec)
    return found[0] if found else None


def owners(session: Session, case: Case) -> list[Staff]:
    """Who may accept, start, return and report the case: its worker and, when the
    category routes to a department, that department."""
    return recipients(session, case, ["owner", "department"])


def required_photos(session: Session, case: Case) -> int:
    """Photos a report (办结上报) needs: rules.toml ``[worker.report]``, per category."""
    report = worker_rules()["report"]
    default = int(report["min_photos"])
    if case.category_id is None:
        return default
    category = session.get(Category, case.category_id)
    return int(report["min_photos_by_category"].get(category.code, default)) if category else default


def reminder_recipients(session: Session, case: Case, colour: str) -> list[Staff]:
    return recipients(session, case, list(worker_rules()["reminders"][colour]))


# One query for both kinds (a dispatch names a worker and a department), built once.
_LINKED = select(StaffChat.worker_id, StaffChat.department_id).where(
    or_(StaffChat.worker_id.in_(bindparam("worker_ids", expanding=True)),
        StaffChat.department_id.in_(bindparam("department_ids", expanding=True))))


def linked(session: Session, staff: list[Staff]) -> list[Staff]:
    """Those of ``staff`` with a linked chat (nobody else can be messaged)."""
    if not staff:
        return []
    worker_ids = [s.id for s in staff if s.kind == "worker"]
    department_ids = [s.id for s in staff if s.kind == "department"]
    rows = session.execute(_LINKED, {"worker_ids": worker_ids, "department_ids": department_ids}).all()
    have = {f"worker:{w}" for w, _ in rows if w in worker_ids} | \
        {f"department:{d}" for _, d in rows if d in department_ids}
    return [s for s in staff if s.key in have]


# ---------------------------------------------------------------- the hook in core.actions


MESSAGE_JOB = jobs.declare("staff_message", "chat/worker_jobs.py: a case message to staff", priority=jobs.URGENT)


def stamp(at: datetime | None) -> str:
    """A moment as compact text (base 36 microseconds): ties a message and its buttons to
    one dispatch or one report, so a newer one makes them stale."""
    if at is None:
        return "0"
    return _b36(int(at.replace(tzinfo=UTC).timestamp() * 1_000_000))


def message_rule(action: str, to_status: CaseStatus) -> dict[str, Any] | None:
    table = worker_rules()["messages"]
    return table.get(f"{action}:{to_status.value}") or table.get(action)


def queue_case_messages(session: Session, case: Case, action: str, to_status: CaseStatus,
                        reason: str | None = None, reason_params: dict | None = None) -> None:
    """Called by ``core.actions`` with every case event (after the case changed): queue the
    staff messages rules.toml names for this change, one job per linked recipient, in the
    caller's transaction."""
    rule = message_rule(action, to_status)
    if not rule:
        return
    with session.no_autoflush:  # the lookups read grids and people, not the changing case
        to = linked(session, recipients(session, case, list(rule["to"])))
    if not to:
        return

    moment = case.reported_done_at if rule["send"] == "check" else case.dispatched_at
    for staff in to:
        jobs.enqueue(session, MESSAGE_JOB, {
            "send": rule["send"], "case_id": case.id, "case": case.number, "to": staff.key,
            "action": action, "stamp": stamp(moment), "reason": reason,
            **({"reason_params": reason_params} if reason_params else {}),
        })


def on_case_change(change: CaseChange) -> None:
    """The subscriber (``core.cases.events``): every change, a new status or not, may be news for staff."""
    queue_case_messages(change.session, change.case, change.action, change.to_status, change.reason,
                        (change.data or {}).get("reason_params"))


def subscribe() -> None:
    """Registered at start-up by the composition root (``gridline.wiring``)."""
    events.subscribe("staff.messages", on_case_change)
