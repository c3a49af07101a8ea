"""core.cases.intents: a hotline caller's first words and short answers, as a recogniser
writes them (spaces, homophones, fillers, a character dropped), matched against the
phrases of core/data/intents.toml, which a deployment overrides with GRIDLINE_INTENTS."""

from __future__ import annotations

import pytest

from core.cases.intents import INTENTS, IntentMatcher
from core.platform.rules import RulesError, reload_rules


@pytest.fixture
def matcher() -> IntentMatcher:
    return IntentMatcher.load()


@pytest.mark.parametrize(("words", "intent"), [
    ("人工", "operator"), ("我 要 转 人 工", "operator"), ("人 公", "operator"), ("听 不 懂", "operator"),
    ("嗯 那个 查询 一下", "status"), ("茶询 进度", "status"), ("我 的 编号 是 多少", "status"),
    ("在 说 一遍", "repeat"), ("再说遍", "repeat"), ("慢 一点", "slower"), ("说 慢 点", "slower"),
    ("保密", "confidential"), ("不要 透露 我 的 信息", "confidential"),
])
def test_short_turns_mean_their_intent(matcher, words, intent):
    assert matcher.hear(words, "open").intent == intent


@pytest.mark.parametrize("words", [
    "小区 门口 的 路灯 坏 了 好 几 天 了",
    "我 查询 过 好 几 次 了 楼下 的 路灯 还是 不亮",  # mentions 查询, says much more
    "垃圾 没人 清理",  # 没人清 is one syllable off 没听清: short phrases must match exactly
    "车 开 得 太快 了 小区 里 要 装 减速带",
    "",
])
def test_anything_else_is_a_petition(matcher, words):
    assert matcher.hear(words, "open").is_petition


def test_a_case_number_is_read_with_the_address_numerals(matcher):
    heard = matcher.hear("查询 二六幺二 零七零零 零幺", "open")
    assert heard.intent == "status" and heard.number == "2612070001"
    alone = matcher.hear("二 六 幺 二 零 七 两 零 零 幺", "open")
    assert alone.intent == "status" and alone.number == "2612072001"


def test_confidential_rides_on_a_petition(matcher):
    heard = matcher.hear("隔壁 半夜 装修 请 帮 我 保密", "open")
    assert heard.is_petition and heard.confidential


@pytest.mark.parametrize(("words", "intent"), [
    ("对", "yes"), ("队", "yes"), ("是的", "yes"), ("没 错", "yes"), ("嗯 可以", "yes"),
    ("不对", "no"), ("不是", "no"), ("重新 说", "no"), ("说错了", "no"),
    ("保密", "confidential"), ("再 说 一 遍", "repeat"), ("啊", ""), ("", ""),
])
def test_short_answers(matcher, words, intent):
    assert matcher.hear(words, "answer").intent == intent


def test_the_answers_phrase_list_is_the_grammar(matcher):
    phrases = matcher.phrase_list("answer")
    assert {"对", "不对", "是的", "保密", "再说一遍"} <= set(phrases)
    assert len(phrases) == len(set(phrases))


def test_a_deployment_changes_the_phrases(tmp_path, monkeypatch):
    override = tmp_path / "intents.toml"
    override.write_text('[intents]\noperator = ["话务员"]\n', "utf-8")
    monkeypatch.setenv("GRIDLINE_INTENTS", str(override))
    reload_rules()
    try:
        matcher = IntentMatcher.load()
        assert matcher.hear("话务员", "open").intent == "operator"
        assert matcher.hear("人工", "open").is_petition  # the list was replaced whole
    finally:
        monkeypatch.delenv("GRIDLINE_INTENTS")
        reload_rules()


def test_a_bad_file_names_the_key(tmp_path):
    bad = tmp_path / "intents.toml"
    bad.write_text('[turns]\nopen = ["operator", "nonsense"]\n', "utf-8")
    with pytest.raises(RulesError, match=r"turns\.open: 'nonsense' is not an intent"):
        INTENTS.build(bad)
