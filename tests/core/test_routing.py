"""Routing on a small hand-made district: point in polygon, phone → household, address."""

from __future__ import annotations

import pytest

from core.models import GazetteerEntry, Grid, GridLevel, Household, Resident
from core.routing import (
    Gazetteer,
    GridLocator,
    RouteResult,
    normalise_phone,
    route_by_phone,
    route_case,
)


def square(lon0: float, lat0: float, lon1: float, lat1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]]}


@pytest.fixture
def district(session) -> dict[str, int]:
    """鼓楼区 › 东街街道 › 罗布社区 (micro grids 01, 02, 03) and 洋坊社区 (micro grid 01).

    Micro grids are 0.01° squares: 罗布01 | 罗布02 | 洋坊01 side by side along latitude
    26.08–26.09, 罗布03 above 罗布01."""
    ids: dict[str, int] = {}

    def grid(key, code, name, level, parent=None, geometry=None):
        g = Grid(code=code, name=name, level=level, parent_id=ids.get(parent), geometry=geometry)
        session.add(g)
        session.flush()
        ids[key] = g.id

    grid("district", "350102", "鼓楼区", GridLevel.district)
    grid("street", "350102001", "东街街道", GridLevel.street, "district")
    grid("luobu", "350102001001", "罗布社区", GridLevel.community, "street")
    grid("yangfang", "350102001002", "洋坊社区", GridLevel.community, "street")
    grid("luobu_area", "35010200100101", "罗布片区", GridLevel.area, "luobu")
    grid("yangfang_area", "35010200100201", "洋坊片区", GridLevel.area, "yangfang")
    # Inserted out of code order on purpose: the tie-break must not depend on insertion order.
    grid("lb02", "3501020010010102", "罗布二网格", GridLevel.micro, "luobu_area", square(119.31, 26.08, 119.32, 26.09))
    grid("lb01", "3501020010010101", "罗布一网格", GridLevel.micro, "luobu_area", square(119.30, 26.08, 119.31, 26.09))
    grid("yf01", "3501020010020101", "洋坊一网格", GridLevel.micro, "yangfang_area", square(119.32, 26.08, 119.33, 26.09))
    grid("lb03", "3501020010010103", "罗布三网格", GridLevel.micro, "luobu_area", square(119.30, 26.09, 119.31, 26.10))

    for name, kind, key in [
        ("罗布社区", "community", "luobu"),
        ("洋坊新村", "community", "yangfang"),
        ("洋坊新村9幢", "building", "yf01"),
        ("洋坊新村12幢", "building", "yf01"),
        ("罗布菜市场", "landmark", "lb02"),
        ("三坊七巷", "landmark", "lb03"),
    ]:
        session.add(GazetteerEntry(name=name, kind=kind, grid_id=ids[key]))

    for code, address, key, phones in [
        ("H00123", "洋坊新村9幢20号", "yf01", ["13800138000"]),  # stored normalised
        ("H00124", "罗布路3号", "lb02", ["0591-87654321"]),  # legacy spelling with a dash
        ("H00125", "罗布路5号", "lb01", ["+86 139 0013 9000"]),  # legacy E.164 with spaces
    ]:
        h = Household(code=code, address=address, grid_id=ids[key])
        session.add(h)
        session.flush()
        for p in phones:
            session.add(Resident(name="居民", phone=p, household_id=h.id))
    session.add(Resident(name="无户籍", phone="13700137000"))  # no household: cannot route
    session.flush()
    return ids


@pytest.fixture
def locator(session, district) -> GridLocator:
    return GridLocator.from_session(session)


@pytest.fixture
def gazetteer(session, district) -> Gazetteer:
    return Gazetteer.from_session(session)


# -- point in polygon -----------------------------------------------------------------------


