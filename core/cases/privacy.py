"""Retention: which cases are past it, and shredding them in batches (``gridline shred``).
The writing is ``core.actions.shred``; this module chooses the cases and keeps count."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, exists
from sqlmodel import Session, select

from core import actions
from core.actions.privacy import files_of
from core.cases.models import Case, CaseEvent, CaseStatus
from core.errors import InvalidInput
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.media import LocalStore, MediaStore
from core.platform.rules import load_rules

_AGE = re.compile(r"\s*(\d{1,5})\s*([dwy]?)\s*", re.I)


def parse_age(text: str) -> timedelta:
    """``365d`` (days), ``52w`` (weeks), ``1y`` (365 days) or a bare number of days."""
    match = _AGE.fullmatch(text or "")
    if not match or int(match.group(1)) == 0:
        raise InvalidInput(f"an age is written like 365d, 52w or 1y, not {text!r}",
                           code="privacy.bad_age", text=text)
    n, unit = int(match.group(1)), (match.group(2) or "d").lower()
    return timedelta(days=n * {"d": 1, "w": 7, "y": 365}[unit])


def retention_age() -> timedelta:
    """How long a closed case keeps its personal data: rules.toml ``[privacy] retention_days``."""
    return timedelta(days=float(load_rules()["privacy"]["retention_days"]))


def due_for_shredding(cutoff: datetime):  # noqa: ANN201
    """Cases whose life ended before ``cutoff`` and are not shredded yet: closed before it, or
    merged into another case before it."""
    merged_before = exists().where(CaseEvent.case_id == Case.id, CaseEvent.action == "merge", CaseEvent.at < cutoff)
    return (Case.shredded_at.is_(None)) & (
        ((Case.status == CaseStatus.closed) & (Case.closed_at < cutoff))
        | ((Case.status == CaseStatus.merged) & merged_before))


@dataclass
class ShredSummary:
    cutoff: datetime
    dry_run: bool
    cases: int = 0
    files: int = 0
    bytes: int = 0
    calls: int = 0
    residents: int = 0
    missing: int = 0
    numbers: list[str] = field(default_factory=list)


def shred_older_than(engine: Engine, age: timedelta | None = None, *, data_dir: str | os.PathLike, dry_run: bool = False,
                     actor: str = "cli", now: datetime | None = None, batch: int | None = None,
                     store: MediaStore | None = None) -> ShredSummary:
    """Shred every case that closed more than ``age`` (default: ``retention_age()``) ago
    (``dry_run``: only count them and their files). One transaction per batch of cases."""
    age = retention_age() if age is None else age
    if age < timedelta(days=1):
        raise InvalidInput("the retention age must be at least a day", code="privacy.age_too_short")
    cutoff = (now or utcnow()) - age
    batch = batch or int(load_rules()["privacy"]["batch_size"])
    summary = ShredSummary(cutoff, dry_run)
    store = store or LocalStore(Path(data_dir))
    after = 0
    while True:
        with session_scope(engine) as session:
            ids = list(session.exec(select(Case.id).where(due_for_shredding(cutoff), Case.id > after)
                                    .order_by(Case.id).limit(batch)).all())
            if not ids:
                break
            after = ids[-1]
            for case_id in ids:
                case = actions.get_case(session, case_id, lock=True)
                if dry_run:
                    _count(session, case, data_dir, store, summary)
                    continue
                done = actions.shred(session, case, actor=actor, data_dir=data_dir, store=store)
                summary.cases += 1
                summary.files += done.files
                summary.bytes += done.bytes
                summary.calls += done.calls
                summary.residents += done.resident_cleared
                summary.missing += len(done.missing)
                if len(summary.numbers) < 1000:
                    summary.numbers.append(case.number)
    return summary


def _count(session: Session, case: Case, data_dir: str | os.PathLike, store: MediaStore,
           summary: ShredSummary) -> None:
    _, calls, keys = files_of(session, case, data_dir)
    summary.cases += 1
    summary.calls += len(calls)
    for key in keys:
        size = store.stat(key)
        if size is None and store.spool_path(key).is_file():
            size = store.spool_path(key).stat().st_size
        if size is not None:
            summary.files += 1
            summary.bytes += size
        else:
            summary.missing += 1
    if len(summary.numbers) < 1000:
        summary.numbers.append(case.number)
