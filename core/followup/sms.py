"""Progress SMS for hotline callers: which changes of a case a caller hears about by SMS
(rules.toml ``[sms]``), queued as a durable job in the transaction of the change, once per
case and status. Only a mobile number gets one (``core.people.phones.is_mobile``); a caller who
replied 退订/TD (``Resident.sms_opted_out_at``) gets none. Sending is the hotline's
(``ivr/sms.py``, Twilio Messages). It follows a change as a subscriber (``core.cases.events``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session

from core.actions.survey import contact_resident
from core.cases import events
from core.cases.events import CaseChange
from core.cases.models import Case, CaseStatus
from core.cases.queries import absorbed_cases
from core.people.models import Resident
from core.people.phones import is_mobile
from core.platform import jobs
from core.platform.rules import load_rules

SMS_JOB = jobs.declare("sms_progress", "ivr/sms.py: a progress SMS to a hotline caller's mobile")


@dataclass(frozen=True)
class OtherChannel:
    """A channel outside ``[sms] case_channels`` whose residents may still get the SMS: the
    web chat, for a number verified by an SMS code, when its page is closed. Registered at
    start-up by the channel (core imports no channel)."""

    name: str
    number: Callable[[Session, Case], str | None]  # the verified number for this case, or None
    live: Callable[[Session, Case], bool]  # the resident hears of it live right now: no SMS


_others: dict[str, OtherChannel] = {}


def register_channel(other: OtherChannel) -> None:
    _others[other.name] = other


def _other_number(session: Session, case: Case) -> str | None:
    for other in _others.values():
        phone = other.number(session, case)
        if phone:
            return phone
    return None


def sms_rules() -> dict:
    return load_rules()["sms"]


def is_opt_out(text: str | None) -> bool:
    """A reply that stops the SMS (退订, TD, td …)."""
    said = "".join((text or "").split()).casefold()
    return bool(said) and said in {"".join(w.split()).casefold() for w in sms_rules()["opt_out_words"]}


def sms_number(session: Session, case: Case) -> tuple[str | None, Resident | None]:
    """The number a progress SMS for ``case`` goes to (``None``: none goes), and its resident."""
    resident = contact_resident(session, case)
    phone = case.contact_phone or (resident.phone if resident is not None else None) or _other_number(session, case)
    if resident is not None and resident.sms_opted_out_at is not None:
        return None, resident
    return (phone if is_mobile(phone) else None), resident


def queue_progress_sms(session: Session, case: Case, to_status: CaseStatus) -> None:
    """Queue the SMS a case's new status ``to_status`` calls for, if any."""
    rules = sms_rules()
    if to_status.value not in rules["statuses"]:
        return
    if case.channel.value not in rules["case_channels"] and not any(
            other.number(session, case) and not other.live(session, case) for other in _others.values()):
        return
    phone, _ = sms_number(session, case)
    if phone is None:
        return
    jobs.enqueue(session, SMS_JOB, {"case_id": case.id, "status": to_status.value},
                 dedupe_key=f"sms:{case.id}:{to_status.value}")


def on_case_change(change: CaseChange) -> None:
    """The subscriber (``core.cases.events``): a new status may be news for an SMS, for the
    case's caller and for the caller of each duplicate merged into it (told under the number
    they were given)."""
    if not change.status_changed:
        return
    queue_progress_sms(change.session, change.case, change.to_status)
    duplicates = absorbed_cases(change.session, change.case)
    if not duplicates:
        return
    told = {sms_number(change.session, change.case)[0]}
    for duplicate in duplicates:
        phone = sms_number(change.session, duplicate)[0]
        if phone not in told:  # the same caller twice (a repeat call) hears it once
            told.add(phone)
            queue_progress_sms(change.session, duplicate, change.to_status)


def subscribe() -> None:
    """Registered at start-up by the composition root (``gridline.wiring``)."""
    events.subscribe("sms.progress", on_case_change)
