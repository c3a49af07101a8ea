"""The demo district: a complete, consistent, deterministic place to try Gridline in."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import date

import pytest
from shapely.geometry import shape
from shapely.ops import unary_union
from sqlmodel import Session, func, select

from core.actions import responsible_worker
from core.actions.categories import sync_categories
from core.cases.models import Category, Urgency
from core.deadlines.models import CalendarDay, CategorySla
from core.errors import DomainError
from core.people.models import AuditEntry, Department, Resident, Worker, WorkerGrid
from core.places.models import GazetteerEntry, Grid, GridLevel, Household
from core.places.routing import normalise_phone
from core.reference.demo import DISTRICT_CODE, grid_centre, load_demo


@pytest.fixture
def demo(session: Session, engine):
    summary = load_demo(session)  # how long it takes: bench/core.py prints it
    session.flush()
    return summary


def grids_by_level(session: Session) -> dict[GridLevel, list[Grid]]:
    out: dict[GridLevel, list[Grid]] = {lv: [] for lv in GridLevel}
    for g in session.exec(select(Grid)).all():
        out[g.level].append(g)
    return out


def test_summary_counts_match_the_rows(session, demo):
    levels = grids_by_level(session)
    assert demo.districts == len(levels[GridLevel.district]) == 1
    assert demo.streets == len(levels[GridLevel.street]) == 2
    assert demo.communities == len(levels[GridLevel.community]) >= 4
    assert demo.areas == len(levels[GridLevel.area])
    assert demo.micro_grids == len(levels[GridLevel.micro]) >= 40
    assert demo.households == session.exec(select(func.count()).select_from(Household)).one() == 500
    assert demo.residents == session.exec(select(func.count()).select_from(Resident)).one()
    assert demo.workers == session.exec(select(func.count()).select_from(Worker)).one()
    assert "micro grids: " in str(demo)
    names = {g.name for g in levels[GridLevel.community]}
    assert "罗布社区" in names


def test_codes_are_hierarchical(session, demo):
    grids = session.exec(select(Grid)).all()
    by_id = {g.id: g for g in grids}
    width = {GridLevel.district: 6, GridLevel.street: 9, GridLevel.community: 12,
             GridLevel.area: 14, GridLevel.micro: 16}
    for g in grids:
        assert re.fullmatch(r"\d+", g.code) and len(g.code) == width[g.level], g.code
        if g.level == GridLevel.district:
            assert g.code == DISTRICT_CODE and g.parent_id is None
        else:
            assert g.code.startswith(by_id[g.parent_id].code)


def test_micro_grids_tile_the_district_and_unions_make_the_levels_above(session, demo):
    levels = grids_by_level(session)
    micros = {g.code: shape(g.geometry) for g in levels[GridLevel.micro]}
    assert all(geom.is_valid and geom.area > 0 for geom in micros.values())
    # No overlaps: pairwise intersections have no area (shared edges only).
    for (a, ga), (b, gb) in itertools.combinations(micros.items(), 2):
        assert ga.intersection(gb).area < 1e-12, (a, b)
    district = shape(levels[GridLevel.district][0].geometry)
    assert unary_union(list(micros.values())).symmetric_difference(district).area < 1e-12
    assert abs(sum(g.area for g in micros.values()) - district.area) < 1e-12
    # Near 26.39 N, 117.79 E.
    assert district.contains(shape({"type": "Point", "coordinates": [117.79, 26.39]}))
    # Every grid above micro is exactly the union of the micro grids under it.
    for level in (GridLevel.area, GridLevel.community, GridLevel.street):
        for g in levels[level]:
            parts = [geom for code, geom in micros.items() if code.startswith(g.code)]
            assert parts, g.code
            assert unary_union(parts).symmetric_difference(shape(g.geometry)).area < 1e-12, g.code
    # GeoJSON rings are counter-clockwise outside (RFC 7946).
    for g in levels[GridLevel.micro]:
        assert shape(g.geometry).exterior.is_ccw


def test_every_grid_has_someone_on_duty(session, demo):
    grids = session.exec(select(Grid)).all()
    staffed = set(session.exec(select(WorkerGrid.grid_id).join(Worker, Worker.id == WorkerGrid.worker_id)
                               .where(Worker.active == True)).all())  # noqa: E712
    assert {g.id for g in grids} <= staffed
    for g in grids:
        assert responsible_worker(session, g.id) is not None, g.code
    # Some grid workers cover two micro grids; some micro grids have a micro-grid leader.
    micro_ids = {g.id for g in grids if g.level == GridLevel.micro}
    links = session.exec(select(WorkerGrid, Worker).where(WorkerGrid.worker_id == Worker.id)).all()
    per_worker = Counter(x.worker_id for x, w in links if x.grid_id in micro_ids and w.role.value == "grid_worker")
    assert 2 in per_worker.values()
    assert any(w.role.value == "micro_leader" and x.is_leader for x, w in links)
    leaders = {x.grid_id for x, _ in links if x.is_leader}
    assert {g.id for g in grids if g.level != GridLevel.micro} <= leaders
    workers = session.exec(select(Worker)).all()
    assert len({w.name for w in workers}) == len(workers)
    assert all(w.phone and normalise_phone(w.phone) == w.phone for w in workers)


def test_households_residents_and_phones(session, demo):
    households = session.exec(select(Household)).all()
    residents = session.exec(select(Resident)).all()
    micro_ids = {g.id for g in session.exec(select(Grid).where(Grid.level == GridLevel.micro)).all()}
    assert len(households) == 500
    assert all(h.grid_id in micro_ids for h in households)
    assert len({h.address for h in households}) == 500
    assert all(re.fullmatch(r".+社区.+\d+幢\d单元\d0\d室", h.address) for h in households)
    by_household: dict[int, list[Resident]] = {}
    for r in residents:
        by_household.setdefault(r.household_id, []).append(r)
    assert set(by_household) == {h.id for h in households}
    assert all(1 <= len(rs) <= 3 for rs in by_household.values())
    assert all(any(r.phone for r in rs) for rs in by_household.values())
    phones = [r.phone for r in residents if r.phone]
    worker_phones = [w.phone for w in session.exec(select(Worker)).all()]
    assert len(set(phones + worker_phones)) == len(phones) + len(worker_phones)
    assert all(normalise_phone(p) == p for p in phones)
    assert any(p.startswith("0598") for p in phones)  # a few landline-only flats
    assert all(r.name and 2 <= len(r.name) <= 3 for r in residents)


def test_gazetteer_names_lead_to_the_right_grids(session, demo):
    entries = session.exec(select(GazetteerEntry, Grid).where(GazetteerEntry.grid_id == Grid.id)).all()
    by_name = {e.name: (e, g) for e, g in entries}
    assert len(by_name) == len(entries), "gazetteer names are unique"
    assert by_name["罗布社区"][1].level == GridLevel.community
    assert by_name["罗布"][0].kind == "alias"
    assert by_name["洋坊新村"][1].level == GridLevel.area
    assert by_name["罗布菜市场"][0].kind == "landmark" and by_name["罗布菜市场"][1].level == GridLevel.micro
    kinds = Counter(e.kind for e, _ in entries)
    assert {"community", "alias", "building", "street", "landmark"} <= set(kinds)
    # Every household's building is in the gazetteer, in the household's micro grid.
    for h in session.exec(select(Household)).all():
        m = re.fullmatch(r".+?社区(.+?\d+幢).*", h.address)
        assert m, h.address
        assert by_name[m.group(1)][1].id == h.grid_id, h.address


def test_categories_departments_and_deadlines(session, demo):
    categories = session.exec(select(Category)).all()
    assert len(categories) >= 12 and demo.categories == len(categories)
    codes = {c.code for c in categories}
    assert {"streetlight", "sewer_blocked", "flying_lead", "neighbour_dispute", "subsistence_allowance",
            "sanitation", "other"} <= codes
    departments = {d.id for d in session.exec(select(Department)).all()}
    slas = Counter(s.category_id for s in session.exec(select(CategorySla)).all())
    for c in categories:
        assert re.fullmatch(r"[a-z_]+", c.code)
        assert c.department_id in departments, c.code
        assert 5 <= len(c.keywords) <= 12, c.code
        assert slas[c.id] == len(Urgency), c.code
    # A fire hazard is handled faster than a dark street lamp.
    sla = {(s.category_id, s.urgency): s for s in session.exec(select(CategorySla)).all()}
    cat = {c.code: c.id for c in categories}
    assert (sla[(cat["flying_lead"], Urgency.normal)].resolution_hours
            < sla[(cat["streetlight"], Urgency.normal)].resolution_hours)
    for c in categories:
        n, u, e = (sla[(c.id, x)] for x in (Urgency.normal, Urgency.urgent, Urgency.emergency))
        assert n.resolution_hours >= u.resolution_hours >= e.resolution_hours, c.code
        assert all(s.response_hours <= s.resolution_hours for s in (n, u, e)), c.code


def test_the_demo_loads_categories_through_their_writer_and_a_second_sync_changes_nothing(session, demo):
    entry = session.exec(select(AuditEntry).where(AuditEntry.action == "category.sync")).one()
    assert entry.actor == "demo" and entry.detail["counts"]["added"] == demo.categories
    assert entry.detail["counts"]["departments_added"] == demo.departments
    before = session.exec(select(func.count()).select_from(CategorySla)).one()
    plan = sync_categories(session, actor="test")
    assert plan.empty and plan.unchanged == demo.categories
    assert session.exec(select(func.count()).select_from(CategorySla)).one() == before
    assert len(session.exec(select(AuditEntry).where(AuditEntry.action == "category.sync")).all()) == 1


def test_calendar_2026_is_loaded(session, demo):
    days = {d.day: d for d in session.exec(select(CalendarDay)).all()}
    assert demo.calendar_days == len(days) > 0
    assert days[date(2026, 10, 1)].is_working is False
    assert any(d.is_working for d in days.values())  # make-up working days (调休)


def test_loading_twice_is_refused_and_changes_nothing(session, demo):
    counts = {m.__name__: session.exec(select(func.count()).select_from(m)).one()
              for m in (Grid, Worker, Household, Resident, GazetteerEntry, Category)}
    with pytest.raises(DomainError, match="already has"):
        load_demo(session)
    assert counts == {m.__name__: session.exec(select(func.count()).select_from(m)).one()
                      for m in (Grid, Worker, Household, Resident, GazetteerEntry, Category)}


def test_same_seed_same_district(session, demo, tmp_path):
    from core.platform.db import make_engine, session_scope
    from core.platform.migrations import upgrade

    def fingerprint(s: Session) -> tuple:
        code = {g.id: g.code for g in s.exec(select(Grid)).all()}
        return (
            sorted((h.code, h.address, code[h.grid_id]) for h in s.exec(select(Household)).all()),
            sorted((r.name, r.phone or "") for r in s.exec(select(Resident)).all()),
            sorted((w.code, w.name, w.phone) for w in s.exec(select(Worker)).all()),
        )

    other = make_engine(f"sqlite:///{tmp_path / 'again.sqlite3'}")
    upgrade(other)
    try:
        with session_scope(other) as s:
            load_demo(s)
            assert fingerprint(s) == fingerprint(session)
        other_seed = make_engine(f"sqlite:///{tmp_path / 'seed7.sqlite3'}")
        upgrade(other_seed)
        with session_scope(other_seed) as s:
            load_demo(s, seed=7)
            assert fingerprint(s) != fingerprint(session)
        other_seed.dispose()
    finally:
        other.dispose()


def test_grid_centre_lies_in_its_micro_grid(session, demo):
    lat, lon = grid_centre(session, "3504990010010105")
    grid = session.exec(select(Grid).where(Grid.code == "3504990010010105")).one()
    assert shape(grid.geometry).contains(shape({"type": "Point", "coordinates": [lon, lat]}))
    assert 26.38 < lat < 26.40 and 117.77 < lon < 117.81
