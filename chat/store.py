"""What the bot asks of the database, as plain synchronous functions.

The handlers call these through ``Deps.db`` (off the event loop) so it never waits on
the database. Case state changes only through ``core.actions`` / ``core.cases.intake``; this
module reads, links residents to their chat, and stores attachments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlmodel import select

from core import actions
from core.cases.intake import file_petition_in, suggest_categories
from core.cases.models import Attachment, Case, Category
from core.errors import DomainError, NotFound
from core.followup.models import Survey, SurveyStatus
from core.people.models import Resident
from core.places.indexes import indexes_for
from core.places.models import Grid, Household
from core.places.routing import normalise_phone, phone_variants
from core.platform import media_types, uploads
from core.platform.db import session_scope

# ---------------------------------------------------------------- residents


@dataclass
class ResidentInfo:
    id: int
    language: str
    phone: str | None
    household_address: str | None


def _chat_residents(session, chat_id: int) -> list[Resident]:
    # A chat may have a resident of its own and, once linked by phone, the registered one;
    # the registered household's resident comes first.
    rows = session.exec(select(Resident).where(Resident.chat_id == str(chat_id))).all()
    return sorted(rows, key=lambda r: (r.household_id is None, r.id))


def resident_for_chat(engine: Engine, chat_id: int, language: str, name: str | None = None) -> ResidentInfo:
    actor = f"resident:chat:{chat_id}"
    with session_scope(engine) as session:
        rows = _chat_residents(session, chat_id)
        if rows:
            resident = rows[0]
            if resident.language != language:
                for r in rows:
                    actions.set_language(session, r, language, actor=actor)
        else:
            resident = actions.create_for_chat(session, chat_id, actor=actor, language=language, name=name)
        household = session.get(Household, resident.household_id) if resident.household_id else None
        return ResidentInfo(resident.id, resident.language, resident.phone, household.address if household else None)


def link_contact(engine: Engine, chat_id: int, phone: str, language: str, name: str | None = None) -> str | None:
    """The chat shared its own phone number: link the registered resident with that number
    to this chat. Returns the household address, or None when the number is not registered
    (it is then kept on the chat's own resident)."""

    normal = normalise_phone(phone) or phone.strip()
    actor = f"resident:chat:{chat_id}"
    with session_scope(engine) as session:
        registered = session.exec(
            select(Resident)
            .where(Resident.phone.in_(sorted(phone_variants(phone))), Resident.household_id.is_not(None))
            .order_by(Resident.id)
        ).all()
        for resident in registered:
            if resident.chat_id in (None, "", str(chat_id)):
                actions.link_chat(session, resident, str(chat_id), actor=actor, language=language)
                household = session.get(Household, resident.household_id)
                return household.address if household else None
        own = _chat_residents(session, chat_id)
        if own:
            resident = own[0]
        else:
            resident = actions.create_for_chat(session, chat_id, actor=actor, language=language, name=name)
        actions.set_phone(session, resident, normal, actor=actor)
        return None


# ---------------------------------------------------------------- places


def grid_at(engine: Engine, lat: float, lon: float) -> str | None:
    """Name of the micro grid containing the point, or None outside every grid."""
    found = indexes_for(engine).locator.locate_point(lat, lon)
    if found is None:
        return None
    with session_scope(engine) as session:
        grid = session.get(Grid, found.grid_id)
        return grid.name if grid else None


def match_address(engine: Engine, text: str) -> tuple[str, str] | None:
    """A typed address -> (the place's name as registered, its grid's name), or None."""
    gazetteer = indexes_for(engine).gazetteer
    found = gazetteer.match(text)
    if found is None:
        return None
    place = found.place  # the registered name (a building, a flat, an estate), to confirm
    with session_scope(engine) as session:
        grid = session.get(Grid, found.grid_id)
        grid_name = grid.name if grid else ""
    return place or grid_name, grid_name


def address_choices(engine: Engine, text: str) -> list[tuple[int, str]]:
    """Close places a typed address could be and the matcher would not choose between
    (``RouteResult.choices``: two buildings, two estates a character apart): the resident
    is asked. Empty when the match is sure, or names nothing."""
    found = indexes_for(engine).gazetteer.match(text)
    if found is None or len(found.choices) < 2:
        return []
    return [(int(grid_id), name) for grid_id, name in found.choices]


def pick_address(engine: Engine, text: str, choices: list[tuple[int, str]]) -> int | None:
    """Which of ``choices`` a typed answer names (``Gazetteer.pick``), or ``None``."""
    return indexes_for(engine).gazetteer.pick(text, [(int(g), str(n)) for g, n in choices])


# ---------------------------------------------------------------- categories


def category_options(engine: Engine, text: str, limit: int = 6) -> list[tuple[str, str]]:
    """(code, name) to offer: the suggested ones first, then others, at most ``limit``."""
    with session_scope(engine) as session:
        suggested = [c for c, _ in suggest_categories(session, text, limit=3)]
        if len(suggested) < 2:
            rest = session.exec(select(Category).where(Category.code != "other", Category.active == True)  # noqa: E712
                                .order_by(Category.id)).all()
            suggested += [c for c in rest if c.code not in {s.code for s in suggested}]
        return [(c.code, c.name) for c in suggested[:limit] if c.code != "other"]


def category_name(engine: Engine, code: str | None) -> str | None:
    if not code:
        return None
    with session_scope(engine) as session:
        category = session.exec(select(Category).where(Category.code == code)).first()
        return category.name if category else None


# ---------------------------------------------------------------- attachments and filing


def save_attachment(engine: Engine, kind: str, path: str, mime: str | None, size: int, sha256: str,
                    waiting_in: str | None = None) -> int:
    """``mime`` is the type detected from the file's bytes (``chat.media.Stored``);
    ``waiting_in``: the media store could not take it yet (``core.platform.uploads``)."""
    with session_scope(engine) as session:
        att = Attachment(kind=kind, path=path, mime_type=media_types.servable(mime), size=size, sha256=sha256)
        session.add(att)
        if waiting_in:
            uploads.mark_waiting(session, att, waiting_in)
        session.flush()
        return att.id


@dataclass
class Filed:
    number: str
    created: bool
    dispatched: bool
    grid: str | None
    due: datetime | None
    # Kept for an operator instead of dispatched (core.cases.flood): "duplicate" (of the case
    # ``duplicate_of``) or "flood".
    held: str | None = None
    duplicate_of: str | None = None


def file(engine: Engine, petition: actions.Petition) -> Filed:
    """Durable first: the case and its files are written (idempotently) in one transaction,
    routing behind a savepoint in it."""
    with session_scope(engine) as session:
        result = file_petition_in(session, petition, actor="resident:chat")
        case = result.case
        grid = session.get(Grid, case.grid_id) if case.grid_id else None
        held = result.held
        return Filed(case.number, result.created, result.dispatched, grid.name if grid else None,
                     case.resolution_due, held.reason if held else None, held.duplicate_of if held else None)


# ---------------------------------------------------------------- follow-up


@dataclass
class CaseView:
    number: str
    status: str
    category: str | None
    description: str
    created: datetime
    due: datetime | None
    own: bool


def _view(session, case: Case, chat_id: int) -> CaseView:
    category = session.get(Category, case.category_id) if case.category_id else None
    resident = session.get(Resident, case.resident_id) if case.resident_id else None
    own = resident is not None and resident.chat_id == str(chat_id)
    due = case.resolution_due if case.status.value not in ("closed", "merged") else None
    return CaseView(case.number, case.status.value, category.name if category else None,
                    case.description, case.created_at, due, own)


def case_view(engine: Engine, number: str, chat_id: int) -> CaseView | None:
    with session_scope(engine) as session:
        try:
            case = actions.get_case(session, number)
        except NotFound:
            return None
        return _view(session, case, chat_id)


def my_cases(engine: Engine, chat_id: int, limit: int = 10) -> list[CaseView]:
    with session_scope(engine) as session:
        ids = [r.id for r in _chat_residents(session, chat_id)]
        if not ids:
            return []
        cases = session.exec(
            select(Case).where(Case.resident_id.in_(ids)).order_by(Case.created_at.desc(), Case.id.desc()).limit(limit)
        ).all()
        return [_view(session, c, chat_id) for c in cases]


def local(at: datetime | None, tz: str) -> str:
    if at is None:
        return ""
    return at.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


@dataclass
class SurveyView:
    id: int
    case_number: str
    description: str
    chat_id: str | None
    language: str
    pending: bool


def survey_view(engine: Engine, survey_id: int) -> SurveyView | None:
    """The survey as its resident sees it: their own case's number and words (a merged
    duplicate's caller is asked about the case they reported, ``actions.caller_case``)."""
    with session_scope(engine) as session:
        survey = session.get(Survey, survey_id)
        if survey is None:
            return None
        case = actions.caller_case(session, survey)
        resident = session.get(Resident, case.resident_id) if case.resident_id else None
        return SurveyView(survey.id, case.number, case.description,
                          resident.chat_id if resident else None,
                          resident.language if resident else "zh",
                          survey.status == SurveyStatus.pending)


def count_attempt(engine: Engine, survey_id: int) -> None:
    """The survey's questions were sent to the resident's chat: one attempt, on the case's timeline."""
    with session_scope(engine) as session:
        survey = session.get(Survey, survey_id)
        if survey is not None and survey.status == SurveyStatus.pending:
            actions.survey_attempt(session, survey, actor="system:chat", outcome="sent",
                                   data={"channel": "chat"})


class SurveyRefused(Exception):
    def __init__(self, why: str):
        super().__init__(why)
        self.why = why  # "gone", "not_yours", "answered"


CHAT_SURVEY_ACTOR = "resident:chat:"  # + chat id: the resident answered with the chat's buttons


def record_survey(engine: Engine, survey_id: int, chat_id: int, solved: str, satisfied: str,
                  comment: str | None, *, actor: str | None = None,
                  files: tuple[actions.FileRef, ...] = ()) -> tuple[str, str]:
    """Record the resident's answer; only the chat that owns the case may. Returns
    (the resident's case number, what became of the case: its new status, or "answered" for
    a merged duplicate's caller whose answer left it as it was). ``actor`` defaults to the
    resident in this chat; ``files`` (a voice comment) join the case in the same transaction."""
    with session_scope(engine) as session:
        survey = session.exec(select(Survey).where(Survey.id == survey_id).with_for_update()).first()
        if survey is None:
            raise SurveyRefused("gone")
        case = session.get(Case, survey.case_id)
        theirs = actions.caller_case(session, survey)
        resident = session.get(Resident, theirs.resident_id) if theirs.resident_id else None
        if resident is None or resident.chat_id != str(chat_id):
            raise SurveyRefused("not_yours")
        if survey.status != SurveyStatus.pending:
            raise SurveyRefused("answered")
        actor = actor or f"{CHAT_SURVEY_ACTOR}{chat_id}"
        if files:
            actions.attach(session, case, actor=actor, files=files, note="survey comment")
        before = case.status
        try:
            case = actions.record_survey(session, survey, solved=solved, satisfied=satisfied, comment=comment,
                                         actor=actor, comment_heard=bool(files))
        except DomainError as exc:
            raise SurveyRefused("answered") from exc
        if survey.caller_case_id is not None and case.status == before:
            return theirs.number, "answered"
        return theirs.number, case.status.value


def survey_unreachable(engine: Engine, survey_id: int) -> None:
    with session_scope(engine) as session:
        survey = session.get(Survey, survey_id)
        if survey is not None and survey.status == SurveyStatus.pending:
            actions.survey_unreachable(session, survey, actor="system:chat")
