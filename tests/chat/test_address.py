"""The typed-address step of the intake dialog with the inputs the hotline hears: the real
PTB application over HTTP to the fake Bot API, the demo district's gazetteer."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select

from core.cases.models import Case
from core.places.models import GazetteerEntry, Grid, Household
from core.platform.db import session_scope
from core.platform.i18n import case_routing_text

# A flat registered in another micro grid than its building's: only the full address finds it.
FLAT = "罗布社区洋坊新村9幢3单元808室"


@pytest.fixture
def places(engine, demo) -> dict[str, tuple[int, str]]:
    """key → (grid id, grid name) of the places the inputs name."""
    with session_scope(engine) as session:
        def grid_of(entry_name: str) -> Grid:
            entry = session.exec(select(GazetteerEntry).where(GazetteerEntry.name == entry_name)).one()
            return session.get(Grid, entry.grid_id)

        building, estate, elsewhere = grid_of("洋坊新村9幢"), grid_of("洋坊新村"), grid_of("洋坊新村1幢")
        assert building.id != elsewhere.id
        session.add(Household(code="HTEST", address=FLAT, grid_id=elsewhere.id))
        return {"building": (building.id, building.name), "estate": (estate.id, estate.name),
                "flat": (elsewhere.id, elsewhere.name)}


async def _report_at(h, user: int, typed: str) -> tuple[Case, str]:
    """File a report by text with ``typed`` as its address; the case and the place the bot offered."""
    h.fake.add_user(user, "Mei", language_code="zh-hans")
    await h.say(user, "楼道里的灯坏了，晚上看不见")
    await h.reply(user, "问题发生在哪里")
    await h.say(user, typed)
    offered = (await h.reply(user, "您说的是"))["text"]
    await h.press(user, "是的")
    await h.reply(user, "哪一类问题")
    await h.press(user, "路灯故障")
    await h.reply(user, "请确认")
    await h.press(user, "✅ 确认提交")
    number = re.search(r"\d{10,}", (await h.reply(user, "诉求已受理"))["text"]).group(0)
    with session_scope(h.engine) as session:
        return session.exec(select(Case).where(Case.number == number)).one(), offered


@pytest.mark.parametrize("typed", [
    "洋坊新村九撞",  # 幢 as residents say it (zhuàng), written as a recogniser does
    "洋坊新村9栋",
    "洋坊新村玖号楼",
    "我家住在 洋 坊 新村 九 座 门口",
])
async def test_building_however_typed(places, harness, typed):
    case, offered = await _report_at(harness, 7101, typed)
    grid_id, grid_name = places["building"]
    assert "洋坊新村9幢" in offered and grid_name in offered
    assert case.grid_id == grid_id
    assert case.address_text.startswith("洋坊新村9幢")


@pytest.mark.parametrize("typed", [FLAT, "洋坊新村9幢3单元808", "洋坊新村九栋三单元八零八"])
async def test_full_household_address_lands_in_its_micro_grid(places, harness, typed):
    case, offered = await _report_at(harness, 7102, typed)
    grid_id, grid_name = places["flat"]
    assert FLAT in offered and grid_name in offered
    assert case.grid_id == grid_id


async def test_estate_only_lands_in_its_area_and_says_so(places, harness):
    case, offered = await _report_at(harness, 7103, "洋坊新村门口")
    grid_id, grid_name = places["estate"]
    assert "洋坊新村" in offered and grid_name in offered
    assert case.grid_id == grid_id
    assert "片区确定，楼栋未知" in case_routing_text("zh", case.routing_trace, case.routing_reason)
    assert {"code": "partial", "params": {"level": "area", "missing": "building", "needs_building": True}} \
        in case.routing_trace


# -- two close places: the resident chooses ---------------------------------------------------

TWO_BUILDINGS = "洋坊新村1幢和9幢"


async def _offered_two(h, user: int) -> dict:
    h.fake.add_user(user, "Mei", language_code="zh-hans")
    await h.say(user, "楼道里的灯坏了，晚上看不见")
    await h.reply(user, "问题发生在哪里")
    await h.say(user, TWO_BUILDINGS)
    return await h.reply(user, "您说的是哪一个")


async def _finish(h, user: int) -> Case:
    await h.reply(user, "哪一类问题")
    await h.press(user, "路灯故障")
    await h.reply(user, "请确认")
    await h.press(user, "✅ 确认提交")
    number = re.search(r"\d{10,}", (await h.reply(user, "诉求已受理"))["text"]).group(0)
    with session_scope(h.engine) as session:
        return session.exec(select(Case).where(Case.number == number)).one()


async def test_close_places_are_buttons_and_a_press_chooses(places, harness):
    offered = await _offered_two(harness, 7201)
    labels = [b["text"] for row in offered["reply_markup"]["inline_keyboard"] for b in row]
    assert labels == ["洋坊新村1幢", "洋坊新村9幢", "都不是"]
    await harness.press(7201, "洋坊新村9幢")
    assert "洋坊新村9幢" in (await harness.reply(7201, "地点："))["text"]
    case = await _finish(harness, 7201)
    assert (case.grid_id, case.address_text) == (places["building"][0], "洋坊新村9幢")


async def test_none_of_the_close_places_stays_at_their_common_grid(places, harness):
    await _offered_two(harness, 7202)
    await harness.press(7202, "都不是")
    said = (await harness.reply(7202, "工作人员核实"))["text"]
    assert places["estate"][1] in said
    case = await _finish(harness, 7202)
    assert case.grid_id == places["estate"][0]  # never a guess between the two buildings
    assert case.address_text == TWO_BUILDINGS
    assert any(s["code"] == "two_buildings" for s in case.routing_trace)


@pytest.mark.parametrize(("typed", "lands"), [
    ("九撞", "building"),  # the part that differs, 幢 as a recogniser writes it
    ("第一个", "flat"),  # 洋坊新村1幢's micro grid (the fixture's "flat" grid)
    ("都不是", "estate"),
    ("十二幢", "estate"),  # a building not offered: none of them
])
async def test_typed_instead_of_pressed_is_matched_against_the_places_offered(places, harness, typed, lands):
    await _offered_two(harness, 7203)
    await harness.say(7203, typed)
    case = await _finish(harness, 7203)
    assert case.grid_id == places[lands][0]


async def test_another_place_typed_at_the_choice_starts_over_with_it(places, harness):
    await _offered_two(harness, 7204)
    await harness.say(7204, "罗布新苑3幢")
    assert "罗布新苑3幢" in (await harness.reply(7204, "您说的是「"))["text"]
