"""Intake: what every channel calls when a resident has described a problem.

Durable first: the petition is committed before anything that may be slow or fail
(routing, classification, dispatch). If routing cannot decide, the case waits in triage
(status ``received``) for an operator; nothing is lost either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam
from sqlmodel import Session, select

from core import actions
from core.cases import catalogue, flood
from core.cases.catalogue import CategoryRef
from core.cases.models import Case, CaseStatus
from core.errors import DomainError
from core.places import indexes, routing
from core.platform.db import savepoint, session_scope
from core.platform.i18n import ROUTING_TRACE
from core.platform.retry import transient
from core.platform.rules import load_rules

log = logging.getLogger(__name__)


def invalidate_routing() -> None:
    """Forget this process's routing indexes and categories (tests that empty a database)."""
    indexes.invalidate()
    catalogue.invalidate()


def routing_indexes(session: Session):  # noqa: ANN201
    """(GridLocator, Gazetteer) for this database, from the one cache in ``core.places.indexes``."""
    snapshot = indexes.routing_indexes(session)
    return snapshot.locator, snapshot.gazetteer


@dataclass
class IntakeResult:
    case: Case
    created: bool
    dispatched: bool
    route_reason: str | None = None
    # Why it was kept for an operator instead of dispatched (a suggested duplicate, a flood).
    held: flood.Hold | None = None


def suggest_categories(session: Session, text: str, limit: int = 3) -> list[tuple[CategoryRef, float]]:
    """Categories whose keywords appear in the text, best first (score = matched keyword
    characters, so a specific phrase beats a vague one)."""
    text = (text or "").replace(" ", "")
    scored: list[tuple[CategoryRef, float]] = []
    for category in catalogue.catalogue(session).active:
        words = [category.name, *category.keywords]
        score = sum(len(w) for w in words if w and w in text)
        if score:
            scored.append((category, float(score)))
    scored.sort(key=lambda pair: (-pair[1], pair[0].code))
    return scored[:limit]


def file_petition(engine: Engine, petition: actions.Petition, *, actor: str = "system") -> IntakeResult:
    """Write the case and, in the same transaction but behind a savepoint, route and
    dispatch it. Whatever goes wrong in routing rolls back to the savepoint: the case
    itself is committed and waits in triage. One commit keeps intake to one disk flush.

    A channel that may refuse a flood (rules ``[intake.flood] refuse_channels``) gets
    ``TooManyPetitions`` before anything is written; every other petition is written."""
    with session_scope(engine) as session:
        return file_petition_in(session, petition, actor=actor)


def file_petition_in(session: Session, petition: actions.Petition, *, actor: str = "system") -> IntakeResult:
    """``file_petition`` inside the caller's transaction, for a channel that records its
    own bookkeeping (the call session, an attachment) in the same commit."""
    sender = flood.Sender(petition.resident_id, petition.contact_phone)
    flood.lock(session, sender)  # before the case is written: see core.cases.flood
    earlier = _filed_already(session, petition)  # a retry is answered with its case, never refused
    if earlier is None and flood.may_refuse(petition.channel, sender):
        flood.refuse_if_over(session, petition.channel, sender)
    case, created = (earlier, False) if earlier is not None else \
        actions.submit_petition(session, petition, actor=actor, key_checked=True)
    if not created:
        return IntakeResult(case, False, case.status != CaseStatus.received, held=_held(session, case))
    try:
        with savepoint(session):
            return route_and_dispatch(session, case, actor=actor)
    except Exception as exc:  # the case is safe in triage; an operator will route it
        if transient(exc):  # the connection is lost, the case's INSERT with it: try it all again
            raise
        log.exception("auto-routing of case %s failed; left in triage", case.number)
        session.refresh(case)
        return IntakeResult(case, True, False)


# Statements of the intake path are built once, their values given as parameters: building
# and keying one per petition cost more Python than running it (bench/intake_profile.py).
_CASE_ID_BY_KEY = select(Case.id).where(Case.idempotency_key == bindparam("key"))


