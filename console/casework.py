"""The case page: what it shows (``case_view``) and what its forms do (``apply``).

Every change goes through ``core.actions`` (which writes the ``CaseEvent``) and is also an
``AuditEntry`` with the account and its address, since an event has no "from where"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, select

from console import grids, svgmap
from console.access import Principal, can_see, console_rules
from core import actions
from core.cases import flood
from core.cases.duplicates import DuplicateCandidate, suggest_duplicates
from core.cases.models import Case, CaseEvent, Category, Urgency
from core.cases.queries import absorbed_cases, case_files, known_names
from core.errors import InvalidInput, NotFound
from core.followup.models import Survey
from core.people import audit
from core.people.models import AuditEntry, Department, Resident, Worker
from core.places.models import Grid, Household
from core.platform.clock import utcnow
from core.platform.rules import load_rules


class Forbidden(Exception):
    """The account may not see this case, or may not do this to it."""


def find_case(session: Session, principal: Principal, number: str) -> Case:
    """The case by number, if this account may see it: NotFound, else Forbidden."""
    case = session.exec(select(Case).where(Case.number == number.strip())).first()
    if case is None:
        raise NotFound(f"no case {number}", code="case.not_found", case=number)
    if not can_see(session, principal, case.id):
        raise Forbidden()
    return case


@dataclass
class CaseView:
    case: Case
    category: Category | None
    grid_path: list[Grid]
    worker: Worker | None
    department: Department | None
    resident: Resident | None
    household: Household | None
    files: list
    events: list[CaseEvent]
    surveys: list[Survey]
    duplicates: list
    merged_into: str | None
    absorbed: list[str]  # the numbers of the duplicates merged into this case
    drawing: svgmap.Drawing | None
    choices: dict = field(default_factory=dict)
    # The callers of this case and of each duplicate merged into it: (case number, resident
    # name, phone), unmasked here; the page masks them for its role.
    callers: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    caller_cases: dict[str, Case] = field(default_factory=dict)  # number → case: each caller masked as their case says
    # survey id → the merged duplicate whose caller it asked (absent: the case's own caller)
    survey_callers: dict[int, str] = field(default_factory=dict)
    undo_until: datetime | None = None  # a merged case: until when its merge can be undone
    # The names known for this case and for each duplicate suggested (case id → names): what
    # free text is masked with for a role that may not see names.
    people: dict[int, tuple[str, ...]] = field(default_factory=dict)


def _map(session: Session, case: Case, grid: Grid | None) -> svgmap.Drawing | None:
    point = (case.longitude, case.latitude) if case.latitude is not None and case.longitude is not None else None
    return grids.drawing(session, grid, point)


def _same_sender(session: Session, case: Case) -> list[DuplicateCandidate]:
    """The earlier case intake said this one repeats (same resident or phone, nearly the same
    words: ``core.cases.flood``), first among the suggestions, with its merge button."""
    hold = flood.hold_of(session, case) if flood.DUPLICATE in (case.flags or ()) else None
    if hold is None or not hold.duplicate_of:
        return []
    earlier = session.exec(select(Case).where(Case.number == hold.duplicate_of)).first()
    if earlier is None or earlier.id == case.id:
        return []
    hours = abs((case.created_at - earlier.created_at).total_seconds()) / 3600
    return [DuplicateCandidate(earlier, None, hours, "duplicate.same_sender",
                               {"similarity": f"{hold.similarity or 0:.0f}"})]


def _caller(session: Session, case: Case) -> tuple[str, str | None, str | None]:
    resident = session.get(Resident, case.resident_id) if case.resident_id else None
    return (case.number, resident.name if resident else None,
            case.contact_phone or (resident.phone if resident else None))


def case_view(session: Session, principal: Principal, number: str, who: tuple[str, str]) -> CaseView:
    """Everything the case page shows; the view itself is an audit row (personal data)."""
    case = find_case(session, principal, number)
    grid_path = grids.chain(session, session.get(Grid, case.grid_id) if case.grid_id else None)
    resident = session.get(Resident, case.resident_id) if case.resident_id else None
    household = session.get(Household, resident.household_id) if resident and resident.household_id else None
    events = list(session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id)
                               .order_by(CaseEvent.at, CaseEvent.id)).all())
    # its follow-ups, and (a merged duplicate) the surviving case's that asked its caller
    surveys = list(session.exec(select(Survey).where((Survey.case_id == case.id) | (Survey.caller_case_id == case.id))
                                .order_by(Survey.id)).all())
    merged_into = session.get(Case, case.merged_into_id).number if case.merged_into_id else None
    duplicates = []
    if case.status.value in ("received", "returned", "dispatched"):
        duplicates = [d for d in _same_sender(session, case) + suggest_duplicates(session, case)
                      if can_see(session, principal, d.case.id)]
        seen: set[int] = set()
        duplicates = [d for d in duplicates if not (d.case.id in seen or seen.add(d.case.id))]
    view = CaseView(
        case=case,
        category=session.get(Category, case.category_id) if case.category_id else None,
        grid_path=grid_path,
        worker=session.get(Worker, case.worker_id) if case.worker_id else None,
        department=session.get(Department, case.department_id) if case.department_id else None,
        resident=resident,
        household=household,
        files=case_files(session, case.id),
        events=events,
        surveys=surveys,
        duplicates=duplicates,
        merged_into=merged_into,
        absorbed=[d.number for d in absorbed_cases(session, case)],
        drawing=_map(session, case, grid_path[-1] if grid_path else None),
        undo_until=actions.undo_deadline(session, case),
    )
    # Both ways of a merge name every caller: the surviving case its own and its duplicates',
    # a merged duplicate the surviving case's and the other duplicates' (its own marked).
    into = session.get(Case, case.merged_into_id) if case.merged_into_id else None
    group = (case, *absorbed_cases(session, case)) if view.absorbed else \
        (into, *absorbed_cases(session, into)) if into is not None and case.status.value == "merged" else ()
    view.callers = [_caller(session, c) for c in group]
    view.caller_cases = {c.number: c for c in group}
    asked = {s.caller_case_id for s in surveys if s.caller_case_id}
    if asked:
        numbers = dict(session.exec(select(Case.id, Case.number).where(Case.id.in_(sorted(asked)))).all())
        view.survey_callers = {s.id: numbers[s.caller_case_id] for s in surveys if s.caller_case_id in numbers}
    masked = [c for c in (case, *(d.case for d in duplicates)) if not principal.sees_person(c)]
    if masked:
        view.people = known_names(session, masked)
    if principal.rules.actions:
        view.choices = {
            # Retired categories are not offered; the case's own stays visible.
            "categories": session.exec(select(Category).where(
                (Category.active == True) | (Category.id == case.category_id))  # noqa: E712
                .order_by(Category.code)).all(),
            "grids": session.exec(select(Grid).order_by(Grid.code)).all(),
            # Only who may own a case in its grid (that grid's and the grids' above it): the
            # place page offers them for another grid.
            "staff": grids.staff_for(session, grid_path[-1]) if grid_path else [],
            "departments": session.exec(select(Department).order_by(Department.code)).all(),
            "close_reasons": list(console_rules()["close_reasons"]),
        }
    actor, remote = who
    detail = {"phone_shown": principal.sees_person(case), "files": len(view.files)}
    if case.confidential:  # a view of a confidential case says so, and whether its resident was shown
        detail["confidential"] = True
    audit.record(session, actor=actor, action="case.view", target_type="case", target_id=case.number,
                 detail=detail, remote=remote)
    return view


# ---- what the page offers ----------------------------------------------------------------

# The core step whose starting states a console form needs (the rest are named alike).
STEP_OF = {"edit_text": "classify", "locate": "classify", "review": "annotate", "confidential": "annotate"}


def offered(principal: Principal, case: Case, undo_until: datetime | None = None) -> frozenset[str]:
    """The forms the case page shows: what the role may do and the case's status allows
    (the core's transition table), so that no button is there that can only fail. A merge
    can be undone while ``undo_until`` (``actions.undo_deadline``) has not passed."""
    if case.shredded_at is not None:
        return frozenset()
    out = set()
    for action in principal.rules.actions & ACTIONS.keys():
        if case.status not in actions.TRANSITIONS[STEP_OF.get(action, action)]:
            continue
        if action == "unmerge" and (undo_until is None or undo_until <= utcnow()):
            continue
        if action == "review" and not set(console_rules()["clears_flags"]["review"]) & set(case.flags or ()):
            continue
        if action in ("accept", "start", "report_done", "return") and principal.worker_id is not None \
                and case.worker_id not in (None, principal.worker_id) and not principal.sees_all:
            continue  # another worker's case seen through a grid: its owner acts on it
        out.add(action)
    return frozenset(out)


# ---- the forms ---------------------------------------------------------------------------

def _need(form: dict, key: str, message: str) -> str:
    value = (form.get(key) or "").strip()
    if not value:
        raise InvalidInput(message, code=f"console.required.{key}")
    return value


def _by_code(session: Session, model, code: str, what: str):  # noqa: ANN001, ANN202
    row = session.exec(select(model).where(model.code == code)).first()
    if row is None:
        raise NotFound(f"no {what} {code}", code="console.no_such", what=what, item=code)
    return row


def _clear_flags(session: Session, case: Case, action: str, actor: str) -> None:
    clears = console_rules()["clears_flags"].get(action, ())
    present = tuple(f for f in clears if f in (case.flags or ()))
    if present:
        actions.set_flags(session, case, actor=actor, remove=present)


def _classify(session, case, form, p):  # noqa: ANN001, ANN202
    urgency = form.get("urgency") or None
    if urgency is not None and urgency not in Urgency.__members__:
        raise InvalidInput(f"no urgency {urgency!r}", code="console.no_urgency", urgency=urgency)
    category = form.get("category") or None
    if category == (session.get(Category, case.category_id).code if case.category_id else None):
        category = None
    if urgency == case.urgency.value:
        urgency = None
    actions.classify(session, case, actor=p.actor, category_code=category,
                     urgency=Urgency(urgency) if urgency else None, reason=form.get("reason") or None)


def _edit_text(session, case, form, p):  # noqa: ANN001, ANN202
    text = _need(form, "description", "the text may not be empty")
    actions.classify(session, case, actor=p.actor, description=text, reason="console.text_corrected")


def _locate(session, case, form, p):  # noqa: ANN001, ANN202
    grid = grids.by_code_or_name(session, _need(form, "grid", "choose a grid"))
    actions.locate(session, case, actor=p.actor, grid_id=grid.id, reason=form.get("reason") or "console.located",
                   confidence=1.0)


def _dispatch(session, case, form, p):  # noqa: ANN001, ANN202
    # A case goes out with a category (its department and deadlines follow from it) and a grid.
    chosen = form.get("category")
    if chosen and (case.category_id is None or chosen != session.get(Category, case.category_id).code):
        actions.classify(session, case, actor=p.actor, category_code=chosen)
    if case.category_id is None:
        raise InvalidInput(f"case {case.number}: choose a category before dispatching",
                           code="console.dispatch_needs_category", case=case.number)
    if not form.get("grid") and case.grid_id is None:
        raise InvalidInput(f"case {case.number}: choose a grid before dispatching", code="routing.no_grid",
                           case=case.number)
    grid_code = form.get("grid") or None
    grid = grids.by_code_or_name(session, grid_code) if grid_code else None
    worker = _by_code(session, Worker, form["worker"], "worker") if form.get("worker") else None
    department = _by_code(session, Department, form["department"], "department") if form.get("department") else None
    actions.dispatch(session, case, actor=p.actor, grid_id=grid.id if grid else None,
                     worker_id=worker.id if worker else None, department_id=department.id if department else None,
                     reason=form.get("reason") or "console.dispatched")


def _accept(session, case, form, p):  # noqa: ANN001, ANN202
    behalf = session.get(Worker, case.worker_id) if case.worker_id else None
    actor = p.actor if behalf is None or behalf.id == p.worker_id else f"{p.actor} for {behalf.code}"
    actions.accept(session, case, actor=actor[:64])


def _start(session, case, form, p):  # noqa: ANN001, ANN202
    actions.start(session, case, actor=p.actor, note=form.get("note") or None)


def _report_done(session, case, form, p):  # noqa: ANN001, ANN202
    actions.report_done(session, case, actor=p.actor, note=form.get("note", ""))


def _return(session, case, form, p):  # noqa: ANN001, ANN202
    actions.return_case(session, case, actor=p.actor, reason=form.get("reason", ""))


def _escalate(session, case, form, p):  # noqa: ANN001, ANN202
    actions.escalate(session, case, actor=p.actor, reason=form.get("reason") or "console.escalated")


def _verify(session, case, form, p):  # noqa: ANN001, ANN202
    passed = form.get("passed", "yes") == "yes"
    actions.verify(session, case, actor=p.actor, passed=passed, note=form.get("note") or None)


def _confirmed(case: Case, form: dict) -> None:
    """A step that cannot simply be taken back: its form has a box to tick (confirmed=yes);
    without it nothing is written."""
    if form.get("confirmed") != "yes":
        raise InvalidInput(f"case {case.number}: tick the box to confirm", code="console.not_confirmed",
                           case=case.number)


def _close(session, case, form, p):  # noqa: ANN001, ANN202
    reason = form.get("reason") or ""
    note = form.get("note") or ""
    if reason or note:  # without either the core says what is missing
        _confirmed(case, form)
    actions.close(session, case, actor=p.actor, reason=f"{reason}: {note}" if reason and note else reason or note)


def _unmerge(session, case, form, p):  # noqa: ANN001, ANN202
    actions.unmerge(session, case, actor=p.actor, reason=form.get("reason") or None)


def _shred(session, case, form, p, *, data_dir=None, store=None):  # noqa: ANN001, ANN202
    _confirmed(case, form)
    actions.shred(session, case, actor=p.actor, data_dir=data_dir, store=store)


def _reopen(session, case, form, p):  # noqa: ANN001, ANN202
    actions.reopen(session, case, actor=p.actor, reason=form.get("reason", ""))


def _merge(session, case, form, p):  # noqa: ANN001, ANN202
    into = find_case(session, p, _need(form, "into", "which case is the original?"))
    if into.id != case.id:
        _confirmed(case, form)
    actions.merge(session, case, into, actor=p.actor, reason=form.get("reason") or None)


def _annotate(session, case, form, p):  # noqa: ANN001, ANN202
    actions.annotate(session, case, actor=p.actor, note=_need(form, "note", "the note is empty"))


def _confidential(session, case, form, p):  # noqa: ANN001, ANN202
    value = form.get("confidential", "")
    if value not in ("yes", "no"):
        raise InvalidInput(f"confidential: {value!r} is neither yes nor no", code="console.confidential_choice",
                           value=value)
    actions.set_confidential(session, case, actor=p.actor, confidential=value == "yes",
                             reason=form.get("reason") or None)


def _review(session, case, form, p):  # noqa: ANN001, ANN202
    present = tuple(f for f in console_rules()["clears_flags"]["review"] if f in (case.flags or ()))
    if not present:
        raise InvalidInput("nothing left to review on this case", code="console.nothing_to_review")
    actions.set_flags(session, case, actor=p.actor, remove=present)


ACTIONS: dict[str, Callable] = {
    "classify": _classify, "edit_text": _edit_text, "locate": _locate, "dispatch": _dispatch,
    "accept": _accept, "start": _start, "report_done": _report_done, "return": _return,
    "escalate": _escalate, "verify": _verify, "close": _close, "reopen": _reopen, "merge": _merge,
    "unmerge": _unmerge, "annotate": _annotate, "review": _review, "shred": _shred, "confidential": _confidential,
}

# Steps that cannot simply be taken back: the case page's button leads to a page that says
# what will happen (``confirmation``), whose own button sends the form again with
# ``confirmed=yes``. Works without a script; the server refuses the step unconfirmed.
CONFIRMED_STEPS = ("merge", "close", "shred")


@dataclass
class Confirmation:
    case: Case
    action: str
    form: dict
    into: Case | None = None  # merge: the case this one joins
    callers: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    undo_hours: float = 0.0


def confirmation(session: Session, principal: Principal, number: str, action: str, form: dict) -> Confirmation:
    """What the confirm page of ``action`` shows; refuses as the step itself would (a role
    without it, a case it cannot start from, a merge into a case not there)."""
    if action not in CONFIRMED_STEPS or not principal.may(action):
        raise Forbidden()
    case = find_case(session, principal, number)
    actions.check(case, action)
    out = Confirmation(case, action, {k: v for k, v in form.items() if k not in ("_csrf", "confirmed")})
    if action == "merge":
        into = find_case(session, principal, _need(form, "into", "which case is the original?"))
        if into.id == case.id:
            raise InvalidInput("a case cannot be merged into itself", code="merge.same_case", case=case.number)
        out.into = into
        out.callers = [_caller(session, c) for c in (into, *absorbed_cases(session, into), case)]
        out.undo_hours = float(load_rules()["merge"]["undo_hours"])
    elif action == "close" and not (form.get("reason") or form.get("note")):
        raise InvalidInput("say why the case is closed", code="close.reason_required")
    return out


def _taken_already(session: Session, case: Case, action: str, once: str | None) -> bool:
    """Whether this very form (its one-time mark, kept in the audit row's detail) was taken on
    this case already. Asked under the case's row lock, so two presses cannot both pass."""
    if not once:
        return False
    recent = session.exec(select(AuditEntry.detail).where(
        AuditEntry.target_type == "case", AuditEntry.target_id == case.number, AuditEntry.action == f"case.{action}")
        .order_by(AuditEntry.id.desc()).limit(20)).all()
    return any((detail or {}).get("_once") == once for detail in recent)


def apply(session: Session, principal: Principal, number: str, action: str, form: dict,
          who: tuple[str, str], *, data_dir=None, store=None) -> Case:  # noqa: ANN001
    """One form of the case page: permission, scope, the core action, flags it settles,
    and an audit row. A refused transition raises the core's DomainError (nothing written)."""
    if action not in ACTIONS or not principal.may(action):
        raise Forbidden()
    case = find_case(session, principal, number)
    case = actions.get_case(session, case.id, lock=True)
    if _taken_already(session, case, action, form.get("_once")):
        return case  # the same form sent again: it was taken once, and that is the answer
    if action == "shred":
        _shred(session, case, form, principal, data_dir=data_dir, store=store)
    else:
        ACTIONS[action](session, case, form, principal)
    _clear_flags(session, case, action, principal.actor)
    actor, remote = who
    audit.record(session, actor=actor, action=f"case.{action}", target_type="case", target_id=case.number,
                 detail={k: v[:200] for k, v in form.items() if k != "_csrf"}, remote=remote)
    return case
