"""The writer of departments and petition categories: ``categories.toml`` (packaged, with
``GRIDLINE_CATEGORIES`` over it) applied to the database. Reference data, not a case, so a
run writes one ``AuditEntry`` with its counts and the codes it touched.

A category no longer in the file is retired (``active`` false), never deleted: cases keep
pointing at it, reports still name it, but routing, the bot and the console no longer offer
it. A retired category that comes back in the file is active again. Departments are added
and updated; one no longer named stays (categories and staff chats may point at it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, select

from core.cases.models import Category, Urgency
from core.deadlines.models import CategorySla
from core.people import audit
from core.people.models import Department
from core.platform.rules import load_categories


@dataclass
class CategoryPlan:
    """What a sync changes (or, in a dry run, would change), by code."""

    departments_added: list[str] = field(default_factory=list)
    departments_changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.departments_added or self.departments_changed or self.added or self.changed
                    or self.retired or self.reactivated)

    def detail(self) -> dict[str, Any]:
        """The audit row's detail: counts and codes."""
        lists = {k: v for k, v in self.__dict__.items() if isinstance(v, list)}
        return {"counts": {k: len(v) for k, v in lists.items()} | {"unchanged": self.unchanged}, **lists}


def _sla_hours(item: dict[str, Any]) -> dict[Urgency, tuple[float, float]]:
    return {u: (float(item["sla"][u.value][0]), float(item["sla"][u.value][1])) for u in Urgency}


def _category_fields(item: dict[str, Any], department_id: int) -> dict[str, Any]:
    return {"name": item["name"], "department_id": department_id, "keywords": list(item["keywords"]),
            "duplicate_radius_m": float(item["duplicate_radius_m"]),
            "duplicate_window_hours": float(item["duplicate_window_hours"])}


def sync_categories(session: Session, *, actor: str, data: dict[str, Any] | None = None,
                    dry_run: bool = False) -> CategoryPlan:
    """Make the database's departments and categories what ``data`` (default: this process's
    ``load_categories()``) says. ``dry_run``: only say what would change. Writes one audit
    row when anything changed; a run that changes nothing writes nothing."""
    data = load_categories() if data is None else data
    plan = CategoryPlan()
    departments = {d.code: d for d in session.exec(select(Department)).all()}
    for item in data["department"]:
        dept = departments.get(item["code"])
        if dept is None:
            plan.departments_added.append(item["code"])
            if not dry_run:
                dept = departments[item["code"]] = Department(code=item["code"], name=item["name"], phone=item["phone"])
                session.add(dept)
        elif (dept.name, dept.phone) != (item["name"], item["phone"]):
            plan.departments_changed.append(item["code"])
            if not dry_run:
                dept.name, dept.phone = item["name"], item["phone"]
                session.add(dept)
    if not dry_run:
        session.flush()

    categories = {c.code: c for c in session.exec(select(Category)).all()}
    slas: dict[tuple[int, Urgency], CategorySla] = {
        (s.category_id, s.urgency): s for s in session.exec(select(CategorySla)).all()}
    for item in data["category"]:
        code = item["code"]
        dept = departments.get(item["department"])
        wanted = _category_fields(item, dept.id if dept is not None else -1)
        hours = _sla_hours(item)
        category = categories.get(code)
        if category is None:
            plan.added.append(code)
            if not dry_run:
                category = Category(code=code, **wanted)
                session.add(category)
                session.flush()
                for urgency, (response, resolution) in hours.items():
                    session.add(CategorySla(category_id=category.id, urgency=urgency,
                                            response_hours=response, resolution_hours=resolution))
            continue
        current = {key: getattr(category, key) for key in wanted}
        current["keywords"] = list(current["keywords"] or [])
        current_hours = {u: (s.response_hours, s.resolution_hours) for (cid, u), s in slas.items()
                         if cid == category.id}
        if not category.active:
            plan.reactivated.append(code)
        elif current != wanted or current_hours != hours:
            plan.changed.append(code)
        else:
            plan.unchanged += 1
            continue
        if dry_run:
            continue
        for key, value in wanted.items():
            setattr(category, key, value)
        category.active = True
        session.add(category)
        for urgency, (response, resolution) in hours.items():
            row = slas.get((category.id, urgency))
            if row is None:
                row = CategorySla(category_id=category.id, urgency=urgency, response_hours=0, resolution_hours=0)
            row.response_hours, row.resolution_hours = response, resolution
            session.add(row)

    named = {item["code"] for item in data["category"]}
    for code, category in sorted(categories.items()):
        if code not in named and category.active:
            plan.retired.append(code)
            if not dry_run:
                category.active = False
                session.add(category)

    if not dry_run and not plan.empty:
        session.flush()
        audit.record(session, actor=actor, action="category.sync", target_type="category", detail=plan.detail())
    return plan
