"""Chinese transcript normalisation."""

from __future__ import annotations

import pytest

from speech_models.text import (
    Word,
    convert_numerals,
    normalize_text,
    normalize_words,
    strip_cjk_spaces,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("一三八零零一三八零零零", "13800138000"),  # phone number
        ("一 三 八 零 零 一 三 八 零 零 零", "13800138000"),  # as Vosk spaces it
        ("三号楼二单元", "3号楼2单元"),
        ("三 号 楼 二 单元 五 零 二 室", "3号楼2单元502室"),
        ("幺 三 九 幺 二 三 四 五 六 七 八", "13912345678"),  # 幺 is "one" on the phone
        ("七 幢 十二 层", "7幢12层"),
        ("二十三 号", "23号"),
        ("工单 号 二 零 二 四 零 零 一 二", "工单号20240012"),  # case number
        ("两 百 户", "200户"),
        # words that contain numerals but are not numbers stay as they are
        ("一个 人", "一个人"),
        ("十分 满意", "十分满意"),
        ("千万 别 忘了", "千万别忘了"),
        ("万一 下雨", "万一下雨"),
        ("一起 去 一下", "一起去一下"),
        ("三 点 半", "三点半"),  # times are left alone
        ("hello world", "hello world"),
        ("", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_strip_cjk_spaces_keeps_latin_spacing():
    assert strip_cjk_spaces(" 路灯 坏 了 ok thanks 谢谢 ") == "路灯坏了ok thanks谢谢"


def test_convert_numerals_leaves_text_without_numbers():
    assert convert_numerals("路灯坏了") == "路灯坏了"


def test_normalize_words_keeps_timings_and_merges_number_words():
    words = [
        Word("我", 0.0, 0.2, 0.99),
        Word("住", 0.2, 0.4, 0.98),
        Word("三", 0.4, 0.6, 0.9),
        Word("号楼", 0.6, 0.9, 0.8),
        Word("五", 1.0, 1.1, 0.7),
        Word("零", 1.1, 1.2, 0.95),
        Word("二", 1.2, 1.3, 0.85),
        Word("室", 1.3, 1.5, 0.9),
    ]
    text, out = normalize_words(words)
    assert text == "我住3号楼502室"
    assert [w.text for w in out] == ["我", "住", "3", "号楼", "502", "室"]
    merged = out[4]
    assert (merged.start, merged.end, merged.conf) == (1.0, 1.3, 0.7)  # span, least sure digit
    assert out[3] == words[3]


def test_normalize_words_number_inside_a_word():
    text, out = normalize_words([Word("三号楼", 0.0, 0.5, 0.9), Word("好", 0.5, 0.7, 0.8)])
    assert text == "3号楼好"
    assert out == [Word("3号楼", 0.0, 0.5, 0.9), Word("好", 0.5, 0.7, 0.8)]


def test_normalize_words_empty():
    assert normalize_words([]) == ("", [])


def test_text_module_is_light():
    import subprocess
    import sys

    code = "import sys, speech_models.text; print('numpy' in sys.modules, 'vosk' in sys.modules, 'cn2an' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
