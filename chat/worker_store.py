"""What the worker side of the bot asks of the database, as plain synchronous functions
(the handlers and jobs run them through ``Deps.db``).

Every press of a worker's button ends in ``act``: in one transaction it finds who the chat
belongs to, locks the case, checks that this person may do this to the case *now* (its
owner or department for 签收/开始处理/退回/办结上报, its checker for 核查) and that the
button belongs to the case's current dispatch (or report), then calls ``core.actions``.
Anything else is ``Refused`` and changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, select

from core import actions
from core.actions import OWNED, TRANSITIONS
from core.cases.models import Attachment, Case, CaseEvent, CaseStatus, Category
from core.cases.queries import case_files, known_names
from core.deadlines import reminders
from core.errors import DomainError, IllegalTransition, NotFound
from core.people import audit, staff
from core.people.models import StaffChat, Worker
from core.people.redaction import CONFIDENTIAL, redact
from core.places.models import Grid
from core.platform.db import keep, session_scope


def invite_key(settings) -> bytes:  # noqa: ANN001
    """The key invitations are signed with: derived from the bot's token, so the CLI that
    issues them and the bot that redeems them agree without another secret to manage."""
    token = settings.telegram_token or ""
    return hashlib.sha256(b"gridline-staff-invite-key\0" + token.encode()).digest() if token else b""


# ---------------------------------------------------------------- who is this chat


@dataclass
class Me:
    staff: staff.Staff
    chat_id: str
    language: str


def directory(engine: Engine) -> dict[str, str]:
    """Every linked chat -> the staff key it acts for."""
    with session_scope(engine) as session:
        rows = session.exec(select(StaffChat)).all()
        return {r.chat_id: f"worker:{r.worker_id}" if r.worker_id else f"department:{r.department_id}"
                for r in rows}


def me(engine: Engine, chat_id: int | str) -> Me | None:
    with session_scope(engine) as session:
        link = session.get(StaffChat, str(chat_id))
        who = staff.staff_of_chat(session, chat_id)
        if link is None or who is None:
            return None
        return Me(who, link.chat_id, link.language)


def chat_for(engine: Engine, key: str) -> Me | None:
    """The linked chat of a staff key (``worker:<id>``), if any."""
    with session_scope(engine) as session:
        return _chat_for(session, key)


def _chat_for(session: Session, key: str) -> Me | None:
    who = staff.staff_by_key(session, key)
    link = staff.chat_of(session, who) if who else None
    return Me(who, link.chat_id, link.language) if link else None


def card_shown(engine: Engine, case_id: int, who: str, card: str) -> None:
    """A confidential case's card sent to a staff chat is a view of it: an audit row, as the
    console writes for its case page (``who``: the staff key or the chat)."""
    with session_scope(engine) as session:
        number = session.exec(select(Case.number).where(Case.id == case_id)).first()
        audit.record(session, actor=f"telegram:{who}", action="case.view", target_type="case", target_id=number,
                     detail={"confidential": True, "phone_shown": False, "via": "staff_chat", "card": card})


def link_by_invite(engine: Engine, chat_id: int, token: str, key: bytes, language: str) -> staff.Staff:
    with session_scope(engine) as session:
        return staff.redeem_invite(session, token, key, chat_id, language=language)


def link_by_contact(engine: Engine, chat_id: int, phone: str, language: str) -> staff.Staff | None:
    """Link the chat when the shared (own) number is a worker's or a department's; None
    when it is not, or when the chat is a resident's (it stays one)."""
    with session_scope(engine) as session:
        if staff.is_resident_chat(session, chat_id):
            return None
        who = staff.staff_by_phone(session, phone)
        if who is None:
            return None
        staff.link_chat(session, chat_id, who, via="contact", actor=f"chat:{chat_id}", language=language)
        return who


# ---------------------------------------------------------------- a case as staff see it


@dataclass
class Card:
    case_id: int
    number: str
    status: str
    channel: str
    category: str | None
    urgency: str
    grid: str | None
    address: str | None
    description: str
    response_due: datetime | None
    resolution_due: datetime | None
    dispatch_stamp: str
    report_stamp: str
    escalation_count: int
    worker: str | None
    photos: list[str] = field(default_factory=list)  # the resident's, relative to the data dir
    recordings: list[str] = field(default_factory=list)
    report_note: str | None = None
    report_photos: list[str] = field(default_factory=list)
    routing_trace: list[dict] | None = None  # why routing chose this grid (codes; said by the card)
    routing_reason: str | None = None  # older rows, or an operator's words
    # 保密: the text masked (names, every number of 3 digits or more), no recording sent
    confidential: bool = False


def _report(session, case: Case) -> tuple[str | None, list[str], int | None]:
    """The latest report_done: its note, the photos attached for it, its event id."""
    last = session.exec(
        select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.action == "report_done")
        .order_by(CaseEvent.id.desc()).limit(1)
    ).first()
    if last is None:
        return None, [], None
    photos = list((last.data or {}).get("photos") or [])
    return last.reason, photos, last.id


