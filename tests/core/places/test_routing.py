"""Routing on a small hand-made district: point in polygon, phone → household, address."""

from __future__ import annotations

import pytest

from core.people.models import Resident
from core.places.models import GazetteerEntry, Grid, GridLevel, Household
from core.places.routing import (
    Gazetteer,
    GridLocator,
    RouteResult,
    address_phrases,
    normalise_phone,
    phone_variants,
    route_by_phone,
    route_case,
    valid_phone,
)
from core.platform.i18n import routing_text


def zh(route: RouteResult) -> str:
    """Why, in the words the console shows by default."""
    return routing_text("zh", route.trace)


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
    assert r == RouteResult(district["lb02"], 1.0, "point in polygon 3501020010010102", "point",
                            trace=({"code": "point", "params": {"grid": "3501020010010102"}},))
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
    ("tel:+8613800138000", "13800138000"),
    ("010-12345678", "01012345678"),            # Beijing: a 2-digit area code
    ("+86 10 1234 5678", "01012345678"),
    ("0598-7512301", "05987512301"),            # 三明: 7-digit local numbers
    ("+1 415 555 0100", "+14155550100"),
    ("110", "110"),                             # a short number stays as dialled
    ("", None),
    ("n/a", None),
])
def test_normalise_phone(raw, expected):
    assert normalise_phone(raw) == expected


def test_normalise_phone_with_area_code():
    assert normalise_phone("87654321") == "87654321"
    assert normalise_phone("8765 4321", default_area_code="0591") == "059187654321"
    assert normalise_phone("7512301", default_area_code="598") == "05987512301"


def test_phone_variants_cover_the_spellings_rows_were_stored_in():
    assert phone_variants("0591 8765 4321") >= {"0591 8765 4321", "059187654321", "+8659187654321",
                                                 "8659187654321", "0591-87654321"}
    assert phone_variants("010 1234 5678") >= {"01012345678", "010-12345678", "+861012345678"}
    assert phone_variants("+8613800138000") >= {"13800138000", "+8613800138000", "8613800138000"}
    assert phone_variants("+44 20 7946 0958") == {"+44 20 7946 0958", "+442079460958"}


def test_valid_phone_refuses_what_cannot_be_dialled():
    assert valid_phone("138 0013 8000") == "13800138000"
    assert valid_phone("0598-7512301") == "05987512301"
    assert valid_phone("+44 20 7946 0958") == "+442079460958"
    for bad in ("12345", "139000", "0598-75123456", "", None, "电话"):
        assert valid_phone(bad) is None, bad


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
    assert r.trace[0]["code"] in ("household", "household_shared") and r.trace[0]["params"]["household"].startswith("H0012")


def test_a_number_is_looked_up_once_per_transaction_until_a_resident_is_written(engine, session, district):
    """Intake links the resident and then routes by the household: one lookup for both (two
    statements for a number stored in another spelling, none the second time); a flush that
    writes a resident makes the next lookup ask again, and it finds the new one."""
    from sqlalchemy import event

    from core.people.models import Resident
    from core.places.routing import registered_under

    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        first = registered_under(session, "13900139000")  # stored as "+86 139 0013 9000"
        assert len(first) == 1 and first[0][0] == "+86 139 0013 9000"
        asked = len(statements)
        assert asked == 2  # the number's spellings, then the stored one found by its last digits
        assert route_by_phone(session, "+8613900139000").grid_id == district["lb01"]
        assert registered_under(session, "139 0013 9000") == first
        assert len(statements) == asked  # asked again of nothing
        session.add(Resident(name="新住户", phone="13900139000"))
        session.flush()
        statements.clear()
        again = registered_under(session, "13900139000")
        assert [r[0] for r in again] == ["13900139000"]  # its own spelling now matches first
        assert again[0][3] is None and again[0][4].name == "新住户" and statements  # no household yet; asked anew
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_route_by_phone_unknown(session, district):
    assert route_by_phone(session, "13600136000") is None
    assert route_by_phone(session, "13700137000") is None  # a resident without a household
    assert route_by_phone(session, None) is None