def test_point_inside(locator, district):
    r = locator.locate_point(26.085, 119.315)
    assert r == RouteResult(district["lb02"], 1.0, "point in polygon 3501020010010102", "point")
    assert locator.locate_point(26.095, 119.305).grid_id == district["lb03"]
    assert len(locator) == 4  # micro grids only


def test_point_on_shared_edge_is_deterministic(locator, district):
    # The edge between 罗布一 (…0101) and 罗布二 (…0102): the lower code wins, every time.
    for _ in range(3):
        r = locator.locate_point(26.085, 119.31)
        assert r.grid_id == district["lb01"]
        assert "3501020010010101" in r.reason and "3501020010010102" in r.reason
        assert r.confidence < 1
    # The edge between 罗布二 and 洋坊一.
    assert locator.locate_point(26.085, 119.32).grid_id == district["lb02"]
    # A corner shared by three grids.
    assert locator.locate_point(26.09, 119.31).grid_id == district["lb01"]


def test_point_outside_every_grid(locator):
    assert locator.locate_point(26.5, 119.5) is None
    assert locator.locate_point(26.095, 119.315) is None  # the gap above 罗布二
    assert locator.locate_point(float("nan"), 119.315) is None


def test_locate_many_agrees_with_locate_point(locator):
    pts = [(26.085, 119.315), (26.085, 119.31), (26.5, 119.5), (26.085, 119.325), (26.09, 119.31)]
    many = locator.locate_many([p[0] for p in pts], [p[1] for p in pts])
    one = [r.grid_id if (r := locator.locate_point(*p)) else None for p in pts]
    assert many == one


def test_locator_rebuilds_when_grids_change(session, district):
    session.add(Grid(code="3501020010020102", name="洋坊二网格", level=GridLevel.micro,
                     parent_id=district["yangfang_area"], geometry={
                         "type": "MultiPolygon",
                         "coordinates": [[[[119.31, 26.09], [119.32, 26.09], [119.32, 26.10], [119.31, 26.10],
                                           [119.31, 26.09]]]]}))
    session.flush()
    assert GridLocator.from_session(session).locate_point(26.095, 119.315).reason.endswith("3501020010020102")


# -- phone → registered household -------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("13800138000", "13800138000"),
    ("+86 138-0013-8000", "13800138000"),
    ("+8613800138000", "13800138000"),
    ("8613800138000", "13800138000"),
    ("0086 138 0013 8000", "13800138000"),
    ("１３８００１３８０００", "13800138000"),
    ("0591-87654321", "059187654321"),
    ("(0591) 8765 4321", "059187654321"),
    ("+86 591 8765 4321", "059187654321"),
    ("+44 20 7946 0958", "+442079460958"),
    ("", None),
])
def test_normalise_phone(raw, expected):
    assert normalise_phone(raw) == expected


def test_normalise_phone_with_area_code():
    assert normalise_phone("87654321") == "87654321"
    assert normalise_phone("8765 4321", default_area_code="0591") == "059187654321"


@pytest.mark.parametrize("phone, key", [
    ("13800138000", "yf01"),
    ("+86 138 0013 8000", "yf01"),
    ("+8613800138000", "yf01"),  # how Twilio writes the caller
    ("0591 8765 4321", "lb02"),  # stored as 0591-87654321
    ("+86591-87654321", "lb02"),
    ("13900139000", "lb01"),  # stored as "+86 139 0013 9000"
])
def test_route_by_phone(session, district, phone, key):
    r = route_by_phone(session, phone)
    assert r is not None and r.grid_id == district[key] and r.method == "household"
    assert r.reason.startswith("registered household H0012")


def test_route_by_phone_unknown(session, district):
    assert route_by_phone(session, "13600136000") is None
    assert route_by_phone(session, "13700137000") is None  # a resident without a household
    assert route_by_phone(session, None) is None


# -- address → gazetteer ----------------------------------------------------------------------


