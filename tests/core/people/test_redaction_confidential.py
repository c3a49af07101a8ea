"""core.people.redaction's CONFIDENTIAL policy: what a role that may not see a confidential
case's resident reads of its words (and what Open311 publishes of it)."""

from __future__ import annotations

import re

from core.people.redaction import CONFIDENTIAL, PUBLIC, STAFF, redact

SAID = "我叫王小明，住幸福路12号3栋202室，电话13912345678，身份证350102199001011234，楼下烧烤店油烟很大，三百块罚款没用"


def test_every_number_of_three_digits_or_more_goes_and_the_problem_stays():
    out = redact(SAID, ["王小明"], CONFIDENTIAL)
    assert "王小明" not in out and "小明" not in out
    assert not re.search(r"\d{3}", out), out
    for planted in ("13912345678", "139", "5678", "350102", "202", "1234"):
        assert planted not in out
    assert "楼下烧烤店油烟很大" in out and "幸福路" in out


def test_numbers_spoken_as_chinese_digits_are_masked_too():
    out = redact("我家是二零三室，号码幺三九一二三四五六七八", (), CONFIDENTIAL)
    assert "二零三" not in out and "幺三九" not in out and "五六七八" not in out


def test_short_numbers_and_the_surname_alone_stay_out_of_the_mask_as_no_mask_is_needed():
    """Two digits (a day, a count of floors) identify no one; a masked name keeps no initial."""
    out = redact("12月5日起漏水，李阿姨说过", (), CONFIDENTIAL)
    assert "12月5日" in out
    assert "李" not in out


def test_it_masks_more_than_the_staff_and_public_policies():
    text = "我住3栋202室，车牌闽A12345，楼道堆了杂物"
    staff, public, confidential = (redact(text, (), p) for p in (STAFF, PUBLIC, CONFIDENTIAL))
    assert "202" in staff and "12345" in public  # fewer than seven digits: no phone to them
    assert "202" not in confidential and "12345" not in confidential
    assert "楼道堆了杂物" in confidential
