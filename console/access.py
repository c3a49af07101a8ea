"""Who may see and do what in the console. Roles are rules data (rules.toml
``[console.roles]``); scoping is one function, ``case_scope``, that every page, every
query and the file server use; masking hides phone numbers and names from roles that may
not see them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import false, or_
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, select

from console.models import ConsoleUser, ConsoleUserGrid
from core.cases.models import Case
from core.people.models import WorkerGrid
from core.people.redaction import (
    CONFIDENTIAL,
    NAME_MASK,
    NUMBER_MASK,
    STAFF,
    Policy,
    mask_name,
    mask_phone,
    redact,
)
from core.places.models import Grid
from core.platform.rules import load_rules
from core.reporting.reports import Scope, workers_of_grids

ROLES = ("admin", "operator", "supervisor", "worker", "department", "viewer")


@dataclass(frozen=True)
class RoleRules:
    scope: str  # "all" or "own"
    see_phone: bool
    pages: frozenset[str]
    actions: frozenset[str]
    # Who the resident of a confidential case (保密) is: its name, phone and voice.
    see_confidential: bool = False


def role_rules(role: str) -> RoleRules:
    entry = console_rules()["roles"].get(role)
    if entry is None:  # a role removed from the rules opens nothing
        return RoleRules("own", False, frozenset(), frozenset())
    return RoleRules(str(entry["scope"]), bool(entry["see_phone"]), frozenset(entry["pages"]),
                     frozenset(entry["actions"]), bool(entry.get("see_confidential", False)))


def console_rules() -> dict:
    return load_rules()["console"]


@dataclass(frozen=True)
class Principal:
    """The logged-in account as the pages see it."""

    id: int
    name: str
    role: str
    worker_id: int | None
    department_id: int | None
    language: str
    rules: RoleRules
    grid_ids: frozenset[int] = field(default_factory=frozenset)  # own grids and every grid below

    @property
    def actor(self) -> str:
        return f"console:{self.name}"

    def may_open(self, page: str) -> bool:
        return page in self.rules.pages

    def may(self, action: str) -> bool:
        return action in self.rules.actions

    @property
    def sees_all(self) -> bool:
        return self.rules.scope == "all"

    @property
    def sees_phone(self) -> bool:
        return self.rules.see_phone

    @property
    def sees_confidential(self) -> bool:
        return self.rules.see_confidential and self.rules.see_phone

    def sees_person(self, case: Case | None) -> bool:
        """Whether this account reads who the resident of ``case`` is (name, phone, voice,
        the words unmasked): its role sees phones and, for a confidential case, may see those."""
        if case is not None and case.confidential:
            return self.sees_confidential
        return self.sees_phone


# The grid tree changes rarely; one copy per process, refreshed every minute.
_TREE_TTL_S = 60.0
_tree: dict[str, tuple[float, dict[int, list[int]]]] = {}
_tree_lock = threading.Lock()


def invalidate_grid_tree() -> None:
    with _tree_lock:
        _tree.clear()


def _children(session: Session) -> dict[int, list[int]]:
    key = str(session.get_bind().url)
    with _tree_lock:
        hit = _tree.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
    children: dict[int, list[int]] = {}
    for gid, parent in session.exec(select(Grid.id, Grid.parent_id)).all():
        children.setdefault(parent, []).append(gid)
    with _tree_lock:
        _tree[key] = (time.monotonic() + _TREE_TTL_S, children)
    return children


def with_descendants(session: Session, grid_ids: set[int]) -> frozenset[int]:
    children = _children(session)
    out, stack = set(), list(grid_ids)
    while stack:
        gid = stack.pop()
        if gid in out:
            continue
        out.add(gid)
        stack.extend(children.get(gid, ()))
    return frozenset(out)


def principal_for(session: Session, user: ConsoleUser) -> Principal:
    rules = role_rules(user.role)
    grids: frozenset[int] = frozenset()
    if rules.scope != "all":
        own = set(session.exec(select(ConsoleUserGrid.grid_id).where(ConsoleUserGrid.user_id == user.id)).all())
        if user.worker_id is not None:
            own |= set(session.exec(select(WorkerGrid.grid_id).where(WorkerGrid.worker_id == user.worker_id)).all())
        grids = with_descendants(session, own)
    return Principal(user.id, user.name, user.role, user.worker_id, user.department_id, user.language,
                     rules, grids)


def case_scope(principal: Principal) -> ColumnElement[bool] | None:
    """The condition a case must meet for this account to see it (None: every case).
    Every console query of cases, and the file server, go through this."""
    if principal.sees_all:
        return None
    terms: list[ColumnElement[bool]] = []
    if principal.worker_id is not None:
        terms.append(Case.worker_id == principal.worker_id)
    if principal.department_id is not None:
        terms.append(Case.department_id == principal.department_id)
    if principal.grid_ids:
        terms.append(Case.grid_id.in_(sorted(principal.grid_ids)))
    return or_(*terms) if terms else false()


def scoped(stmt, principal: Principal):  # noqa: ANN001, ANN201
    condition = case_scope(principal)
    return stmt if condition is None else stmt.where(condition)


def can_see(session: Session, principal: Principal, case_id: int) -> bool:
    """Whether this account may see an existing case."""
    if case_scope(principal) is None:
        return True
    return session.exec(scoped(select(Case.id).where(Case.id == case_id), principal)).first() is not None


# ---- masking: core.people.redaction does it; these choose by role (and by the case) -------------


def phone_for(principal: Principal, phone: str | None, case: Case | None = None) -> str:
    if principal.sees_person(case):
        return phone or ""
    if case is not None and case.confidential:  # not even the tail: 保密
        return NUMBER_MASK if phone else ""
    return mask_phone(phone)


def name_for(principal: Principal, name: str | None, case: Case | None = None) -> str:
    if principal.sees_person(case):
        return name or ""
    if case is not None and case.confidential:
        return NAME_MASK if name else ""
    return mask_name(name)


def text_for(principal: Principal, text: str | None, names: Iterable[str] = (), case: Case | None = None) -> str:
    """Free text (a description, a transcript, a note) as this role may read it: for a role
    that may not see phones and names, the personal data in it masked, the case's known
    names (``names``: its resident's and household's) included. A confidential case read
    by a role that may not see its resident: every number of three digits or more, every
    building, room and door number and every name masked (``CONFIDENTIAL``)."""
    if principal.sees_person(case):
        return text or ""
    return redact(text, names, policy_for(case))


def policy_for(case: Case | None) -> Policy:
    return CONFIDENTIAL if case is not None and case.confidential else STAFF


def hides_voice(principal: Principal, case: Case) -> bool:
    """A confidential case's recordings and voice notes are the resident's voice: a role
    that may not see its resident neither hears nor downloads them."""
    return case.confidential and not principal.sees_confidential


def report_scope(session: Session, principal: Principal):  # noqa: ANN201
    """What the dashboard and the reports may count for this account: its cases (the same
    ``case_scope``) and the scores of the workers of its grids (and its own)."""

    if principal.sees_all:
        return Scope()
    workers = set(workers_of_grids(session, principal.grid_ids)) if principal.grid_ids else set()
    if principal.worker_id is not None:
        workers.add(principal.worker_id)
    return Scope(cases=case_scope(principal), worker_ids=frozenset(workers), label=principal.name)
