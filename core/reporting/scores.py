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
A worker with no evaluated case has no score ("—"), not 0. A worker with fewer assignments
than ``min_cases`` has a score computed but marked ``too_few`` ("样本不足"): it is shown as
such, not as a number, and ranked after the workers whose score stands.

The counts come from one query (``_assignments_by_worker``); the test suite replays random
histories event by event and checks the query agrees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import case as when
from sqlalchemy import func
from sqlmodel import Session, select

from core.cases.models import Case, CaseEvent
from core.errors import InvalidInput
from core.followup.models import Survey, SurveyStatus
from core.people.models import Worker
from core.platform.clock import utcnow
from core.platform.db import plan_with
from core.platform.merging import deep_merge
from core.platform.rules import load_rules

ASSIGNING = ("dispatch", "escalate")
ENDING = frozenset({"dispatch", "escalate", "return", "merge", "reopen", "close"})
LEFT_OUT = frozenset({"return", "merge"})


def parse_quarter(text: str) -> tuple[date, date]:
    """``2026Q4`` -> (first day, first day of the next quarter)."""
    match = re.fullmatch(r"\s*(\d{4})\s*-?\s*[Qq]([1-4])\s*", text or "")
    if not match:
        raise InvalidInput(f"a quarter is written like 2026Q4, not {text!r}",
                           code="period.invalid_quarter", text=text)
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
        weights = self.rules["work"]
        parts = [(float(weights["response_on_time"]), self.response_rate),
                 (float(weights["resolution_on_time"]), self.resolution_rate),
                 (float(weights["closure"]), self.closure_rate)]
        present = [(w, r) for w, r in parts if r is not None and w > 0]
        total = sum(w for w, _ in present)
        if not total:
            return None
        return 100 * sum(w * r for w, r in present) / total

    @property
    def min_cases(self) -> int:
        return int(self.rules.get("min_cases", 0))

    @property
    def too_few(self) -> bool:
        """Too few assignments in the period for the score to mean anything (rules ``min_cases``)."""
        return self.assignments < self.min_cases

    @property
    def standing_score(self) -> float | None:
        """The score as it is shown and ranked: none when there are too few cases."""
        return None if self.too_few else self.score

    @property
    def evaluation_score(self) -> float | None:
        return self.points / self.evaluated if self.evaluated else None

    @property
    def score(self) -> float | None:
        work, evaluation = self.work_score, self.evaluation_score
        if work is None or evaluation is None:
            return None
        return float(self.rules["work_weight"]) * work + float(self.rules["evaluation_weight"]) * evaluation


def quarter_scores(session: Session, quarter: str, *, tz: str = "Asia/Shanghai",
                   as_of: datetime | None = None, rules: dict | None = None) -> list[WorkerScore]:
    """Every worker's score for ``quarter`` (``2026Q4``), best first, workers without a
    score last (by code)."""
    start_day, end_day = parse_quarter(quarter)
    return scores_between(session, _utc(start_day, tz), _utc(end_day, tz), as_of=as_of, rules=rules)


def scores_between(session: Session, start: datetime, end: datetime, *, as_of: datetime | None = None,
                   rules: dict | None = None) -> list[WorkerScore]:
    as_of = as_of or utcnow()
    rules = deep_merge(load_rules()["scores"], rules or {})  # ``rules``: a test's changes
    points = rules["points"]
    workers = {w.code: w for w in session.exec(select(Worker).order_by(Worker.code)).all()}
    out = {code: WorkerScore(code, w.name, rules=rules) for code, w in workers.items()}
    # The planner's row counts for the numbered events are far off (it cannot know how many
    # events a case has), which would make it compile the query to machine code (a second,
    # for a query that runs in less); and the grouping wants more memory than the default to
    # stay off the disk.
    plan_with(session, jit="off", work_mem="'64MB'")
    for row in session.connection().execute(_assignments_by_worker(start, end, as_of, points)).all():
        score = out.get(row.worker)
        if score is None:  # named no worker we know
            continue
        score.assignments = row.assignments
        score.response_on_time, score.response_counted = int(row.response_on_time or 0), int(row.response_counted)
        score.resolution_on_time, score.resolution_counted = (int(row.resolution_on_time or 0),
                                                              int(row.resolution_counted))
        score.closed, score.evaluated, score.points = int(row.closed), int(row.evaluated), float(row.points or 0)
    return sorted(out.values(), key=lambda r: (r.score is None, r.too_few, -(r.score or 0), r.code))


