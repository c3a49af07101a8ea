"""Floods and repeats from one sender: rules.toml ``[intake.flood]``.

A sender is a resident (their chat, or the registry) and a phone number: a petition counts
against both. Nothing a resident sends is lost: every petition is stored and numbered.
What this decides is whether intake dispatches it:

* a *suggested duplicate* — its words nearly the same (``duplicate_similarity``, a
  rapidfuzz ratio) as an open petition from the same sender within
  ``duplicate_window_minutes`` — waits for an operator (flag ``suggested_duplicate``,
  linked to the earlier case's number), so the worker is not sent the same thing twice;
* a petition beyond ``max_petitions`` within ``window_minutes`` waits too (``flood_held``);
* beyond ``refuse_above``, a channel in ``refuse_channels`` (Open311: another system that
  keeps its request and may send it again) is refused with ``TooManyPetitions`` before
  anything is written.

Counting is done under a lock per sender (PostgreSQL advisory locks, taken before the case
is written; SQLite has one writer at a time anyway), so a burst of parallel petitions from
one chat is counted one after the other and exactly one of them is dispatched.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from rapidfuzz import fuzz
from sqlalchemy import bindparam, null, or_, text, union_all
from sqlmodel import Session, func, select

from core.cases.models import OPEN_STATUSES, Case, CaseEvent, Channel
from core.errors import TooManyPetitions
from core.places.routing import normalise_phone, phone_variants
from core.platform.clock import utcnow
from core.platform.db import is_postgres
from core.platform.rules import load_rules

DUPLICATE = "suggested_duplicate"
FLOOD = "flood_held"
# The first key of PostgreSQL's two-key advisory locks: ours, so another user of advisory
# locks in the same database never waits for a sender's petitions.
LOCK_NAMESPACE = 0x6772_6964  # "grid"


@dataclass(frozen=True)
class Sender:
    resident_id: int | None
    phone: str | None

    @property
    def known(self) -> bool:
        return self.resident_id is not None or bool(self.phone)

    def lock_keys(self) -> list[str]:
        keys = []
        if self.resident_id is not None:
            keys.append(f"resident:{self.resident_id}")
        if self.phone and (normal := normalise_phone(self.phone)):
            keys.append(f"phone:{normal}")
        return sorted(keys)

    def params(self) -> dict:
        """The values of ``BY_SENDER``: the resident (None matches no case) and every spelling
        of the number (none: no case)."""
        return {"sender_resident": self.resident_id,
                "sender_phones": sorted(phone_variants(self.phone)) if self.phone else []}


# Cases a sender filed: by the resident, or under any spelling of the number. One shape for
# every sender, so the statements below are built once and take the sender as parameters.
BY_SENDER = or_(Case.resident_id == bindparam("sender_resident"),
                Case.contact_phone.in_(bindparam("sender_phones", expanding=True)))
_FILED_SINCE = select(func.count(Case.id), func.min(Case.created_at)).where(
    BY_SENDER, Case.created_at >= bindparam("since"))
_BEFORE = (BY_SENDER, Case.id < bindparam("case_id"))
# The screen in one round trip: a first row with the count of the sender's petitions in the
# window (no number), then the open ones in the duplicate window, oldest first (number and
# words are all the comparison needs: no case objects).
_OPEN_BEFORE = select(Case.id, Case.number, Case.description).where(
    *_BEFORE, Case.created_at >= bindparam("duplicate_since"), Case.status.in_([s.value for s in OPEN_STATUSES]),
    Case.description != "").order_by(Case.id).limit(200).subquery()
_SCREEN = union_all(
    select(func.count(Case.id), null(), null(), null()).where(*_BEFORE, Case.created_at >= bindparam("since")),
    select(null(), _OPEN_BEFORE.c.id, _OPEN_BEFORE.c.number, _OPEN_BEFORE.c.description))
# Every key of a sender in one round trip: unnest gives the keys in the array's (sorted)
# order and each is locked as its row comes, so two senders' locks are always taken in one
# order and two intakes never deadlock on them.
_LOCKS = text("SELECT pg_advisory_xact_lock(:ns, key) FROM unnest(CAST(:keys AS integer[])) AS key")


@dataclass(frozen=True)
class Hold:
    """Why intake did not dispatch a petition: ``reason`` is ``duplicate`` or ``flood``."""

    reason: str
    recent: int  # petitions from the same sender within the window before this one
    duplicate_of: str | None = None  # the earlier case's number
    similarity: float | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        return (DUPLICATE,) if self.reason == "duplicate" else (FLOOD,)

    def data(self) -> dict:
        out: dict = {"reason": self.reason, "recent": self.recent}
        if self.duplicate_of:
            out.update(duplicate_of=self.duplicate_of, similarity=self.similarity)
        return out


def rules() -> dict:
    return load_rules()["intake"]["flood"]


def lock(session: Session, sender: Sender) -> None:
    """Hold the sender's locks to the end of the transaction (PostgreSQL), so two petitions
    of one sender are screened one after the other."""
    if not is_postgres(session.get_bind()):
        return
    # Intake locks before it writes the case and screens (which locks too) after: a lock this
    # transaction holds already is not asked for again (a round trip each).
    session.connection()  # begins the transaction if nothing has yet (no statement): its locks are held to its end
    transaction = session.get_transaction()
    held = session.info.get(_HELD_LOCKS)
    if held is None or held[0] is not transaction:
        held = (transaction, set())
        session.info[_HELD_LOCKS] = held
    wanted = [key for key in sender.lock_keys() if key not in held[1]]  # sorted: see _LOCKS
    if not wanted:
        return
    numbers = [int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big", signed=True) for key in wanted]
    session.execute(_LOCKS, {"ns": LOCK_NAMESPACE, "keys": numbers})
    if not session.in_nested_transaction():  # one taken in a savepoint goes if it is rolled back
        held[1].update(wanted)


# session.info key: (the transaction, the sender keys whose advisory locks it holds)
_HELD_LOCKS = "gridline.flood.held_locks"


def may_refuse(channel: Channel, sender: Sender) -> bool:
    return sender.known and channel.value in rules()["refuse_channels"]


def refuse_if_over(session: Session, channel: Channel, sender: Sender) -> None:
    """For a channel that may refuse: ``TooManyPetitions`` (with when to try again) when the
    sender has filed ``refuse_above`` or more in the window. Call before writing the case."""
    if not may_refuse(channel, sender):
        return
    r = rules()
    window = timedelta(minutes=r["window_minutes"])
    since = utcnow() - window
    count, oldest = session.execute(_FILED_SINCE, {**sender.params(), "since": since}).one()
    if count >= r["refuse_above"]:
        retry_after = max(1, int((oldest + window - utcnow()).total_seconds()) + 1)
        raise TooManyPetitions(count, int(r["window_minutes"]), retry_after)


def comparable(words: str | None) -> str:
    """Words as compared for duplicates: letters and digits only, lower case."""
    return "".join(ch for ch in (words or "").lower() if ch.isalnum())


def screen(session: Session, case: Case) -> Hold | None:
    """Whether intake should hold ``case`` instead of dispatching it. Counts only petitions
    filed before it (by id), so the answer for a case never changes when later ones come."""
    sender = Sender(case.resident_id, case.contact_phone)
    if not sender.known:
        return None
    lock(session, sender)
    r = rules()
    words = comparable(case.description)
    rows = session.execute(_SCREEN, {
        **sender.params(), "case_id": case.id,
        "since": case.created_at - timedelta(minutes=r["window_minutes"]),
        # no words to compare: no candidates (a window that starts after the case)
        "duplicate_since": case.created_at - timedelta(minutes=r["duplicate_window_minutes"]) if words
        else case.created_at + timedelta(days=1)}).all()
    recent = next(count for count, _, number, _ in rows if number is None)
    for _, _, number, description in sorted((row for row in rows if row[2] is not None), key=lambda row: row[1]):
        score = fuzz.ratio(words, comparable(description))
        if score >= r["duplicate_similarity"]:
            return Hold("duplicate", recent, number, round(score, 1))
    if recent >= r["max_petitions"]:
        return Hold("flood", recent)
    return None


def hold_of(session: Session, case: Case) -> Hold | None:
    """The hold intake wrote on ``case`` (its latest ``hold`` event), or None."""

    row = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.action == "hold")
                       .order_by(CaseEvent.id.desc()).limit(1)).first()
    if row is None or not row.data:
        return None
    d = row.data
    return Hold(d.get("reason", "flood"), int(d.get("recent", 0)), d.get("duplicate_of"), d.get("similarity"))