def card(engine: Engine, case_id: int) -> Card | None:
    with session_scope(engine) as session:
        return _card(session, case_id)


def _card(session: Session, case_id: int) -> Card | None:
    case = session.get(Case, case_id)
    if case is None:
        return None
    category = session.get(Category, case.category_id) if case.category_id else None
    grid = session.get(Grid, case.grid_id) if case.grid_id else None
    worker = session.get(Worker, case.worker_id) if case.worker_id else None
    files = case_files(session, case.id)
    note, report_photos, _ = _report(session, case)
    report_set = set(report_photos)
    description, address = case.description, case.address_text
    if case.confidential:  # a staff chat is a worker's or a checker's: who the resident is stays out
        names = known_names(session, [case]).get(case.id, ())
        description = redact(description, names, CONFIDENTIAL)
        address = redact(address, names, CONFIDENTIAL) or None
    return Card(
        case.id, case.number, case.status.value, case.channel.value, category.name if category else None,
        case.urgency.value, grid.name if grid else None, address, description,
        case.response_due, case.resolution_due, staff.stamp(case.dispatched_at),
        staff.stamp(case.reported_done_at), case.escalation_count, worker.name if worker else None,
        photos=[f.path for f in files if f.kind == "photo" and f.path not in report_set],
        # a voice says who is speaking: a confidential case's recording is never sent
        recordings=[] if case.confidential else [f.path for f in files if f.kind == "recording"],
        report_note=note, report_photos=report_photos,
        routing_trace=case.routing_trace, routing_reason=case.routing_reason,
        confidential=case.confidential,
    )


# ---------------------------------------------------------------- acting on a case


class Refused(Exception):
    """``why``: unlinked (the chat is no staff chat any more), not_yours (somebody else's,
    or the case has moved on), note (a report needs a note), photos (more photos needed),
    refused (core refused what was sent: ``error``, said in the staff member's words)."""

    def __init__(self, why: str, *, needed: int = 0, error: DomainError | None = None):
        super().__init__(why)
        self.why = why
        self.needed = needed
        self.error = error


# button action -> (core transition it needs, who may press it, the stamp it carries)
OWNER, CHECKER = "owner", "checker"
ACTIONS = {
    "accept": ("accept", OWNER),
    "start": ("start", OWNER),
    "return": ("return", OWNER),
    "report": ("report_done", OWNER),
    "pass": ("verify", CHECKER),
    "fail": ("verify", CHECKER),
}


@dataclass
class Done:
    number: str
    status: str
    case_id: int
    dispatch_stamp: str
    report_stamp: str


def _authorise(session, chat_id: int | str, case_id: int, action: str, stamp: str) -> tuple[staff.Staff, Case]:
    who = staff.staff_of_chat(session, chat_id)
    if who is None:
        raise Refused("unlinked")
    try:
        case = actions.get_case(session, case_id, lock=True)
    except NotFound:
        raise Refused("not_yours") from None
    transition, role = ACTIONS[action]
    if case.status not in TRANSITIONS[transition]:
        raise Refused("not_yours")
    if role == OWNER:
        allowed = who in staff.owners(session, case) and stamp == staff.stamp(case.dispatched_at)
    else:
        allowed = staff.checker(session, case) == who and stamp == staff.stamp(case.reported_done_at)
    if not allowed:
        raise Refused("not_yours")
    return who, case


def may(engine: Engine, chat_id: int, case_id: int, action: str, stamp: str) -> tuple[str, int]:
    """Whether the chat may do ``action`` now (before asking for a reason or a report):
    (case number, photos a report needs); raises ``Refused``."""
    with session_scope(engine) as session:
        _, case = _authorise(session, chat_id, case_id, action, stamp)
        return case.number, staff.required_photos(session, case)


def act(engine: Engine, chat_id: int, case_id: int, action: str, stamp: str, *, text: str | None = None,
        attachment_ids: tuple[int, ...] = ()) -> Done:
    """Do ``action`` (accept, start, return, report, pass, fail) for the chat's staff member,
    in one transaction with every check. ``text``: the reason or the report's note."""
    with session_scope(engine) as session:
        who, case = _authorise(session, chat_id, case_id, action, stamp)
        actor = who.actor
        try:
            if action == "accept":
                actions.accept(session, case, actor=actor)
            elif action == "start":
                actions.start(session, case, actor=actor)
            elif action == "return":
                actions.return_case(session, case, actor=actor, reason=text or "")
            elif action == "report":
                _report_done(session, case, actor, text, attachment_ids)
            elif action == "pass":
                actions.verify(session, case, actor=actor, passed=True, note=text)
            elif action == "fail":
                actions.verify(session, case, actor=actor, passed=False, note=text or "")
        except IllegalTransition:  # the case moved on meanwhile
            raise Refused("not_yours") from None
        except DomainError as exc:  # what was sent does not do (a reason missing …)
            raise Refused("refused", error=exc) from None
        return Done(case.number, case.status.value, case.id, staff.stamp(case.dispatched_at),
                    staff.stamp(case.reported_done_at))