def test_address_exact(gazetteer, district):
    r = gazetteer.match("罗布社区门口的路灯坏了")
    assert r == RouteResult(
        district["luobu"], 1.0,
        "gazetteer exact 罗布社区; 社区确定，具体位置未知 [ancestor_only level=community needs_building=no]",
        "gazetteer", level="community", ancestor_only=True, place="罗布社区")
    assert gazetteer.match("罗布菜市场旁边").grid_id == district["lb02"]
    assert gazetteer.match("三坊七巷").grid_id == district["lb03"]


def test_grid_names_are_in_the_gazetteer(gazetteer, district):
    assert gazetteer.match("洋坊一网格那边").grid_id == district["yf01"]


def test_building_beats_community(gazetteer, district):
    assert gazetteer.match("洋坊新村9幢20号").grid_id == district["yf01"]
    assert gazetteer.match("洋坊新村").grid_id == district["yangfang"]
    assert gazetteer.match("洋坊新村7幢").grid_id == district["yangfang"]  # unknown building: the community
    # Spoken 十二 becomes 12, which names a building of its own.
    assert "12幢" in gazetteer.match("洋坊新村十二幢").reason


def test_address_homophone_by_pinyin(gazetteer, district):
    # ASR writes 萝卜 (luó bo, "radish") for 罗布 (luó bù).
    r = gazetteer.match("萝卜社区有人飞线充电")
    assert r.grid_id == district["luobu"]
    assert r.reason.startswith("gazetteer pinyin 萝卜社区→罗布社区; 社区确定")
    assert 0.8 <= r.confidence < 1
    r = gazetteer.match("羊坊新村九栋")
    assert r.grid_id == district["yf01"] and "pinyin" in r.reason


def test_address_numeral_variants(gazetteer, district):
    for text in ["洋坊新村九幢二十号", "洋坊新村 9 幢 20 号", "洋坊新村9号楼", "洋坊新村九栋二单元", "洋坊新村９幢"]:
        r = gazetteer.match(text)
        assert r is not None and r.grid_id == district["yf01"], text
        assert r.confidence == 1.0


def test_address_fuzzy_on_characters(gazetteer, district):
    # One character dropped from a five-character name.
    r = gazetteer.match("罗布菜场门口")
    assert r.grid_id == district["lb02"] and r.reason.startswith("gazetteer fuzzy")
    assert 0.6 <= r.confidence < 0.85


def test_address_below_threshold_goes_to_triage(gazetteer):
    assert gazetteer.match("我家楼下的路灯坏了") is None
    assert gazetteer.match("罗") is None
    assert gazetteer.match("") is None
    strict = Gazetteer([(e.name, e.kind, e.grid_id) for e in gazetteer.entries], min_confidence=0.9)
    assert strict.match("萝卜社区") is None


# -- all together -----------------------------------------------------------------------------


def test_route_case_order(session, district, locator, gazetteer):
    kw = {"locator": locator, "gazetteer": gazetteer}
    # A shared point wins over the caller's household and the address.
    r = route_case(session, latitude=26.085, longitude=119.305, phone="13800138000", address_text="罗布社区", **kw)
    assert (r.method, r.grid_id) == ("point", district["lb01"])
    # Outside every grid: the registered household.
    r = route_case(session, latitude=26.5, longitude=119.5, phone="+86 138 0013 8000", address_text="罗布社区", **kw)
    assert (r.method, r.grid_id) == ("household", district["yf01"])
    # Unknown caller: the address.
    r = route_case(session, phone="13600136000", address_text="萝卜社区", **kw)
    assert (r.method, r.grid_id) == ("gazetteer", district["luobu"])
    # Nothing to go on: triage.
    assert route_case(session, phone="13600136000", address_text="不知道", **kw) is None
    assert route_case(session, **kw) is None


def test_route_case_builds_its_own_indexes(session, district):
    r = route_case(session, latitude=26.085, longitude=119.325)
    assert r.grid_id == district["yf01"]
    assert route_case(session, address_text="洋坊新村九幢").grid_id == district["yf01"]
