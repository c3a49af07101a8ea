"""Address text as people say it and recognisers write it (core/places/address.py)."""

from __future__ import annotations

import pytest

from core.places.address import (
    BUILDING,
    DOOR,
    FLOOR,
    ROOM,
    UNIT,
    canonical,
    comps,
    local_readings,
    number_words,
    parse_number,
    parse_parts,
    readings,
    split_numbered,
    spoken,
)


@pytest.mark.parametrize("run, value", [
    ("9", 9), ("09", 9), ("九", 9), ("玖", 9), ("幺", 1), ("两", 2),
    ("十二", 12), ("一十二", 12), ("拾贰", 12), ("二十", 20),
    ("三零一", 301), ("三百零一", 301), ("叁佰零壹", 301), ("幺零二", 102),
    ("两百", 200), ("一百一", 110), ("两千零五", 2005), ("零", 0),
])
def test_parse_number(run, value):
    assert parse_number(run) == value


@pytest.mark.parametrize("run", ["", "二三十", "十百", "一百十", "9十", "九a"])
def test_parse_number_refuses_what_is_not_a_number(run):
    assert parse_number(run) is None


def test_number_words_read_back_as_the_same_number():
    for n in [0, 1, 9, 10, 12, 19, 20, 21, 99, 100, 101, 110, 301, 1005, 2026]:
        assert parse_number(number_words(n)) == n, n
    assert number_words(12) == "十二" and number_words(301) == "三百零一"


@pytest.mark.parametrize("said, written", [
    ("洋坊新村九幢", "洋坊新村9幢"),
    ("洋 坊 新村 九 幢", "洋坊新村9幢"),  # Vosk's spaces
    ("洋坊新村９幢", "洋坊新村9幢"),  # full width
    ("九栋二单元三零一", "9栋2单元301"),
    ("九栋二单元三百零一室", "9栋2单元301室"),
    ("洋坊新村一十二号楼", "洋坊新村12号楼"),
    ("五一路，3号。", "51路3号"),  # numbers in names change on both sides alike
    ("一栋楼都停电了", "一栋楼都停电了"),  # counts a building, names none
    ("两栋楼之间", "两栋楼之间"),
    ("洋坊新村一栋楼下", "洋坊新村1栋楼下"),  # building 1, downstairs
])
def test_canonical(said, written):
    assert canonical(said) == written


def _parts(text: str, **kw) -> list[tuple[str, int]]:
    return [(p.kind, p.number) for p in parse_parts(canonical(text), **kw)]


@pytest.mark.parametrize("text", ["洋坊新村9幢", "洋坊新村9栋", "洋坊新村9号楼", "洋坊新村9座", "洋坊新村九幢"])
def test_measure_words_for_a_building(text):
    assert _parts(text) == [(BUILDING, 9)]


@pytest.mark.parametrize("text", [
    "9幢2单元301", "九栋二单元三零一", "9号楼2单元301室", "九座两单元三百零一号", "9-2-301", "九号二单元三零幺",
])
def test_one_household_address_however_said(text):
    assert _parts(text) == [(BUILDING, 9), (UNIT, 2), (ROOM, 301)]  # 幺 is 1 on the phone


def test_homophones_of_measure_words_only_for_what_people_say():
    for said in ["九撞", "九状", "九壮", "九装", "九洞", "九床"]:
        assert _parts(said) == [(BUILDING, 9)], said
    assert _parts("二担元", homophones=True) == [(UNIT, 2)]
    parts = parse_parts(canonical("九撞九床九幢"))
    # The reading residents use (zhuàng) is surer than the dictionary's (chuáng).
    assert parts[0].sure > parts[1].sure and parts[2].sure == 1.0
    assert _parts("九撞", homophones=False) == []  # registered names are written, not heard
    # 东 after a number sounds like 栋, unless it starts a name found in the text (东门小区).
    assert _parts("9东门小区") == [(BUILDING, 9)]
    assert parse_parts("9东门小区", protected=((1, 5),)) == []


def test_floors_doors_and_numbers_in_names():
    assert _parts("9幢3楼301") == [(BUILDING, 9), (FLOOR, 3), (ROOM, 301)]
    assert comps(parse_parts("9幢3楼301")) == ((BUILDING, 9), (ROOM, 301))  # people add or drop floors
    assert _parts("罗布路3号") == [(DOOR, 3)]
    assert _parts("9幢20号") == [(BUILDING, 9), (ROOM, 20)]  # 号 after a building is the flat
    assert _parts("罗布社区第5微网格") == []
    assert parse_parts("洋坊新村12幢", protected=((0, 7),)) == []  # inside a name found in the text


def test_split_numbered():
    assert split_numbered("洋坊新村9幢") == ("洋坊新村", ((BUILDING, 9),), "洋坊新村9幢")
    assert split_numbered("罗布社区洋坊新村9幢2单元301室") == (
        "罗布社区洋坊新村", ((BUILDING, 9), (UNIT, 2), (ROOM, 301)), "罗布社区洋坊新村9幢2单元301室")
    assert split_numbered("罗布路3号") == ("罗布路", ((DOOR, 3),), "罗布路3号")
    assert split_numbered("罗布社区") is None
    assert split_numbered("3号楼食堂") is None  # a name that has a number in it


def test_every_reading_and_the_local_one():
    assert readings("幢") == {"chuang", "zhuang"}
    assert {"zhang", "chang"} <= readings("长") and {"xing", "hang"} <= readings("行")
    assert readings("9") == {"jiu"} and readings("1") == {"yi", "yao"}
    # pypinyin reads 幢 chuáng, 朝阳 zhāoyáng and 支行 zhīxíng; residents do not.
    assert local_readings("洋坊新村9幢") == ("yang", "fang", "xin", "cun", "jiu", "zhuang")
    assert local_readings("朝阳路") == ("chao", "yang", "lu")
    assert local_readings("工商银行凤岗支行")[-1] == "hang"
    assert local_readings("长乐幼儿园")[:2] == ("chang", "le")


def test_spoken_names_for_the_phrase_list():
    assert spoken("洋坊新村12幢") == "洋坊新村十二幢"
    assert spoken("虬江第二小学") == "虬江第二小学"
