"""core.people.redaction over a corpus of thirty realistic petitions with personal data planted in
them (tests/core/fixtures/pii_corpus.json): nothing planted survives the public masking, what
the petition is about does; the staff masking keeps places and a phone's ends; the function is
pure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.people.redaction import PUBLIC, STAFF, is_personal_query, mask_name, mask_phone, redact

CORPUS = json.loads((Path(__file__).parent.parent / "fixtures" / "pii_corpus.json").read_text("utf-8"))["items"]
CHINESE_DIGITS = str.maketrans("零〇一二三四五六七八九幺两０１２３４５６７８９", "00123456789120123456789")


def known(item: dict) -> list[str]:
    return [n for n in (item["resident"]["name"], *item["household"]) if n]


def digits_of(text: str) -> str:
    return re.sub(r"\D", "", text.translate(CHINESE_DIGITS))


def leaks(published: str, item: dict) -> list[str]:
    """The planted strings that can still be read in ``published``: as written, without the
    spaces between them, or (a number) as the same digits written any way."""
    flat = re.sub(r"\s", "", published)
    found = [p for p in item["planted"] if p in published or re.sub(r"\s", "", p) in flat]
    found += [p for p in item["planted"] if len(digits_of(p)) >= 5 and digits_of(p) in digits_of(published)]
    phone = item["resident"]["phone"]
    if phone and digits_of(phone)[-8:] in digits_of(published):
        found.append(phone)
    return found


def test_the_corpus_is_thirty_petitions_each_with_planted_data():
    assert len(CORPUS) == 30 and len({i["id"] for i in CORPUS}) == 30
    for item in CORPUS:
        assert item["planted"] and item["keep"], item["id"]
        for planted in item["planted"]:  # each is in the text (as written, or as its digits)
            assert (re.sub(r"\s", "", planted) in re.sub(r"\s", "", item["text"])
                    or (len(digits_of(planted)) >= 5 and digits_of(planted) in digits_of(item["text"]))
                    or any(planted in name for name in known(item))), (item["id"], planted)
        assert all(k in item["text"] for k in item["keep"]), item["id"]


@pytest.mark.parametrize("item", CORPUS, ids=[i["id"] for i in CORPUS])
def test_nothing_planted_is_published_and_the_petition_stays_readable(item):
    published = redact(item["text"], known(item), PUBLIC)
    assert leaks(published, item) == [], published
    assert [k for k in item["keep"] if k not in published] == [], published


def test_the_issue_example_reads_as_expected():
    text = CORPUS[0]["text"]
    assert redact(text, ["王小明"]) == ("我叫**，身份证***，住在翠竹园**幢**单元**室，电话 ***，邮箱 ***，邻居**天吵架")


def test_staff_masking_keeps_the_place_and_the_ends_of_a_mobile_number():
    text = CORPUS[0]["text"]
    masked = redact(text, ["王小明"], STAFF)
    assert masked == "我叫王**，身份证***，住在翠竹园2幢3单元202室，电话 139****5678，邮箱 ***，邻居李**天吵架"
    assert redact("请打13812342419找我，或者+86 138 1234 2419", (), STAFF) == "请打138****2419找我，或者138****2419"
    assert redact("3号楼2单元", (), STAFF) == "3号楼2单元"
    assert redact("电话幺三九 一二三四 五六七八", (), STAFF) == "电话139****5678"


@pytest.mark.parametrize("text", [
    "我是这里的居民，小区门口路灯不亮", "门卫大爷说修车师傅不在", "我叫物业来修了好几次没人来",
    "我是高层住户，向社区书记反映过", "2026-11-01晚上开始停水", "路灯坏了3天，一共5盏", "秀英阿姨在建国路跳舞",
    "飞线充电太危险了", "下水道堵了，污水冒到马路上", "一楼漏水，五楼也漏",
])
def test_ordinary_words_stay(text):
    assert redact(text, ("张建国",)) == text


def test_known_names_are_masked_however_they_are_written():
    names = ("王小明", "刘秀英")
    assert redact("王 小 明 来过", names) == "** 来过"
    assert redact("秀英阿姨", names) == "**阿姨"  # the given name alone
    assert redact("我是王晓明", ("王小明",)) == "我是**"  # a recogniser's homophone
    assert redact("王小明", ()) == "王小明"  # an unknown bare name is no self-introduction
    assert redact("王小明", ("王小明",), STAFF) == "王**"


def test_the_function_is_pure():
    text = CORPUS[1]["text"]
    assert redact(text, known(CORPUS[1])) == redact(text, known(CORPUS[1]))
    assert redact(None) == "" and redact("") == ""


def test_personal_queries():
    assert all(is_personal_query(q) for q in ("1391", "139", "幺三九", "wxm@", "王小明", "陈大", "欧阳娜娜"))
    assert not any(is_personal_query(q) for q in ("路灯", "飞线充电", "高层", "下水道堵了", "", "陈"))


def test_masking_a_phone_or_a_name_field():
    assert mask_phone("+8613812342419") == "138****2419" and mask_phone("0591-8765432") == "059****5432"
    assert mask_name("陈大明") == "陈**" and mask_name("") == ""