# -- address → gazetteer ----------------------------------------------------------------------


def test_address_exact(gazetteer, district):
    r = gazetteer.match("罗布社区门口的路灯坏了")
    assert (r.grid_id, r.confidence, r.method, r.level, r.ancestor_only, r.place) == (
        district["luobu"], 1.0, "gazetteer", "community", True, "罗布社区")
    # Why, as codes; each edge says them in its reader's language.
    assert r.trace == (
        {"code": "gazetteer", "params": {"how": "exact", "place": "罗布社区"}},
        {"code": "partial", "params": {"level": "community", "missing": "place", "needs_building": False}},
    )
    assert zh(r) == "地名库精确匹配：罗布社区；社区确定，具体位置未知"
    assert r.reason == "gazetteer exact match: 罗布社区; community certain, exact place unknown"
    assert gazetteer.match("罗布菜市场旁边").grid_id == district["lb02"]
    assert gazetteer.match("三坊七巷").grid_id == district["lb03"]


def test_grid_names_are_in_the_gazetteer(gazetteer, district):
    assert gazetteer.match("洋坊一网格那边").grid_id == district["yf01"]


def test_building_beats_community(gazetteer, district):
    assert gazetteer.match("洋坊新村9幢20号").grid_id == district["yf01"]
    assert gazetteer.match("洋坊新村").grid_id == district["yangfang"]
    assert gazetteer.match("洋坊新村7幢").grid_id == district["yangfang"]  # unknown building: the community
    # Spoken 十二 becomes 12, which names a building of its own.
    assert "12幢" in zh(gazetteer.match("洋坊新村十二幢"))


def test_address_homophone_by_pinyin(gazetteer, district):
    # ASR writes 萝卜 (luó bo, "radish") for 罗布 (luó bù).
    r = gazetteer.match("萝卜社区有人飞线充电")
    assert r.grid_id == district["luobu"]
    assert zh(r).startswith("地名库同音匹配：萝卜社区→罗布社区；社区确定")
    assert 0.8 <= r.confidence < 1
    r = gazetteer.match("羊坊新村九栋")
    assert r.grid_id == district["yf01"] and r.trace[0]["params"]["how"] == "pinyin"


def test_address_numeral_variants(gazetteer, district):
    for text in ["洋坊新村九幢二十号", "洋坊新村 9 幢 20 号", "洋坊新村9号楼", "洋坊新村九栋二单元", "洋坊新村９幢"]:
        r = gazetteer.match(text)
        assert r is not None and r.grid_id == district["yf01"], text
        assert r.confidence == 1.0


def test_address_fuzzy_on_characters(gazetteer, district):
    # One character dropped from a five-character name.
    r = gazetteer.match("罗布菜场门口")
    assert r.grid_id == district["lb02"] and r.trace[0]["params"]["how"] in ("fuzzy", "missing_char")
    assert 0.6 <= r.confidence < 0.85


def test_address_below_threshold_goes_to_triage(gazetteer):
    assert gazetteer.match("我家楼下的路灯坏了") is None
    assert gazetteer.match("罗") is None
    assert gazetteer.match("") is None
    strict = Gazetteer([(e.name, e.kind, e.grid_id) for e in gazetteer.entries], min_confidence=0.9)
    assert strict.match("萝卜社区") is None


# -- spoken and typed addresses on an estate ------------------------------------------------