def _assignments_by_worker(start: datetime, end: datetime, as_of: datetime, points: dict):  # noqa: ANN202
    """One query, the module's rules in SQL: the counts of every worker's assignments that
    began in [start, end). A quarter of a busy district is a million events: they are
    numbered and grouped by the database, not read one by one.

    Each case's counted events from ``start`` on, in order (time, then id), are cut into
    spans: every assigning or ending event starts one, and the next one ends it. A span
    started by an assignment in the period is that assignment; the event that starts the
    following span is what ended it."""
    ev = CaseEvent
    ending = ev.action.in_(sorted(ENDING))
    # The period's assignments, found in an index; who each named is read for these rows only.
    named = sa.orm.aliased(CaseEvent, name="named")
    opened = (select(ev.id, ev.case_id, ev.at, named.data["worker"].as_string().label("worker"))
              .join(named, named.id == ev.id)
              .where(ev.action.in_(ASSIGNING), ev.at >= start, ev.at < end).cte("opened"))
    order = {"partition_by": ev.case_id, "order_by": (ev.at, ev.id)}
    stream = (
        select(ev.case_id, ev.id, ev.at, ev.action,
               when((ev.on_time.is_(True), 1), else_=0).label("on_time"),
               func.sum(when((ending, 1), else_=0)).over(**order, rows=(None, 0)).label("span"),
               func.row_number().over(**order).label("seq"))
        # An assignment's span holds only events after it, so nothing before ``start`` counts.
        .where(ev.case_id.in_(select(opened.c.case_id)), ev.at >= start,
               ev.action.in_(sorted(set(ASSIGNING) | ENDING | {"accept", "report_done"})))
        .cte("stream")
    )
    s = stream.c
    # Every ending event twice: as the start of its span, and as the end of the one before.
    starts = select(s.case_id, s.span, s.id, s.action, s.at, s.on_time, s.seq,
                    sa.literal(0).label("ends")).where(s.span > 0)
    ends = select(s.case_id, (s.span - 1).label("span"), s.id, s.action, s.at, s.on_time, s.seq,
                  sa.literal(1).label("ends")).where(s.span > 1, s.action.in_(sorted(ENDING)))
    part = sa.union_all(starts, ends).subquery("part")
    p = part.c
    in_span = p.ends == 0

    def keyed(action: str):  # noqa: ANN202
        # Order and outcome in one number (seq*2 + on_time): its min is the first such event's,
        # its max the last's, and % 2 its on-time flag.
        return when((in_span & (p.action == action), p.seq * 2 + p.on_time))

    spans = (
        select(p.case_id,
               func.max(when((in_span & p.action.in_(sorted(ENDING)), p.id))).label("opened_id"),
               func.max(when((p.ends == 1, p.action))).label("ended_by"),
               func.max(when((p.ends == 1, p.at))).label("ended_at"),
               func.min(keyed("accept")).label("accept"),
               func.max(keyed("report_done")).label("report"))
        .group_by(p.case_id, p.span).subquery("spans")
    )
    sp = spans.c
    answer_points = (
        select(when(*((Survey.satisfied == answer, float(value)) for answer, value in points.items())))
        .where(Survey.case_id == sp.case_id, Survey.status == SurveyStatus.answered,
               Survey.answered_at >= opened.c.at, Survey.answered_at <= sp.ended_at)
        .order_by(Survey.id).limit(1).scalar_subquery()
    )
    running = sp.ended_by.is_(None)

    def past(due):  # noqa: ANN001, ANN202
        # Read only for the assignments still running: a case lookup each.
        return when((running, select(func.count()).where(Case.id == sp.case_id, due < as_of).scalar_subquery()),
                    else_=0)

    # One row per assignment that counts (not returned, not merged away). OFFSET 0 keeps it a
    # query of its own: the planner cannot guess how many spans there are, and folded into
    # the outer query it would look up a case for every span, not only for the assignments'.
    assignments = (
        select(opened.c.worker, sp.ended_by, sp.accept, sp.report,
               past(Case.response_due).label("response_past"), past(Case.resolution_due).label("resolution_past"),
               when((sp.ended_by.in_(("close", "reopen")), answer_points)).label("evaluation"))
        .select_from(spans.join(opened, opened.c.id == sp.opened_id))
        .where(running | sp.ended_by.not_in(sorted(LEFT_OUT)))
        .offset(0).subquery("assignments")
    )
    a = assignments.c
    away = a.ended_by.in_(("escalate", "dispatch"))
    return (
        select(a.worker,
               func.count().label("assignments"),
               func.sum(a.accept % 2).label("response_on_time"),
               func.count().filter(a.accept.is_not(None) | away | (a.response_past > 0)).label("response_counted"),
               func.sum(a.report % 2).label("resolution_on_time"),
               func.count().filter(a.report.is_not(None) | away | (a.resolution_past > 0)).label("resolution_counted"),
               func.count().filter(a.ended_by == "close").label("closed"),
               func.count(a.evaluation).label("evaluated"),
               func.sum(a.evaluation).label("points"))
        .group_by(a.worker)
    )