def _filed_already(session: Session, petition: actions.Petition) -> Case | None:
    """The case a petition with the same idempotency key filed before (a retry), or None."""
    key = petition.idempotency_key
    if not key:
        return None
    # Almost every petition is new: ask for the id alone (a whole case row costs its forty
    # columns' description and an ORM object for nothing) and load the case only for a retry.
    case_id = session.execute(_CASE_ID_BY_KEY, {"key": key}).scalar()
    return session.get(Case, case_id) if case_id is not None else None


def _held(session: Session, case: Case) -> flood.Hold | None:
    """The hold of a case filed before (a retried webhook or a second press asks again)."""
    if not {flood.DUPLICATE, flood.FLOOD} & set(case.flags or []):
        return None
    return flood.hold_of(session, case)


def route_after_words(session: Session, case: Case, *, actor: str = "system") -> IntakeResult | None:
    """A case filed before its words were recognised (``transcript_pending``) was routed on
    what was known then (the caller's household, or nothing) and may wait in triage. Now
    that the words (and a spoken address) are in, route and dispatch it as intake would
    have. Only while it is still ``received``: once someone has dispatched it, theirs stands."""
    if case.status != CaseStatus.received:
        return None
    try:
        with savepoint(session):
            actions.set_flags(session, case, actor=actor, remove=("needs_triage",))
            return route_and_dispatch(session, case, actor=actor)
    except Exception:  # the words are kept; the case stays in triage as it was
        log.exception("routing case %s after its transcript failed; left in triage", case.number)
        session.refresh(case)
        return None


def auto_route(engine: Engine, case_id: int, *, actor: str = "system") -> IntakeResult:
    """Route and dispatch a case already filed (e.g. one recovered after a crash)."""
    with session_scope(engine) as session:
        return route_and_dispatch(session, actions.get_case(session, case_id), actor=actor)


def route_and_dispatch(session: Session, case: Case, *, actor: str = "system") -> IntakeResult:
    # The lookups below read grids, workers and rules, never the case being changed, so
    # its updates can wait for one flush at the end instead of one per query.
    with session.no_autoflush:
        return _route_and_dispatch(session, case, actor=actor)


def _route_and_dispatch(session: Session, case: Case, *, actor: str) -> IntakeResult:
    rules = load_rules()["intake"]
    # Screened before routing, so a held petition is flagged whatever routing finds; it is
    # still classified and placed, for the operator who decides.
    held = flood.screen(session, case)
    if held is not None:
        words = f"duplicate of {held.duplicate_of}" if held.duplicate_of else f"{held.recent + 1} petitions in the window"
        actions.hold(session, case, actor=actor, reason=words, flags=held.flags, data=held.data())
    if case.category_id is None:
        suggestions = suggest_categories(session, f"{case.description} {case.address_text or ''}")
        if suggestions:
            actions.classify(session, case, actor=actor, category_code=suggestions[0][0].code,
                             reason="suggested from the description")
    locator, gazetteer = routing_indexes(session)
    route = routing.route_case(
        session,
        locator=locator,
        gazetteer=gazetteer,
        latitude=case.latitude,
        longitude=case.longitude,
        phone=case.contact_phone,
        address_text=case.address_text or case.description,
    )
    if route is None:
        actions.set_flags(session, case, actor=actor, add=("needs_triage",))
        return IntakeResult(case, True, False, held=held)
    actions.locate(session, case, actor=actor, grid_id=route.grid_id, trace=route.trace,
                   confidence=route.confidence)
    if held is not None:
        return IntakeResult(case, True, False, route.reason, held=held)
    sure = route.confidence >= rules["auto_dispatch_min_confidence"]
    if not (sure and case.category_id is not None):
        actions.set_flags(session, case, actor=actor, add=("needs_triage",))
        return IntakeResult(case, True, False, route.reason)
    try:
        # dispatch refuses (no one on duty, say) before it changes anything
        actions.dispatch(session, case, actor=actor, reason=ROUTING_TRACE)
    except DomainError as exc:
        actions.set_flags(session, case, actor=actor, add=("needs_triage",))
        log.warning("case %s not dispatched: %s", case.number, exc)
        return IntakeResult(case, True, False, route.reason)
    return IntakeResult(case, True, True, route.reason)
