"""Importers: good files land, bad files are refused whole with line-numbered problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shapely.geometry import shape
from sqlmodel import Session, func, select

from core.errors import ImportFailed
from core.people.models import Resident, Worker, WorkerGrid, WorkerRole
from core.places.models import Grid, GridLevel, Household
from core.reference import importers
from core.reference.demo import load_demo

FIXTURES = Path(__file__).parent.parent / "fixtures"


def snapshot(session: Session) -> dict:
    """Everything the importers may write, in a comparable form."""
    session.flush()
    return {
        "grids": sorted((g.code, g.name, g.level.value, g.parent_id, json.dumps(g.geometry))
                        for g in session.exec(select(Grid)).all()),
        "workers": sorted((w.code, w.name, w.role.value, w.phone) for w in session.exec(select(Worker)).all()),
        "links": sorted((x.worker_id, x.grid_id, x.is_leader) for x in session.exec(select(WorkerGrid)).all()),
        "households": sorted((h.code, h.address, h.grid_id) for h in session.exec(select(Household)).all()),
        "residents": sorted((r.name or "", r.phone or "", r.household_id or 0)
                            for r in session.exec(select(Resident)).all()),
    }


def problems_of(exc: pytest.ExceptionInfo[ImportFailed]) -> list[tuple[int, str]]:
    return exc.value.problems


def assert_problems(problems: list[tuple[int, str]], expected: list[tuple[int, str]]) -> None:
    """Each expected (line, fragment) is matched by a reported problem on that line."""
    for line, fragment in expected:
        assert any(p_line == line and fragment in msg for p_line, msg in problems), (
            f"no problem on line {line} mentioning {fragment!r}; got {problems}"
        )


@pytest.fixture
def grids(session: Session) -> dict[str, Grid]:
    assert importers.import_grids_geojson(session, FIXTURES / "grids_good.geojson") == 7
    return {g.code: g for g in session.exec(select(Grid)).all()}


# -- grids -------------------------------------------------------------------------------


def test_good_geojson_imports_the_whole_tree(session, grids):
    assert len(grids) == 7
    by_id = {g.id: g for g in grids.values()}
    micro = grids["9901000010010102"]
    assert micro.level == GridLevel.micro and micro.name == "样板社区第2微网格"
    chain = []
    node = micro
    while node is not None:
        chain.append(node.level)
        node = by_id.get(node.parent_id)
    assert chain == [GridLevel.micro, GridLevel.area, GridLevel.community, GridLevel.street, GridLevel.district]
    assert micro.geometry["type"] == "MultiPolygon" and shape(micro.geometry).is_valid
    assert grids["990100001001"].geometry is None
    assert grids["990100"].parent_id is None


def test_reimport_updates_names_and_keeps_boundaries_of_null_geometry(session, grids, tmp_path):
    doc = json.loads((FIXTURES / "grids_good.geojson").read_text("utf-8"))
    doc["features"][4]["properties"]["name"] = "改名微网格"
    doc["features"][4]["geometry"] = None  # a names-only update keeps the drawn boundary
    doc["features"][2]["geometry"] = doc["features"][3]["geometry"]  # a boundary drawn later
    path = tmp_path / "update.geojson"
    path.write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    before = grids["9901000010010101"].geometry

    assert importers.import_grids_geojson(session, path) == 7
    after = {g.code: g for g in session.exec(select(Grid)).all()}
    assert len(after) == 7
    assert after["9901000010010101"].name == "改名微网格"
    assert after["9901000010010101"].geometry == before
    assert after["990100001001"].geometry["type"] == "Polygon"


def test_children_may_hang_below_a_parent_already_in_the_database(session, grids, tmp_path):
    path = tmp_path / "more.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature",
        "properties": {"code": "9901000010010104", "name": "新增微网格", "level": "micro",
                       "parent_code": "99010000100101"},
        "geometry": None,
    }]}), "utf-8")
    assert importers.import_grids_geojson(session, path) == 1
    new = session.exec(select(Grid).where(Grid.code == "9901000010010104")).one()
    assert new.parent_id == grids["99010000100101"].id


def test_bad_geojson_reports_every_problem_by_line_and_writes_nothing(session, grids):
    before = snapshot(session)
    with pytest.raises(ImportFailed) as exc:
        importers.import_grids_geojson(session, FIXTURES / "grids_bad.geojson")
    assert_problems(problems_of(exc), [
        (4, "missing property name"),
        (5, "unknown property parent"),
        (5, "missing property parent_code"),
        (6, "unknown level 'village'"),
        (7, "parent 990200009 is neither in the file nor in the database"),
        (8, "parent 990200001 is a street; a micro's parent must be an area"),
        (9, "duplicate code 990200001 (first on line 3)"),
        (10, "invalid geometry: Self-intersection"),
        (11, "outside WGS84"),
        (11, "swapped"),
        (12, "not closed"),
        (13, "geometry type 'Point' is not supported"),
        (14, "only a district has none"),
        (15, "has no properties"),
    ])
    # The two good features (lines 2 and 3) are not written either.
    assert snapshot(session) == before
    assert "nothing imported" in str(exc.value)


def test_json_syntax_error_names_its_line(session):
    with pytest.raises(ImportFailed) as exc:
        importers.import_grids_geojson(session, FIXTURES / "grids_syntax.geojson")
    [(line, msg)] = problems_of(exc)
    assert line == 5 and "JSON syntax error" in msg
    assert session.exec(select(func.count()).select_from(Grid)).one() == 0


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "expected a GeoJSON FeatureCollection, found 'list'"),
        ({"type": "Feature", "properties": {}, "geometry": None}, "found 'Feature'"),
        ({"type": "FeatureCollection"}, "no \"features\" array"),
        ({"type": "FeatureCollection", "features": []}, "has no features"),
    ],
)
def test_not_a_feature_collection(session, tmp_path, doc, fragment):
    path = tmp_path / "x.geojson"
    path.write_text(json.dumps(doc), "utf-8")
    with pytest.raises(ImportFailed) as exc:
        importers.import_grids_geojson(session, path)
    assert [line for line, _ in problems_of(exc)] == [1]
    assert fragment in problems_of(exc)[0][1]


def test_level_and_parent_of_an_existing_grid_do_not_change(session, grids, tmp_path):
    path = tmp_path / "move.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": None,
         "properties": {"code": "990100001001", "name": "样板社区", "level": "area", "parent_code": "990100001"}},
    ]}), "utf-8")
    before = snapshot(session)
    with pytest.raises(ImportFailed) as exc:
        importers.import_grids_geojson(session, path)
    assert_problems(problems_of(exc), [(1, "exists as a community; its level cannot change to area")])
    assert snapshot(session) == before


def test_non_utf8_file_is_refused_with_its_line(session, tmp_path):
    path = tmp_path / "gbk.geojson"
    path.write_bytes('{"type": "FeatureCollection",\n"name": "测试"}'.encode("gbk"))
    with pytest.raises(ImportFailed) as exc:
        importers.import_grids_geojson(session, path)
    assert problems_of(exc)[0][0] == 2 and "UTF-8" in problems_of(exc)[0][1]


def test_export_round_trips_the_demo_district(session, tmp_path):
    load_demo(session)
    path = tmp_path / "demo.geojson"
    n = importers.export_demo_geojson(session, path)
    assert n == session.exec(select(func.count()).select_from(Grid)).one()
    before = snapshot(session)

    # Into the same database: every code exists, nothing changes.
    assert importers.import_grids_geojson(session, path) == n
    assert snapshot(session)["grids"] == before["grids"]

    # Into an empty database: the same tree with the same boundaries.
    from core.platform.db import make_engine, session_scope
    from core.platform.migrations import upgrade

    other = make_engine(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    upgrade(other)
    try:
        with session_scope(other) as fresh:
            assert importers.import_grids_geojson(fresh, path) == n

            def tree(s: Session) -> set:
                rows = s.exec(select(Grid)).all()
                code = {g.id: g.code for g in rows}
                return {(g.code, g.name, g.level, code.get(g.parent_id), json.dumps(g.geometry)) for g in rows}

            assert tree(fresh) == tree(session)
    finally:
        other.dispose()

    # An error in the exported file points at the feature's own line.
    lines = path.read_text("utf-8").splitlines()
    lines[3] = lines[3].replace('"level":"street"', '"level":"streat"')
    path.write_text("\n".join(lines), "utf-8")
    with pytest.raises(ImportFailed) as exc:
        importers.import_grids_geojson(session, path)
    assert_problems(problems_of(exc), [(4, "unknown level 'streat'")])


# -- workers -----------------------------------------------------------------------------


def test_good_workers_csv(session, grids):
    assert importers.import_workers_csv(session, FIXTURES / "workers_good.csv") == 6
    workers = {w.code: w for w in session.exec(select(Worker)).all()}
    assert workers["T002"].role == WorkerRole.grid_leader  # 网格长
    assert workers["T002"].phone == "13800000002"  # normalised like routing compares it
    assert workers["T005"].phone == "05987000005"
    assert workers["T006"].name == '王 "阿姨"' and workers["T006"].phone is None
    links = {(w.code, g.code): x.is_leader
             for x, w, g in session.exec(select(WorkerGrid, Worker, Grid)
                                         .where(WorkerGrid.worker_id == Worker.id, WorkerGrid.grid_id == Grid.id)).all()}
    assert links[("T003", "99010000100101")] is True
    assert links[("T004", "9901000010010102")] is False
    assert links[("T006", "9901000010010101")] is True
    assert len(links) == 8


def test_reimporting_workers_updates_them_and_replaces_their_grids(session, grids, tmp_path):
    importers.import_workers_csv(session, FIXTURES / "workers_good.csv")
    path = tmp_path / "w.csv"
    path.write_text("code,name,role,phone,grid_codes,is_leader\n"
                    "T004,张网格员,grid_worker,13800000044,9901000010010103,true\n", "utf-8")
    assert importers.import_workers_csv(session, path) == 1
    w = session.exec(select(Worker).where(Worker.code == "T004")).one()
    assert w.phone == "13800000044"
    grids_of = session.exec(select(Grid.code, WorkerGrid.is_leader)
                            .where(WorkerGrid.worker_id == w.id, WorkerGrid.grid_id == Grid.id)).all()
    assert grids_of == [("9901000010010103", True)]
    assert session.exec(select(func.count()).select_from(Worker)).one() == 6


def test_bad_workers_csv_lists_every_problem_and_writes_nothing(session, grids):
    before = snapshot(session)
    with pytest.raises(ImportFailed) as exc:
        importers.import_workers_csv(session, FIXTURES / "workers_bad.csv")
    problems = problems_of(exc)
    assert_problems(problems, [
        (3, "unknown role 'captain'"),
        (4, "bad phone '12345'"),
        (5, "unknown grid 990999"),
        (6, "duplicate code T101 (first on line 2)"),
        (7, "empty name"),
        (7, "no grid_codes"),
        (7, "is_leader must be true or false"),
    ])
    assert not any(line == 2 for line, _ in problems)
    assert snapshot(session) == before


@pytest.mark.parametrize("kind", ["workers", "households"])
def test_missing_column_is_reported_on_the_header_line(session, grids, kind):
    func_ = importers.import_workers_csv if kind == "workers" else importers.import_households_csv
    with pytest.raises(ImportFailed) as exc:
        func_(session, FIXTURES / f"{kind}_missing_column.csv")
    [(line, msg)] = problems_of(exc)
    column = "role" if kind == "workers" else "grid_code"
    assert line == 1 and f"missing column {column}" in msg


def test_empty_and_header_only_csv(session, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("", "utf-8")
    with pytest.raises(ImportFailed, match="empty file"):
        importers.import_workers_csv(session, empty)
    header = tmp_path / "header.csv"
    header.write_text("code,name,role,phone,grid_codes,is_leader\n", "utf-8")
    with pytest.raises(ImportFailed, match="no rows"):
        importers.import_workers_csv(session, header)


# -- households ------------------------------------------------------------------------


def test_good_households_csv_with_bom(session, grids):
    assert (FIXTURES / "households_good.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert importers.import_households_csv(session, FIXTURES / "households_good.csv") == 3
    households = {h.code: h for h in session.exec(select(Household)).all()}
    assert set(households) == {"HT01", "HT02", "HT03"}
    assert households["HT02"].grid_id == grids["9901000010010102"].id
    residents = session.exec(select(Resident).where(Resident.household_id == households["HT01"].id)).all()
    assert sorted((r.name, r.phone) for r in residents) == [("陈一", "13900000001"), ("陈二", None)]
    phones = {r.phone for r in session.exec(select(Resident)).all()}
    assert {"13900000003", "05987000006"} <= phones

    # The same file again adds nobody.
    importers.import_households_csv(session, FIXTURES / "households_good.csv")
    assert session.exec(select(func.count()).select_from(Resident)).one() == 5
    assert session.exec(select(func.count()).select_from(Household)).one() == 3


def test_bad_households_csv_lists_every_problem_and_writes_nothing(session, grids):
    before = snapshot(session)
    with pytest.raises(ImportFailed) as exc:
        importers.import_households_csv(session, FIXTURES / "households_bad.csv")
    problems = problems_of(exc)
    assert_problems(problems, [
        (3, "bad phone '139000'"),
        (4, "unknown grid 9909999999999999"),
        (5, "duplicate code HB01 with a different address or grid (first on line 2)"),
        (6, "phone 13900000101 is already on line 2"),
        (7, "households belong to micro grids"),
        (8, "empty address"),
    ])
    assert not any(line == 2 for line, _ in problems)
    assert snapshot(session) == before


def test_a_phone_registered_to_another_household_is_refused(session, grids, tmp_path):
    importers.import_households_csv(session, FIXTURES / "households_good.csv")
    path = tmp_path / "h.csv"
    path.write_text("code,address,grid_code,resident_name,phone\n"
                    "HT09,样板社区样板小区9幢1单元101室,9901000010010103,冒名,139 0000 0001\n", "utf-8")
    before = snapshot(session)
    with pytest.raises(ImportFailed) as exc:
        importers.import_households_csv(session, path)
    assert_problems(problems_of(exc), [(2, "phone 13900000001 is registered to household HT01")])
    assert snapshot(session) == before


# -- one problem does not hide another ---------------------------------------------------


def test_an_invalid_geometry_does_not_hide_an_unknown_parent(session, grids, tmp_path):
    bowtie = {"type": "Polygon", "coordinates": [[[117.70, 26.30], [117.71, 26.31], [117.71, 26.30],
                                                   [117.70, 26.31], [117.70, 26.30]]]}
    feature = {"type": "Feature", "geometry": bowtie,
               "properties": {"code": "9901000010010199", "name": "自交微网格", "level": "micro",
                              "parent_code": "990100001009"}}
    path = tmp_path / "g.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}, ensure_ascii=False), "utf-8")
    before = snapshot(session)
    with pytest.raises(ImportFailed) as exc:
        importers.import_grids_geojson(session, path)
    assert_problems(problems_of(exc), [
        (1, "invalid geometry: Self-intersection"),
        (1, "parent 990100001009 is neither in the file nor in the database"),
    ])
    assert snapshot(session) == before


def test_an_invalid_geometry_does_not_hide_a_parent_of_the_wrong_level(session, grids, tmp_path):
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [117.7, 26.3]},
               "properties": {"code": "9901000010010198", "name": "点微网格", "level": "micro",
                              "parent_code": "990100001"}}  # a street, not an area
    path = tmp_path / "g.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}, ensure_ascii=False), "utf-8")
    with pytest.raises(ImportFailed) as exc:
        importers.import_grids_geojson(session, path)
    assert_problems(problems_of(exc), [
        (1, "geometry type 'Point' is not supported"),
        (1, "parent 990100001 is a street; a micro's parent must be an area"),
    ])


@pytest.mark.parametrize("kind", ["workers", "households"])
def test_a_line_with_the_wrong_field_count_does_not_hide_the_other_lines(session, grids, tmp_path, kind):
    if kind == "workers":
        text = ("code,name,role,phone,grid_codes,is_leader\n"
                "T1,张三,grid_worker,13800000001,9901000010010101\n"        # 5 fields
                "T2,李四,captain,12345,9901000010010101,false\n"             # bad role, bad phone
                "T3,王五,grid_worker,,990999,false\n")                       # unknown grid
        expected = [(2, "5 fields, expected 6"), (3, "unknown role 'captain'"), (3, "bad phone '12345'"),
                    (4, "unknown grid 990999")]
        func_ = importers.import_workers_csv
    else:
        text = ("code,address,grid_code,resident_name,phone\n"
                "HX1,样板社区1幢,9901000010010101,陈一,13900000001,多余\n"  # 6 fields
                "HX2,,9901000010010101,陈二,139000\n"                      # no address, bad phone
                "HX3,样板社区3幢,9909999999999999,陈三,\n")                 # unknown grid
        expected = [(2, "6 fields, expected 5"), (3, "empty address"), (3, "bad phone '139000'"),
                    (4, "unknown grid 9909999999999999")]
        func_ = importers.import_households_csv
    path = tmp_path / f"{kind}.csv"
    path.write_text(text, "utf-8")
    before = snapshot(session)
    with pytest.raises(ImportFailed) as exc:
        func_(session, path)
    assert_problems(problems_of(exc), expected)
    assert snapshot(session) == before


def test_a_landline_typo_is_a_bad_phone(session, grids, tmp_path):
    # 0598 (三明) has 7-digit local numbers: an 8-digit one is a typo, not a number to store.
    path = tmp_path / "h.csv"
    path.write_text("code,address,grid_code,resident_name,phone\n"
                    "HY1,样板社区1幢,9901000010010101,陈一,0598-75123456\n"
                    "HY2,样板社区2幢,9901000010010101,陈二,0598-7512345\n", "utf-8")
    with pytest.raises(ImportFailed) as exc:
        importers.import_households_csv(session, path)
    assert problems_of(exc) == [(2, "bad phone '0598-75123456'")]