@pytest.fixture
def estates(session) -> dict[str, int]:
    """罗布社区 with two estates: 洋坊新村 (micro grids m1, m2, m3; building 5 spans m1 and m2,
    so the gazetteer puts it in the estate's area) and 罗布新苑 (micro grid n1). Building 9
    exists in both estates."""
    ids: dict[str, int] = {}
    for key, parent, level, code, name in [
        ("district", None, GridLevel.district, "350102", "鼓楼区"),
        ("street", "district", GridLevel.street, "350102001", "东街街道"),
        ("luobu", "street", GridLevel.community, "350102001001", "罗布社区"),
        ("yangfang", "luobu", GridLevel.area, "35010200100101", "罗布社区第1片区"),
        ("xinyuan", "luobu", GridLevel.area, "35010200100102", "罗布社区第2片区"),
        ("m1", "yangfang", GridLevel.micro, "3501020010010101", "罗布社区第1微网格"),
        ("m2", "yangfang", GridLevel.micro, "3501020010010102", "罗布社区第2微网格"),
        ("m3", "yangfang", GridLevel.micro, "3501020010010103", "罗布社区第3微网格"),
        ("n1", "xinyuan", GridLevel.micro, "3501020010010201", "罗布社区第4微网格"),
    ]:
        grid = Grid(code=code, name=name, level=level, parent_id=ids.get(parent))
        session.add(grid)
        session.flush()
        ids[key] = grid.id
    for name, kind, key in [
        ("罗布社区", "community", "luobu"),
        ("罗布", "alias", "luobu"),
        ("洋坊新村", "building", "yangfang"),
        ("洋坊新村1幢", "building", "m3"),
        ("洋坊新村5幢", "building", "yangfang"),
        ("洋坊新村9幢", "building", "m1"),
        ("洋坊新村12幢", "building", "m2"),
        ("罗布新苑", "building", "xinyuan"),
        ("罗布新苑9幢", "building", "n1"),
        ("长乐幼儿园", "landmark", "m3"),  # 长: cháng or zhǎng
        ("重阳养老院", "landmark", "m2"),  # 重: chóng or zhòng
        ("工商银行罗布支行", "landmark", "n1"),  # 行: háng or xíng
        ("朝阳路", "street", "xinyuan"),  # 朝: cháo or zhāo
    ]:
        session.add(GazetteerEntry(name=name, kind=kind, grid_id=ids[key]))
    for code, address, key in [
        ("H1", "罗布社区洋坊新村5幢1单元101室", "m1"),
        ("H2", "罗布社区洋坊新村5幢2单元301室", "m2"),
        ("H3", "罗布社区洋坊新村9幢2单元301室", "m1"),
    ]:
        session.add(Household(code=code, address=address, grid_id=ids[key]))
    session.flush()
    return ids


@pytest.fixture
def estate_gazetteer(session, estates) -> Gazetteer:
    return Gazetteer.from_session(session)


def _lands(gaz: Gazetteer, texts: list[str], grid_id: int) -> list:
    found = [gaz.match(t) for t in texts]
    assert [(t, r.grid_id if r else None) for t, r in zip(texts, found, strict=True)] == [
        (t, grid_id) for t in texts]
    return found


def test_measure_words_name_one_building(estate_gazetteer, estates):
    found = _lands(estate_gazetteer, ["洋坊新村9幢", "洋坊新村9栋", "洋坊新村9号楼", "洋坊新村9座"], estates["m1"])
    assert {(r.confidence, r.place, r.level, r.ancestor_only) for r in found} == {(1.0, "洋坊新村9幢", "micro", False)}


def test_numbers_in_every_form(estate_gazetteer, estates):
    _lands(estate_gazetteer, ["洋坊新村九幢", "洋坊新村玖幢", "洋坊新村９幢", "洋坊新村 9 幢"], estates["m1"])
    _lands(estate_gazetteer, ["洋坊新村十二幢", "洋坊新村一十二栋", "洋坊新村拾贰号楼", "洋坊新村12座"], estates["m2"])
    _lands(estate_gazetteer, ["洋坊新村幺幢", "洋坊新村一号楼", "洋坊新村壹栋"], estates["m3"])
    # 19 is not 9, nor is 9 part of 19.
    assert estate_gazetteer.match("洋坊新村19幢").grid_id == estates["yangfang"]


