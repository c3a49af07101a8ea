"""Quarterly worker scores (季度考核), Wugang's 70/30 assessment: 70 % work, 30 % the
residents' evaluation, on a 100-point scale. Weights and points are rules.toml ``[scores]``.

What counts, so that anyone can recompute a score from the printed inputs:

* A worker's **assignments** in a quarter are the ``dispatch`` and ``escalate`` events
  that named them (``data.worker``) inside the quarter (local time). Each assignment
  lasts until the case's next ``dispatch``, ``escalate``, ``return``, ``merge``,
  ``reopen`` or ``close`` event. An assignment that ended in ``return`` (退单: not theirs)
  or ``merge`` (a duplicate) is left out altogether.
* **On-time response**: the assignment's ``accept`` was on time (the flag on the event).
  Counted late: no accept before the case was escalated away, or none yet and the
  response deadline has passed. Not counted yet: none yet, deadline not passed.
* **On-time resolution**: the assignment's last ``report_done`` was on time. Counted late:
  escalated away before a report, or no report yet and the resolution deadline has
  passed. Not counted yet otherwise.
* **Closure**: the assignment ended with the case closed (结案), out of all counted
  assignments.
* **Evaluation**: the survey answered while the assignment lasted (the answer closes or
  reopens the case, which ends it), in points per answer to "are you satisfied?".
  Surveys that never reached the resident are not an evaluation.

work = (Σ weight × rate) / (Σ weight of the rates that have cases) × 100;
evaluation = mean points; score = work_weight × work + evaluation_weight × evaluation.
A worker with no evaluated case has no score ("—"), not 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import case as when
from sqlalchemy import null
from sqlmodel import Session, select

from core.clock import utcnow
from core.errors import InvalidInput
from core.models import Case, CaseEvent, Survey, SurveyStatus, Worker
from core.rules import load_rules

ASSIGNING = ("dispatch", "escalate")
ENDING = frozenset({"dispatch", "escalate", "return", "merge", "reopen", "close"})
LEFT_OUT = frozenset({"return", "merge"})
DEFAULT_POINTS = {"satisfied": 100, "basically": 80, "not": 0}
DEFAULT_WORK = {"response_on_time": 0.3, "resolution_on_time": 0.4, "closure": 0.3}


def parse_quarter(text: str) -> tuple[date, date]:
    """``2026Q4`` -> (first day, first day of the next quarter)."""
    match = re.fullmatch(r"\s*(\d{4})\s*-?\s*[Qq]([1-4])\s*", text or "")
    if not match:
        raise InvalidInput(f"a quarter is written like 2026Q4, not {text!r}")
    year, quarter = int(match.group(1)), int(match.group(2))
    start = date(year, 3 * quarter - 2, 1)
    end = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
    return start, end


def _utc(day: date, tz: str) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).astimezone(UTC).replace(tzinfo=None)


@dataclass
class WorkerScore:
    code: str
    name: str
    assignments: int = 0
    response_on_time: int = 0
    response_counted: int = 0
    resolution_on_time: int = 0
    resolution_counted: int = 0
    closed: int = 0
    evaluated: int = 0
    points: float = 0.0
    cases: list[str] = field(default_factory=list)
    rules: dict = field(default_factory=dict, repr=False)

    @staticmethod
    def _ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    @property
    def response_rate(self) -> float | None:
        return self._ratio(self.response_on_time, self.response_counted)

    @property
    def resolution_rate(self) -> float | None:
        return self._ratio(self.resolution_on_time, self.resolution_counted)

    @property
    def closure_rate(self) -> float | None:
        return self._ratio(self.closed, self.assignments)

    @property
    def work_score(self) -> float | None:
        weights = self.rules.get("work", DEFAULT_WORK)
        parts = [(float(weights.get("response_on_time", 0)), self.response_rate),
                 (float(weights.get("resolution_on_time", 0)), self.resolution_rate),
                 (float(weights.get("closure", 0)), self.closure_rate)]
        present = [(w, r) for w, r in parts if r is not None and w > 0]
        total = sum(w for w, _ in present)
        if not total:
            return None
        return 100 * sum(w * r for w, r in present) / total

    @property
    def evaluation_score(self) -> float | None:
        return self.points / self.evaluated if self.evaluated else None

    @property
    def score(self) -> float | None:
        work, evaluation = self.work_score, self.evaluation_score
        if work is None or evaluation is None:
            return None
        return (float(self.rules.get("work_weight", 0.7)) * work
                + float(self.rules.get("evaluation_weight", 0.3)) * evaluation)


def quarter_scores(session: Session, quarter: str, *, tz: str = "Asia/Shanghai",
                   as_of: datetime | None = None, rules: dict | None = None) -> list[WorkerScore]:
    """Every worker's score for ``quarter`` (``2026Q4``), best first, workers without a
    score last (by code)."""
    start_day, end_day = parse_quarter(quarter)
    return scores_between(session, _utc(start_day, tz), _utc(end_day, tz), as_of=as_of, rules=rules)


def scores_between(session: Session, start: datetime, end: datetime, *, as_of: datetime | None = None,
                   rules: dict | None = None) -> list[WorkerScore]:
    as_of = as_of or utcnow()
    rules = rules if rules is not None else load_rules().get("scores", {})
    points = {**DEFAULT_POINTS, **rules.get("points", {})}
    workers = {w.code: w for w in session.exec(select(Worker).order_by(Worker.code)).all()}
    out = {code: WorkerScore(code, w.name, rules=rules) for code, w in workers.items()}

    # Plain rows, not ORM objects: a quarter of a busy district is a million events.
    assigned = (select(CaseEvent.case_id)
                .where(CaseEvent.action.in_(ASSIGNING), CaseEvent.at >= start, CaseEvent.at < end))
    history: dict[int, list] = {}
    assigning = []
    # Only the events a span is made of; the data (who a dispatch names) only where it is read.
    counted = sorted(set(ASSIGNING) | ENDING | {"accept", "report_done"})
    named = when((CaseEvent.action.in_(ASSIGNING), CaseEvent.data), else_=null()).label("data")
    for ev in session.exec(
        select(CaseEvent.id, CaseEvent.case_id, CaseEvent.at, CaseEvent.action, CaseEvent.on_time, named)
        .where(CaseEvent.case_id.in_(assigned.scalar_subquery()), CaseEvent.action.in_(counted))
        .order_by(CaseEvent.case_id, CaseEvent.at, CaseEvent.id)
    ).all():
        events = history.setdefault(ev.case_id, [])
        events.append(ev)
        if ev.action in ASSIGNING and start <= ev.at < end:
            assigning.append((ev, len(events)))  # with where the case's later events start
    surveys: dict[int, list] = {}
    for sv in session.exec(
        select(Survey.case_id, Survey.answered_at, Survey.satisfied)
        .where(Survey.case_id.in_(assigned.scalar_subquery()), Survey.status == SurveyStatus.answered)
        .order_by(Survey.id)
    ).all():
        surveys.setdefault(sv.case_id, []).append(sv)
    cases = {row.id: row for row in session.exec(
        select(Case.id, Case.number, Case.response_due, Case.resolution_due)
        .where(Case.id.in_(assigned.scalar_subquery()))
    ).all()}

    for assignment, later in assigning:
        code = (assignment.data or {}).get("worker")
        row = out.get(code)
        if row is None:
            continue
        after = history[assignment.case_id][later:]
        span: list = []
        ended = None
        for ev in after:
            if ev.action in ENDING:
                ended = ev
                break
            span.append(ev)
        if ended is not None and ended.action in LEFT_OUT:
            continue
        case = cases[assignment.case_id]
        still_running = ended is None
        escalated_away = ended is not None and ended.action in ("escalate", "dispatch")
        row.assignments += 1
        row.cases.append(case.number)

        accept = next((ev for ev in span if ev.action == "accept"), None)
        if accept is not None:
            row.response_counted += 1
            row.response_on_time += bool(accept.on_time)
        elif escalated_away or (still_running and case.response_due is not None and case.response_due < as_of):
            row.response_counted += 1

        reports = [ev for ev in span if ev.action == "report_done"]
        if reports:
            row.resolution_counted += 1
            row.resolution_on_time += bool(reports[-1].on_time)
        elif escalated_away or (still_running and case.resolution_due is not None and case.resolution_due < as_of):
            row.resolution_counted += 1

        if ended is not None and ended.action == "close":
            row.closed += 1
        if ended is not None and ended.action in ("close", "reopen"):
            answer = next((sv for sv in surveys.get(case.id, [])
                           if sv.answered_at is not None and assignment.at <= sv.answered_at <= ended.at), None)
            if answer is not None and answer.satisfied in points:
                row.evaluated += 1
                row.points += float(points[answer.satisfied])

    return sorted(out.values(), key=lambda r: (r.score is None, -(r.score or 0), r.code))
