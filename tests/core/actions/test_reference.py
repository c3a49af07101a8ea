"""core.actions.reference: a grid, worker or household import and the demo district leave
one audit row per run with what they counted; a registered person the household import
moves or renames leaves one of their own."""

from __future__ import annotations

from sqlmodel import Session, select

from core import actions
from core.actions import reference
from core.people.models import AuditEntry, Resident
from core.places.models import Grid, Household
from tests.core.reference.test_importers import FIXTURES


def audited(session: Session, action: str) -> list[AuditEntry]:
    session.flush()
    return list(session.exec(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all())


def test_a_grid_import_is_one_row_with_its_counts(session):
    assert reference.import_grids(session, FIXTURES / "grids_good.geojson", actor="cli:li") == 7
    (row,) = audited(session, "reference.import_grids")
    assert (row.actor, row.target_type) == ("cli:li", "grid")
    assert row.detail == {"file": "grids_good.geojson", "features": 7, "created": 7, "updated": 0}
    reference.import_grids(session, FIXTURES / "grids_good.geojson", actor="cli:li")  # names again
    assert audited(session, "reference.import_grids")[1].detail == {
        "file": "grids_good.geojson", "features": 7, "created": 0, "updated": 7}
    assert len(session.exec(select(Grid)).all()) == 7


def test_a_worker_import_is_one_row_with_its_counts(session):
    reference.import_grids(session, FIXTURES / "grids_good.geojson", actor="cli:li")
    assert reference.import_workers(session, FIXTURES / "workers_good.csv", actor="cli:li") == 6
    (row,) = audited(session, "reference.import_workers")
    assert row.detail["rows"] == 6 and row.detail["created"] == 6 and row.detail["updated"] == 0
    assert row.detail["grid_links"] >= 6


def test_a_household_import_is_one_row_and_a_moved_person_one_more(session):
    reference.import_grids(session, FIXTURES / "grids_good.geojson", actor="cli:li")
    # A caller the hotline met before the registry knew them: a resident with no household.
    caller = actions.resident_for_phone(session, "13900000001", actor="hotline")
    assert reference.import_households(session, FIXTURES / "households_good.csv", actor="cli:li") == 3
    (row,) = audited(session, "reference.import_households")
    # 5 residents in the file: the caller is adopted, 4 are new
    assert row.detail == {"file": "households_good.csv", "households": 3, "created": 3, "updated": 0,
                          "residents_added": 4}
    ht01 = session.exec(select(Household).where(Household.code == "HT01")).one()
    (moved,) = audited(session, "resident.rehouse")
    assert (moved.actor, moved.target_id) == ("cli:li", str(caller.id))
    assert moved.detail == {"household_id": ht01.id, "before": None, "renamed": True}
    assert session.get(Resident, caller.id).name == "陈一"

    # The same file again: counted as updates, nobody moved, nobody added.
    reference.import_households(session, FIXTURES / "households_good.csv", actor="cli:li")
    assert audited(session, "reference.import_households")[1].detail == {
        "file": "households_good.csv", "households": 3, "created": 0, "updated": 3, "residents_added": 0}
    assert len(audited(session, "resident.rehouse")) == 1


def test_the_demo_district_is_one_row_with_its_summary(session):
    summary = reference.load_demo(session, actor="system:serve")
    (row,) = audited(session, "reference.load_demo")
    assert row.actor == "system:serve" and row.target_type == "district"
    assert row.detail["seed"] == 2026
    assert row.detail["households"] == summary.households > 0
    assert row.detail["residents"] == summary.residents > 0


def test_a_year_of_history_loads_into_an_empty_database_once_with_one_audit_row(engine):
    from sqlalchemy import text

    from core.errors import InvalidInput
    from core.platform.db import session_scope

    data = reference.load_district_year(engine, cases=300, actor="cli:li")
    assert data.cases == 300 and data.events >= 5 * 300 and data.households >= 500
    with session_scope(engine) as session:
        (row,) = audited(session, "reference.load_district_year")
        assert (row.actor, row.target_type) == ("cli:li", "district")
        assert row.detail["cases"] == 300 and row.detail["events"] == data.events
        counts = session.exec(text('SELECT count(*), count(DISTINCT number) FROM "case"')).one()
    assert tuple(counts) == (300, 300)
    try:  # a second load would collide with the first: refused, nothing written
        reference.load_district_year(engine, cases=10, actor="cli:li")
    except InvalidInput as exc:
        assert exc.code == "demo.not_empty"
    else:
        raise AssertionError("a second load into a full database must be refused")
    with session_scope(engine) as session:
        assert session.exec(text('SELECT count(*) FROM "case"')).one()[0] == 300
        assert len(audited(session, "reference.load_district_year")) == 1