def test_building_said_as_residents_say_it(estate_gazetteer, estates):
    # Residents say 幢 zhuàng; a recogniser writes 撞, 状, 壮 or 装.
    found = _lands(estate_gazetteer, ["洋坊新村九撞", "洋坊新村九状", "洋坊新村九壮", "洋坊新村九装"], estates["m1"])
    assert [r.confidence for r in found] == [0.9] * 4
    assert zh(found[0]) == "地名库精确匹配：洋坊新村9撞→洋坊新村9幢；量词按读音认出"
    assert all(r.trace[0]["params"]["place"] == r.place == "洋坊新村9幢" for r in found)
    # The dictionary's reading (chuáng) still finds the building, a little less surely.
    by_dictionary = estate_gazetteer.match("洋坊新村九床")
    assert by_dictionary.grid_id == estates["m1"] and by_dictionary.confidence < found[0].confidence


def test_heteronym_names_match_on_every_reading(estate_gazetteer, estates):
    local = estate_gazetteer.match("常乐幼儿园门口")  # 长 as locals read it: cháng
    other = estate_gazetteer.match("张乐幼儿园门口")  # 长 as zhǎng
    assert local.grid_id == other.grid_id == estates["m3"]
    assert local.confidence > other.confidence and other.trace[0]["params"]["how"] == "pinyin_other"
    _lands(estate_gazetteer, ["虫阳养老院", "中阳养老院"], estates["m2"])
    _lands(estate_gazetteer, ["工商银航罗布支航", "工商银星罗布支星"], estates["n1"])
    _lands(estate_gazetteer, ["潮阳路", "招阳路"], estates["xinyuan"])


def test_local_reading_wins_a_tie(session, estates):
    # 涨 (zhǎng) reads like 掌 and like the other reading of 长: the place whose local
    # reading it is wins; were both local, neither would (see the conflict test).
    session.add(GazetteerEntry(name="掌乐幼儿园", kind="landmark", grid_id=estates["n1"]))
    session.flush()
    gaz = Gazetteer.from_session(session)
    r = gaz.match("涨乐幼儿园")
    assert r.grid_id == estates["n1"] and r.place == "掌乐幼儿园"
    assert gaz.match("常乐幼儿园").grid_id == estates["m3"]


def test_household_full_address_routes_to_its_micro_grid(estate_gazetteer, estates):
    # Building 5 spans two micro grids: the flat decides.
    building = estate_gazetteer.match("洋坊新村5幢")
    assert building.grid_id == estates["yangfang"] and building.ancestor_only and not building.needs_building
    assert "片区确定，单元未知" in zh(building)
    flat = _lands(estate_gazetteer, [
        "罗布社区洋坊新村5幢2单元301室", "洋坊新村5幢2单元301", "洋坊新村五栋二单元三零一", "洋坊新村五号楼两单元三百零一号",
        "洋坊新村5-2-301", "洋坊新村五号二单元三零幺", "我家住在 洋坊 新村 五 撞 二 单元 三 零 一 门口",
    ], estates["m2"])
    assert flat[0].place == "罗布社区洋坊新村5幢2单元301室" and "住户 H2" in zh(flat[0])
    assert flat[0].level == "micro" and not flat[0].ancestor_only
    _lands(estate_gazetteer, ["洋坊新村5幢1单元101室", "洋坊新村五栋一单元幺零幺"], estates["m1"])
    # A flat not in the registry: as far as the building goes.
    assert estate_gazetteer.match("洋坊新村5幢2单元305室").grid_id == estates["yangfang"]
    # "9幢2单元301" and "九栋二单元三零一" are one household, in the building's micro grid.
    _lands(estate_gazetteer, ["洋坊新村9幢2单元301", "洋坊新村九栋二单元三零一"], estates["m1"])


def test_what_is_around_the_address(estate_gazetteer, estates):
    _lands(estate_gazetteer, [
        "我家住在洋坊新村9幢门口",
        "我 家 住在 洋 坊 新村 九 幢 门口 的 路灯 坏 了",
        "洋坊新村的9幢",
        "洋坊新村小区9幢楼下",
        "羊坊新村九撞",  # homophones in the name and the measure word
        "罗布社区羊坊新村九栋",
        "萝卜社区洋坊新村9幢",
    ], estates["m1"])


