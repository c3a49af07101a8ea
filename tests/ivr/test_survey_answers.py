"""The follow-up call's spoken answers as rules data (``survey_flow.toml [answers]``) and
the matching of what a recogniser heard to an answer: noise tolerated, never a guess."""

from __future__ import annotations

import pytest

from core.platform.rules import RulesError
from ivr.config import SURVEY_FLOW, survey_scales
from ivr.survey_answers import AnswersError, SurveyAnswers, check_answers, normalise
from ivr.survey_twiml import SurveyFlowConfig


@pytest.fixture(scope="module")
def answers() -> SurveyAnswers:
    return SurveyAnswers.of(SURVEY_FLOW.packaged_data()["answers"], survey_scales())


@pytest.mark.parametrize("heard, answer", [
    ("解决了", "solved"),
    ("解决 了 解决 了", "solved"),  # said twice, as Vosk spaces its words
    ("嗯 已经 解决 了", "solved"),  # a filler first
    ("都 修好 了 谢谢", "solved"),  # inside a longer sentence
    ("部分 解决", "partly"),
    ("解决 了 一部分", "partly"),  # longer than 解决了: the whole phrase wins
    ("没 解决", "not"),
    ("没有 解决", "not"),
    ("还 没有", "not"),
    ("还 没 解决 了", "not"),  # 没解决 and 解决了 overlap: the negation comes first
    ("还是 老 样子", "not"),
    ("界绝了", "solved"),  # every character heard as another of its sound (jie jue le)
])
def test_is_it_solved(answers, heard, answer):
    assert answers.match("solved", heard) == answer


@pytest.mark.parametrize("heard, answer", [
    ("满意", "satisfied"),
    ("挺 满意 的", "satisfied"),
    ("满意 满意", "satisfied"),
    ("瞒意", "satisfied"),  # 瞒 man: heard wrong, the same sound
    ("基本 满意", "basically"),  # not 满意: the longer phrase covers it
    ("一般", "basically"),
    ("还行 吧", "basically"),
    ("还 可以", "basically"),
    ("不满意", "not"),  # not 满意
    ("不 太 满意", "not"),
    ("非常 不 满意", "not"),  # 非常满意 with a 不 in it is not 非常满意
    ("很 不 满意", "not"),
    ("基满意", "satisfied"),  # 基本满意 half heard: 满意 is there whole, the long phrase is not
])
def test_are_you_satisfied(answers, heard, answer):
    assert answers.match("satisfied", heard) == answer


@pytest.mark.parametrize("heard", [
    "",
    "嗯",  # a filler only
    "今天 天气 不错",  # nothing of the list
    "满意 的 话 那 不 满意",  # two answers apart: no guess, the keys are offered
    "解决",  # part of a phrase, no phrase whole
])
def test_no_answer_rather_than_a_guess(answers, heard):
    assert answers.match("satisfied", heard) is None
    assert answers.match("solved", heard) is None


def test_each_question_has_its_own_grammar(answers):
    solved, satisfied = answers.phrases("solved"), answers.phrases("satisfied")
    assert {"解决了", "部分解决", "没解决", "还没有"} <= set(solved)
    assert {"满意", "基本满意", "不满意", "一般", "还行", "不太满意", "挺满意的"} <= set(satisfied)
    assert len(solved) == len(set(solved)) and not set(solved) & set(satisfied)
    # a phrase gives its own answer back through the matcher
    for question in ("solved", "satisfied"):
        for answer, phrases in answers.by_question[question].items():
            for phrase in phrases:
                assert answers.match(question, phrase) == answer, (question, phrase)


def test_normalise_drops_spaces_punctuation_and_fillers():
    assert normalise(" 嗯，满意 吧！") == "满意"


def test_a_deployment_overrides_the_phrases(override):
    override('[answers.satisfied]\nbasically = ["还凑合", "过得去"]\n', "GRIDLINE_SURVEY_FLOW")
    config = SurveyFlowConfig.load()
    answers = SurveyAnswers.of(config["answers"], survey_scales())
    assert answers.match("satisfied", "过得去") == "basically"
    assert answers.match("satisfied", "一般") is None  # the list was replaced, not extended
    assert answers.match("satisfied", "不满意") == "not"  # the other lists stay


@pytest.mark.parametrize("text, named", [
    ('[answers.solved]\nsolved = []\n', "answers.solved.solved: a list of phrases"),
    ('[answers.solved]\nmaybe = ["也许"]\n', "answers.solved: must name each answer of the scale"),
    ('[answers.satisfied]\nbasically = ["满意"]\n', "answers.satisfied: '满意' is both satisfied and basically"),
    ('[answers.satisfied]\nnot = ["嗯，"]\n', "answers.satisfied.not: '嗯，' is only fillers or punctuation"),
    ("[answers]\ntimeout_s = 0\n", "answers.timeout_s: must be greater than 0"),
])
def test_bad_phrases_are_refused_naming_the_key(override, text, named):
    path = override(text, "GRIDLINE_SURVEY_FLOW")
    with pytest.raises(RulesError) as exc:
        SURVEY_FLOW.load()
    assert str(exc.value).startswith(f"GRIDLINE_SURVEY_FLOW={path}: ")
    assert named in str(exc.value) and "\n" not in str(exc.value)


def test_answers_follow_the_rules_scales():
    table = {"solved": {"yes": ["好了"], "no": ["没好"]}, "satisfied": {"ok": ["行"], "bad": ["不行"]}}
    scales = {"solved": ("yes", "no"), "satisfied": ("ok", "bad")}
    check_answers(table, scales)
    assert SurveyAnswers.of(table, scales).match("satisfied", "不行") == "bad"
    with pytest.raises(AnswersError, match="answers.satisfied: must name each answer"):
        check_answers(table, {**scales, "satisfied": ("ok", "bad", "meh")})
