"""The unknown caller's address turn on the demo district's gazetteer, through the real
webhooks and Media Streams socket (the simulator plays Twilio), the fake recogniser
saying what a Mandarin recogniser writes."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core.cases.models import Case
from core.people.models import Resident
from core.places import indexes
from core.places.address import spoken
from core.places.models import GazetteerEntry, Grid, Household
from core.platform.db import session_scope
from core.platform.i18n import case_routing_text
from ivr.simulator import CallScript, Turn
from tests.ivr.conftest import start_rig, tone

CALLER = "+8613977776666"  # in no household of the demo district


@pytest.fixture
def places(demo_district) -> dict[str, int]:
    with session_scope(demo_district) as session:
        assert session.exec(select(Resident).where(Resident.phone.contains("13977776666"))).first() is None

        def grid_of(name: str) -> int:
            return session.exec(select(GazetteerEntry).where(GazetteerEntry.name == name)).one().grid_id

        return {"building": grid_of("洋坊新村9幢"), "estate": grid_of("洋坊新村"),
                "other_building": grid_of("洋坊新村1幢"), "far_building": grid_of("洋坊新村12幢")}


@pytest.fixture
async def demo_rig(engine, tmp_path, fake_speech, places):
    rig = await start_rig(engine, tmp_path, fake_speech, district=places)
    yield rig
    await rig.stop()


def _call(digits: list[str | None], turns: int = 2) -> CallScript:
    """Menu 1, a petition (read back, 1), an address (read back, 1), then ``digits``."""
    return CallScript(from_number=CALLER, digits=["1", "1", "1", *digits],
                      turns=[Turn(tone(2.5))] + [Turn(tone(1.5)) for _ in range(turns - 1)])


def _the_case(rig) -> Case:
    (case,) = rig.cases()
    return case


async def test_building_said_zhuang_and_written_as_a_homophone_lands_in_its_micro_grid(demo_rig, fake_speech, places):
    fake_speech.say("楼道 里 的 灯 不亮 了", "洋坊 新村 九 撞")
    result = await demo_rig.simulator().call(_call([]))
    assert any("是洋坊新村9幢吗？" in h for h in result.heard)
    assert not any("请输入楼栋号" in h for h in result.heard)  # the building is sure: no keypad question
    case = _the_case(demo_rig)
    assert result.case_number == case.number
    assert (case.grid_id, case.address_text) == (places["building"], "洋坊新村9幢")
    assert all(s["code"] != "partial" for s in case.routing_trace)


async def test_estate_only_asks_the_building_number_by_keypad(demo_rig, fake_speech, places):
    fake_speech.say("楼道 里 的 灯 不亮 了", "我家 住在 洋坊 新村 门口")
    result = await demo_rig.simulator().call(_call(["9#"]))
    asked = [h for h in result.heard if "请输入楼栋号，按井号键结束" in h]
    assert asked and any("是洋坊新村吗？" in h for h in result.heard)
    case = _the_case(demo_rig)
    assert result.case_number == case.number
    assert (case.grid_id, case.address_text) == (places["building"], "洋坊新村9幢")
    assert "building_not_found" not in (case.flags or [])
    call = demo_rig.call_session(result.call_sid)
    assert call.state["address"]["building_keyed"] == "9" and call.outcome == "case_filed"


async def test_unknown_building_number_keeps_the_estate_and_says_so(demo_rig, fake_speech, places):
    fake_speech.say("楼道 里 的 灯 不亮 了", "洋坊 新村")
    result = await demo_rig.simulator().call(_call(["98#"]))
    assert any("没有找到这个楼栋号" in h for h in result.heard)
    case = _the_case(demo_rig)
    assert result.case_number == case.number
    assert case.grid_id == places["estate"]  # never a guess below what is sure
    assert "building_not_found" in case.flags
    assert {"code": "partial", "params": {"level": "area", "missing": "building", "needs_building": True}} \
        in case.routing_trace
    assert "片区确定，楼栋未知" in case_routing_text("zh", case.routing_trace, case.routing_reason)


async def test_no_key_for_the_building_files_at_the_estate(demo_rig, fake_speech, places):
    fake_speech.say("楼道 里 的 灯 不亮 了", "洋坊 新村")
    result = await demo_rig.simulator().call(_call([None]))
    assert sum("请输入楼栋号" in h for h in result.heard) == 2  # said twice, asked once
    case = _the_case(demo_rig)
    assert result.case_number == case.number and case.grid_id == places["estate"]
    assert "building_not_found" not in (case.flags or [])


async def test_phrase_list_pass_settles_what_the_free_words_could_not(demo_rig, fake_speech, places, engine):
    # Free recognition misses the building; recognised again with the gazetteer's phrase
    # list, the same audio gives a name that exists.
    fake_speech.say("楼道 里 的 灯 不亮 了", "洋坊 新村 就 状 吧").say_in_grammar("洋坊新村九幢")
    result = await demo_rig.simulator().call(_call([]))
    assert any("是洋坊新村9幢吗？" in h for h in result.heard)
    case = _the_case(demo_rig)
    assert case.grid_id == places["building"]
    phrase_streams = [s for s in fake_speech.streams if s.phrases]
    assert len(phrase_streams) == 1
    phrases = set(phrase_streams[0].phrases)
    assert {"洋坊新村", "洋坊新村九幢", "幢", "栋", "号楼", "九", "幺"} <= phrases
    with session_scope(engine) as session:
        flats = [spoken(h.address) for h in session.exec(select(Household)).all()]
    assert flats and not phrases & set(flats)  # households' addresses stay private


async def test_phrase_list_pass_never_moves_sideways(demo_rig, fake_speech, places, engine):
    # The free words are sure of 洋坊新村; a phrase pass naming a building elsewhere is not taken.
    with session_scope(engine) as session:
        other = session.exec(select(GazetteerEntry).where(GazetteerEntry.kind == "building",
                                                          GazetteerEntry.name.like("%幢"),
                                                          ~GazetteerEntry.name.startswith("洋坊新村"))).first()
        other_name = other.name
    fake_speech.say("楼道 里 的 灯 不亮 了", "洋坊 新村").say_in_grammar(spoken(other_name))
    await demo_rig.simulator().call(_call([None]))
    assert len([s for s in fake_speech.streams if s.phrases]) == 1  # the phrase pass ran, and lost
    case = _the_case(demo_rig)
    assert case.grid_id == places["estate"]


async def test_phrase_list_follows_the_gazetteer(demo_rig, engine):
    hotline = demo_rig.hotline
    before = (await hotline.gazetteer()).phrases()
    with session_scope(engine) as session:
        estate = session.exec(select(GazetteerEntry).where(GazetteerEntry.name == "洋坊新村")).one()
        session.add(GazetteerEntry(name="洋坊新村88幢", kind="building", grid_id=estate.grid_id))
    indexes.CACHE.wait_idle(engine)  # the commit started the rebuild; requests meanwhile use the old one
    after = (await hotline.gazetteer()).phrases()
    assert after.version != before.version
    assert "洋坊新村八十八幢" in after.phrases and "洋坊新村八十八幢" not in before.phrases


async def test_full_household_address_said_lands_in_the_households_grid(demo_rig, fake_speech, places, engine):
    flat = "罗布社区洋坊新村9幢3单元808室"
    with session_scope(engine) as session:
        elsewhere = session.get(Grid, places["other_building"])
        session.add(Household(code="HTEST", address=flat, grid_id=elsewhere.id))
    fake_speech.say("楼道 里 的 灯 不亮 了", "洋坊 新村 九 栋 三 单元 八 零 八")
    await demo_rig.simulator().call(_call([]))
    case = _the_case(demo_rig)
    assert case.grid_id == places["other_building"]


async def test_a_phrase_pass_that_fails_leaves_the_free_words(demo_rig, places):
    """A model without the gazetteer's words (the Korean test model, say) refuses the phrase
    list: the free words stand, and the call goes on."""
    from ivr.address import hear_address

    async def refused(phrases):
        raise ValueError("none of the phrases is in the model's vocabulary")

    gaz = await demo_rig.hotline.gazetteer()
    heard = await hear_address(gaz, "洋坊 新村", refused)
    assert (heard.route.grid_id, heard.phrase_pass, heard.as_match()["needs_building"]) == (
        places["estate"], False, True)


# -- two close places: the caller chooses ---------------------------------------------------

CHOICE = "是洋坊新村一幢，还是九幢？一幢请按1，九幢请按2，或者直接说出来。"


def _choice_call(answer: str | Turn | None) -> CallScript:
    """Key 1 during the greeting, a petition (read back, 1), an address naming two buildings, then ``answer``
    to "是A，还是B？": a key, words said (a Turn), or nothing."""
    return CallScript(from_number=CALLER, digits=["1", "1", answer],
                      turns=[Turn(tone(2.5)), Turn(tone(1.5))])


def _said_two_buildings(fake_speech, answer: str = "") -> None:
    fake_speech.say("楼道 里 的 灯 不亮 了", "洋坊 新村 一 幢 和 九 幢", answer)


async def test_two_close_places_are_offered_and_a_key_chooses(demo_rig, fake_speech, places):
    _said_two_buildings(fake_speech)
    result = await demo_rig.simulator().call(_choice_call("2"))
    assert any(CHOICE in h for h in result.heard)
    assert not any("吗？确认请按1" in h for h in result.heard)  # the choice is the confirmation
    case = _the_case(demo_rig)
    assert result.case_number == case.number
    assert (case.grid_id, case.address_text) == (places["building"], "洋坊新村9幢")
    assert "address_unconfirmed" not in (case.flags or [])
    address = demo_rig.call_session(result.call_sid).state["address"]
    assert (address["chosen"], address["chosen_by"]) == (2, "key")
    assert [g for g, _ in address["choices"]] == [places["other_building"], places["building"]]


async def test_a_choice_answered_by_voice_with_the_part_that_differs(demo_rig, fake_speech, places):
    _said_two_buildings(fake_speech, "一 撞")  # 幢 heard as 撞, the estate left out
    result = await demo_rig.simulator().call(_choice_call(Turn(tone(1.0))))
    assert any(CHOICE in h for h in result.heard)
    case = _the_case(demo_rig)
    assert result.case_number == case.number
    assert (case.grid_id, case.address_text) == (places["other_building"], "洋坊新村1幢")
    address = demo_rig.call_session(result.call_sid).state["address"]
    assert (address["chosen"], address["chosen_by"], address["choice_heard"]) == (1, "voice", "一撞")
    assert address["choice_segment"] in demo_rig.call_session(result.call_sid).state["segments"]


async def test_a_choice_not_answered_files_at_the_common_grid(demo_rig, fake_speech, places):
    _said_two_buildings(fake_speech)
    result = await demo_rig.simulator().call(_choice_call(None))
    assert any("工作人员会和您核实具体位置" in h for h in result.heard)
    case = _the_case(demo_rig)
    assert result.case_number == case.number
    assert case.grid_id == places["estate"]  # never a guess between the two
    assert "address_unconfirmed" in case.flags
    assert any(s["code"] == "two_buildings" for s in case.routing_trace)
    assert demo_rig.call_session(result.call_sid).state["address"]["chosen"] is None


@pytest.mark.parametrize("answer", ["都 不是", "十二 幢", "翠 湖 花园"])
async def test_neither_or_a_place_not_offered_never_reaches_a_micro_grid(demo_rig, fake_speech, places, answer):
    _said_two_buildings(fake_speech, answer)
    result = await demo_rig.simulator().call(_choice_call(Turn(tone(1.0))))
    case = _the_case(demo_rig)
    assert result.case_number == case.number
    assert case.grid_id == places["estate"] and case.grid_id not in (places["building"], places["far_building"])
    address = demo_rig.call_session(result.call_sid).state["address"]
    assert address["chosen"] is None and address["choice_heard"]


async def test_a_wrong_key_at_the_choice_is_no_choice(demo_rig, fake_speech, places):
    _said_two_buildings(fake_speech)
    result = await demo_rig.simulator().call(_choice_call("7"))
    case = _the_case(demo_rig)
    assert result.case_number == case.number
    assert case.grid_id == places["estate"] and "address_unconfirmed" in case.flags


async def test_a_caller_who_hangs_up_at_the_choice_keeps_the_case_at_the_common_grid(demo_rig, fake_speech, places):
    _said_two_buildings(fake_speech)
    answered = await demo_rig.simulator().call(_choice_call("2"))  # the same call answered: where the question is
    asked_after = next(i for i, h in enumerate(answered.heard) if CHOICE in h) + 1
    fake_speech.reset()  # the choice was keyed: its stream heard nothing and left its words queued
    _said_two_buildings(fake_speech)
    script = _choice_call("2")
    script.hangup_after_prompts = asked_after
    gone = await demo_rig.simulator().call(script)
    assert gone.case_number is None and any(CHOICE in h for h in gone.heard)
    call = demo_rig.call_session(gone.call_sid)
    assert call.outcome == "hung_up_case" and call.case_id is not None
    with session_scope(demo_rig.engine) as session:
        case = session.get(Case, call.case_id)
        assert case.grid_id == places["estate"]  # the petition is kept; the place stays what was sure
        assert {"caller_hung_up", "address_unconfirmed"} <= set(case.flags)