def test_sure_only_of_an_ancestor_says_so(estate_gazetteer, estates):
    estate = estate_gazetteer.match("我家在洋坊新村")
    assert (estate.grid_id, estate.level, estate.ancestor_only, estate.needs_building) == (
        estates["yangfang"], "area", True, True)
    assert zh(estate) == "地名库精确匹配：洋坊新村；片区确定，楼栋未知"
    assert estate.trace[-1] == {"code": "partial", "params": {"level": "area", "missing": "building",
                                                              "needs_building": True}}
    unknown = estate_gazetteer.match("洋坊新村30幢")
    assert unknown.grid_id == estates["yangfang"] and zh(unknown).endswith("；30幢不在地名库")
    community = estate_gazetteer.match("罗布社区")
    assert community.level == "community" and "社区确定，楼栋未知" in zh(community)
    # Building 9 is in both estates: the community is all that is sure.
    both = estate_gazetteer.match("罗布九幢")
    assert both.grid_id == estates["luobu"] and "9幢在罗布不唯一" in zh(both)
    # Building 12 is only in one.
    assert estate_gazetteer.match("罗布社区十二幢").grid_id == estates["m2"]


def test_never_below_the_level_it_is_sure_of(estate_gazetteer, estates):
    # Two places on different branches, equally sure: their common ancestor, for triage.
    r = estate_gazetteer.match("洋坊新村9幢和罗布新苑9幢之间")
    assert r.grid_id == estates["luobu"] and r.confidence < 0.8 and "地名指向不同网格" in zh(r)
    assert r.place is None and r.ancestor_only
    # A building number a name does not have is not guessed from a similar one.
    assert estate_gazetteer.match("洋坊新村8幢").grid_id == estates["yangfang"]
    # Counting buildings is not naming one.
    assert estate_gazetteer.match("洋坊新村一栋楼都停电了").grid_id == estates["yangfang"]


def test_keypad_building_number_for_a_partial_match(estate_gazetteer, estates):
    gaz = estate_gazetteer
    estate = gaz.match("洋坊新村")
    r = gaz.match_building(estate, "9")
    assert (r.grid_id, r.level, r.ancestor_only, r.place) == (estates["m1"], "micro", False, "洋坊新村9幢")
    assert zh(r).startswith("在洋坊新村下按楼号 9 找到 洋坊新村9幢")
    assert gaz.match_building(estate, "12#").grid_id == estates["m2"]
    assert gaz.match_building(estate, "30") is None
    assert gaz.match_building(estate, "") is None
    community = gaz.match("罗布社区")
    assert gaz.match_building(community, "9") is None  # in both estates
    assert gaz.match_building(community, "12").grid_id == estates["m2"]
    assert gaz.match_building(estates["xinyuan"], "9").grid_id == estates["n1"]
    # What a caller kept between two webhooks: the grid id and the scope.
    assert gaz.match_building(estate.grid_id, "九", scope=estate.scope).grid_id == estates["m1"]


def test_phrase_list_for_the_recogniser(session, estates, estate_gazetteer):
    listed = address_phrases(estate_gazetteer)
    phrases = set(listed.phrases)
    assert {"洋坊新村九幢", "洋坊新村十二幢", "罗布社区", "洋坊新村", "长乐幼儿园", "朝阳路"} <= phrases
    assert {"幢", "栋", "号楼", "座", "单元", "室", "九", "十", "幺", "两"} <= phrases
    assert not any("单元" in p and "室" in p for p in phrases)  # no household's address
    assert "罗布社区第1微网格" not in phrases
    assert address_phrases(Gazetteer.from_session(session)).version == listed.version
    session.add(GazetteerEntry(name="洋坊新村15幢", kind="building", grid_id=estates["m3"]))
    session.flush()
    changed = address_phrases(Gazetteer.from_session(session))
    assert changed.version != listed.version and "洋坊新村十五幢" in changed.phrases


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


# -- spoken addresses as callers garble them (issue 27) -----------------------------------------


def _codes(route: RouteResult) -> list[str]:
    return [s["code"] for s in route.trace]