def _report_done(session, case: Case, actor: str, note: str | None, attachment_ids: tuple[int, ...]) -> None:
    if not (note or "").strip():
        raise Refused("note")
    ids = tuple(sorted(set(attachment_ids)))
    rows = session.exec(select(Attachment).where(Attachment.id.in_(ids))).all() if ids else []
    photos = [a.path for a in rows if a.kind == "photo"]
    needed = staff.required_photos(session, case)
    if len(photos) < needed:
        raise Refused("photos", needed=needed)
    if ids:
        actions.attach(session, case, actor=actor, attachment_ids=ids, note="办结上报")
    actions.report_done(session, case, actor=actor, note=note.strip(), photos=photos or None)


def view(engine: Engine, chat_id: int, case_id: int) -> tuple[Card, str]:
    """A case for the chat that owns it ("owner") or checks it ("checker"); ``Refused``
    for anybody else."""
    with session_scope(engine) as session:
        who = staff.staff_of_chat(session, chat_id)
        if who is None:
            raise Refused("unlinked")
        case = session.get(Case, case_id)
        if case is None:
            raise Refused("not_yours")
        if case.status == CaseStatus.reported_done and staff.checker(session, case) == who:
            role = "checker"
        elif case.status in OWNED and who in staff.owners(session, case):
            role = "owner"
        else:
            raise Refused("not_yours")
    return card(engine, case_id), role


# ---------------------------------------------------------------- lists


def tasks(engine: Engine, chat_id: int | str) -> tuple[staff.Staff, list[reminders.Task]] | None:
    with session_scope(engine) as session:
        who = staff.staff_of_chat(session, chat_id)
        if who is None:
            return None
        return who, _masked(session, reminders.tasks(session, who))


def _masked(session, tasks: list[reminders.Task]) -> list[reminders.Task]:  # noqa: ANN001
    """The task list with a confidential case's words masked, as its card has them."""
    ids = sorted({task.case_id for task in tasks})
    secret = {c.id: c for c in session.exec(select(Case).where(Case.id.in_(ids or [-1]),
                                                               Case.confidential == True)).all()}  # noqa: E712
    if not secret:
        return tasks
    names = known_names(session, list(secret.values()))
    return [replace(task, description=redact(task.description, names.get(task.case_id, ()), CONFIDENTIAL))
            if task.case_id in secret else task for task in tasks]


def _still_current(session: Session, case_id: int, send: str, stamp: str, to: str) -> bool:
    """Whether a queued message is still news: the dispatch (or report) it was about is
    the case's current one and the recipient still has a say in it."""
    case = session.get(Case, case_id)
    who = staff.staff_by_key(session, to)
    if case is None or who is None:
        return False
    if send == "dispatch":
        return (case.status == CaseStatus.dispatched and stamp == staff.stamp(case.dispatched_at)
                and who in staff.owners(session, case))
    if send == "check":
        return (case.status == CaseStatus.reported_done and stamp == staff.stamp(case.reported_done_at)
                and staff.checker(session, case) == who)
    if send == "check_failed":
        return case.status in OWNED and stamp == staff.stamp(case.dispatched_at)
    return True


@dataclass
class StaffMessage:
    """What a queued staff message needs, read in one transaction: whether it is still news,
    the recipient's chat and the case's card (None when there is nothing to send)."""

    news: bool
    target: Me | None = None
    card: Card | None = None


def staff_message(engine: Engine, case_id: int, send: str, stamp: str, to: str) -> StaffMessage:
    """Whether it is still news (``_still_current``), ``chat_for`` and ``card`` at once: one session and one trip off the
    event loop for every dispatch message, not three (the case is read once)."""
    with session_scope(engine) as session:
        # Held for the transaction (the session's identity map keeps rows only weakly): each
        # of the three reads below would otherwise read the case and its worker again.
        case = session.get(Case, case_id)
        held = [case, session.get(Worker, case.worker_id) if case is not None and case.worker_id else None]
        kind, _, raw = to.partition(":")
        if kind == "worker" and raw.isdigit():
            held.append(session.get(Worker, int(raw)))
        for row in held:
            if row is not None:
                keep(session, row)
        if not _still_current(session, case_id, send, stamp, to):
            return StaffMessage(news=False)
        target = _chat_for(session, to)
        return StaffMessage(True, target, _card(session, case_id) if target is not None else None)


def reminder_current(engine: Engine, case_id: int, clock: str, stamp: str) -> tuple[Card, set[str]] | None:
    """The case's card and its owners' keys when its reminder still applies (the same
    dispatch, the same clock still running), else None."""
    with session_scope(engine) as session:
        case = session.get(Case, case_id)
        if case is None or case.status not in reminders.CLOCKED or stamp != staff.stamp(case.dispatched_at):
            return None
        if reminders.running_clock(case)[0] != clock:
            return None
        owner_keys = {s.key for s in staff.owners(session, case)}
    return card(engine, case_id), owner_keys


def owner_name(engine: Engine, worker_id: int | None) -> str | None:
    if worker_id is None:
        return None
    with session_scope(engine) as session:
        worker = session.get(Worker, worker_id)
        return worker.name if worker else None
