"""Writers of reference data: grids, workers, households and their residents, from the files
a district office keeps (``core.reference.importers``, which reads and checks a whole file before it
writes) or the fictional demo district (``core.reference.demo``). Reference data is not a case, so
each run writes one ``AuditEntry`` with what it counted, in the transaction of the rows it
wrote; a registered person whom a household import moves or renames gets a row of their
own (``core.actions.residents.rehouse``). Categories are synced on their own
(``core.actions.categories``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, func, select

from core.cases.models import Case
from core.errors import InvalidInput
from core.people import audit
from core.people.models import Resident, Worker, WorkerGrid
from core.places.models import Grid, Household
from core.platform.db import session_scope
from core.reference import demo, history, importers


def _count(session: Session, table: type) -> int:
    return session.exec(select(func.count()).select_from(table)).one()


def import_grids(session: Session, path: str | Path, *, actor: str) -> int:
    """Grids from a GeoJSON file (new codes added, known ones renamed or redrawn); returns
    the number of features."""
    before = _count(session, Grid)
    features = importers.import_grids_geojson(session, path)
    created = _count(session, Grid) - before
    audit.record(session, actor=actor, action="reference.import_grids", target_type="grid",
                 detail={"file": Path(path).name, "features": features, "created": created,
                         "updated": features - created})
    return features


def import_workers(session: Session, path: str | Path, *, actor: str) -> int:
    """Workers and the grids they answer for, from CSV; returns the number of rows."""
    before = _count(session, Worker)
    rows = importers.import_workers_csv(session, path)
    created = _count(session, Worker) - before
    audit.record(session, actor=actor, action="reference.import_workers", target_type="worker",
                 detail={"file": Path(path).name, "rows": rows, "created": created, "updated": rows - created,
                         "grid_links": _count(session, WorkerGrid)})
    return rows


def import_households(session: Session, path: str | Path, *, actor: str) -> int:
    """Households and their residents, from CSV; returns the number of households."""
    households_before, residents_before = _count(session, Household), _count(session, Resident)
    households = importers.import_households_csv(session, path, actor=actor)
    created = _count(session, Household) - households_before
    audit.record(session, actor=actor, action="reference.import_households", target_type="household",
                 detail={"file": Path(path).name, "households": households, "created": created,
                         "updated": households - created,
                         "residents_added": _count(session, Resident) - residents_before})
    return households


def load_demo(session: Session, *, actor: str, seed: int = 2026) -> demo.DemoSummary:
    """The demo district into a database without grids (``core.reference.demo.load_demo``)."""
    summary = demo.load_demo(session, seed=seed)
    audit.record(session, actor=actor, action="reference.load_demo", target_type="district",
                 detail={"seed": seed, **asdict(summary)})
    return summary


def load_district_year(engine: Engine, *, cases: int, actor: str, seed: int = 7) -> history.Dataset:
    """The demo district with a year of its history (``core.reference.history``: ``cases``
    cases with their events and surveys, a household registry in proportion) into a migrated
    database that has no grids and no cases yet. The rows are bulk-written in several
    transactions (COPY on PostgreSQL); one ``AuditEntry`` then says what was loaded."""
    if cases < 1:
        raise InvalidInput(f"a year of history needs at least one case, not {cases}", code="demo.no_cases")
    with session_scope(engine) as session:
        if session.exec(select(Grid.id).limit(1)).first() is not None or \
                session.exec(select(Case.id).limit(1)).first() is not None:
            raise InvalidInput("the database already holds a district or cases: a year of history is loaded "
                               "only into an empty database (a new GRIDLINE_DATABASE_URL)", code="demo.not_empty")
    data = history.load(engine, cases, seed=seed)
    with session_scope(engine) as session:
        audit.record(session, actor=actor, action="reference.load_district_year", target_type="district",
                     detail={"seed": seed, "cases": data.cases, "events": data.events, "surveys": data.surveys,
                             "calls": data.calls, "households": data.households, "residents": data.residents})
    return data