def test_the_address_after_a_repair_wins(estate_gazetteer, estates):
    repaired = _lands(estate_gazetteer, [
        "洋坊新村十二幢，不对不对，是九幢",
        "洋坊新村12幢，我说错了，应该是9幢",
        "洋坊新村一幢 错了 洋坊新村九幢",
        "洋坊新村十二栋应该是九栋",
        "是洋坊新村九幢，不是十二幢",
        "洋坊新村，不是十二幢，是九幢",
        "罗布新苑九幢，不对，洋坊新村九幢",
    ], estates["m1"])
    assert all({"repair", "negated"} & set(_codes(r)) for r in repaired)
    # The other way round: the first number said never wins for being first.
    _lands(estate_gazetteer, ["洋坊新村九幢，不对不对，是十二幢", "是洋坊新村十二幢不是九幢"], estates["m2"])
    said = estate_gazetteer.match("洋坊新村十二幢，不对，是九幢")
    assert "按更正后的说法" in zh(said)


def test_words_like_a_repair_with_no_address_after_them_are_not_one(estate_gazetteer, estates):
    _lands(estate_gazetteer, ["洋坊新村9幢的电表装错了", "洋坊新村九幢，不对，灯还是不亮", "洋坊新村九幢门口应该是电线老化了"],
           estates["m1"])
    assert estate_gazetteer.match("灯装错了，不对") is None


def test_two_buildings_and_no_repair_go_coarse_and_offer_both(estate_gazetteer, estates):
    for text in ["洋坊新村九幢十二幢", "洋坊新村1幢和9幢", "洋坊新村十二栋，九号楼那边"]:
        r = estate_gazetteer.match(text)
        assert r.grid_id == estates["yangfang"] and r.ancestor_only, text  # never either micro grid
        assert "two_buildings" in _codes(r)
        assert {g for g, _ in r.choices} <= {estates["m1"], estates["m2"], estates["m3"]} and len(r.choices) == 2
    # A flat's number after its unit (…单元301号楼下) is not a second building.
    flat = estate_gazetteer.match("洋坊新村5幢2单元301号楼下")
    assert "two_buildings" not in _codes(flat) and flat.grid_id in (estates["m2"], estates["yangfang"])


def test_the_building_wherever_it_is_said(estate_gazetteer, estates):
    _lands(estate_gazetteer, ["九幢，洋坊新村那边", "9号楼在洋坊新村", "九栋 罗布社区洋坊新村", "洋坊新村那边的九幢",
                              "洋坊新村里面的九幢"], estates["m1"])
    _lands(estate_gazetteer, ["十二幢，就在洋坊新村那里"], estates["m2"])
    # A building only the other estate has, said apart from this one: the estate, not a guess.
    assert estate_gazetteer.match("三十幢，洋坊新村那边").grid_id == estates["yangfang"]


def test_a_name_with_a_character_missing_or_too_many(estate_gazetteer, estates):
    missing = _lands(estate_gazetteer, ["洋坊村9幢", "洋新村九栋", "坊新村9幢"], estates["m1"])
    assert all(r.trace[0]["params"]["how"] == "missing_char" for r in missing)
    extra = _lands(estate_gazetteer, ["洋坊讨新村9幢", "洋坊新新村九幢"], estates["m1"])
    assert extra[0].confidence < 1.0
    assert zh(estate_gazetteer.match("洋坊讨新村9幢")) == "地名库多字匹配：洋坊讨新村9幢→洋坊新村9幢"
    assert estate_gazetteer.match("罗新苑九幢").grid_id == estates["n1"]


def test_a_name_off_by_a_character_that_could_be_two_names_goes_coarse():
    parents = {1: None, 2: 1, 3: 1}
    levels = {1: "community", 2: "micro", 3: "micro"}
    gaz = Gazetteer([("金桥新村", "building", 2), ("金湖新村", "building", 3), ("城东社区", "community", 1)],
                    parents=parents, levels=levels)
    assert gaz.match("金桥新村门口").grid_id == 2
    either = gaz.match("金新村门口")  # 金桥新村 or 金湖新村: not a guess, the choice is offered
    assert either.grid_id == 1 and either.ancestor_only and set(either.choices) == {(2, "金桥新村"), (3, "金湖新村")}
    assert gaz.match("城东社区金新村门口").grid_id == 1


def test_accent_classes_rank_below_exact_and_can_be_switched_off(session, estates):
    on = Gazetteer.from_session(session)
    exact, fh, nl = on.match("洋坊新村九幢"), on.match("洋航新村九幢"), on.match("罗布新院九幢")  # f/h; 院/苑 are alike
    assert exact.grid_id == fh.grid_id == estates["m1"]
    assert fh.trace[0]["params"]["how"] == "accent" and fh.confidence < exact.confidence
    assert nl.grid_id == estates["n1"]
    an_ang = on.match("洋坊新村九幢")  # exact ahead of every accent reading of the same name
    assert an_ang.confidence == 1.0
    off = Gazetteer([(e.name, e.kind, e.grid_id) for e in on.entries], parents=on.parents, levels=on.levels,
                    accents=["n/l"])
    assert off.match("洋航新村九幢") is None or off.match("洋航新村九幢").grid_id != estates["m1"] or \
        off.match("洋航新村九幢").trace[0]["params"]["how"] != "accent"


def test_accent_classes_come_from_the_rules(override, session, estates):
    override('[address]\naccent_classes = ["n/l"]\n')
    assert Gazetteer.from_session(session).accents == ("n/l",)
    override('[address]\naccent_classes = ["n/l", "f/h", "an/ang"]\n')
    gaz = Gazetteer.from_session(session)
    assert gaz.accents == ("n/l", "f/h", "an/ang") and gaz.match("洋航新村九幢").grid_id == estates["m1"]
    override('[address]\naccent_classes = ["k/g"]\n')
    with pytest.raises(ValueError, match="k/g"):
        Gazetteer.from_session(session)


def test_places_not_in_the_gazetteer_never_reach_a_micro_grid(estate_gazetteer, estates):
    for text in ["金沙湾9幢", "新华小区九幢", "洋坊花园九幢", "五四新村九幢，不对，是十二幢"]:
        r = estate_gazetteer.match(text)
        assert r is None or r.level != "micro", (text, r and r.reason)


def test_an_answer_to_a_choice_is_matched_against_the_candidates_only(estate_gazetteer, estates):
    offered = estate_gazetteer.match("洋坊新村1幢和9幢")
    choices = list(offered.choices)
    names = [name for _, name in choices]
    assert sorted(names) == ["洋坊新村1幢", "洋坊新村9幢"]
    nine = names.index("洋坊新村9幢")
    # the whole name, its own part, a homophone of the measure word, or the n-th one read out
    for answer in ["洋坊新村九幢", "九幢", "是九撞", "9号楼", "九幢，不是一幢"]:
        assert estate_gazetteer.pick(answer, choices) == nine, answer
    assert estate_gazetteer.pick("第二个", choices) == 1 and estate_gazetteer.pick("一", choices) == 0
    # neither, both, nothing of them, an ordinal past the list, a building not offered: no pick
    for answer in ["都不是", "一幢和九幢", "罗布新苑", "第三个", "十二幢", "", "嗯"]:
        assert estate_gazetteer.pick(answer, choices) is None, answer


def test_an_answer_between_two_names_may_leave_out_what_they_share():
    parents = {1: None, 2: 1, 3: 1}
    levels = {1: "community", 2: "micro", 3: "micro"}
    gaz = Gazetteer([("金桥新村", "building", 2), ("金湖新村", "building", 3), ("城东社区", "community", 1)],
                    parents=parents, levels=levels)
    choices = list(gaz.match("金新村门口").choices)
    qiao = [name for _, name in choices].index("金桥新村")
    assert gaz.pick("金桥", choices) == qiao and gaz.pick("金桥新村那边", choices) == qiao
    assert gaz.pick("金湖新村", choices) == 1 - qiao
    assert gaz.pick("城东社区", choices) is None  # the common ancestor is not a candidate
