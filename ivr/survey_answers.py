"""Spoken answers of the follow-up call (回访): what the resident says to "问题解决了吗？" and
"您对办理结果满意吗？", as rules data (``ivr/survey_flow.toml [answers]``), and the matching
of what the recogniser heard to an answer on the rules' scale.

Each answer turn is recognised in Vosk grammar mode with the question's phrase list
(``SurveyAnswers.phrases``), so the recogniser can only say those phrases (or nothing);
the match still tolerates what it does say: fillers, repeats (解决了解决了), a phrase said
inside a longer sentence, split or half-heard words, and characters heard as another of
the same sound (瞒意 → 满意, by their readings, as the address matcher compares names).
When two answers are heard, the longer phrase wins (不满意 over 满意, 没有解决 over
解决); at equal length the earlier one wins (a negation comes first: 没解决了); two
different answers apart from each other (满意…不满意) are no answer: the question's keys
are offered instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pypinyin import Style, pinyin

from core.places.address import clean, is_han, readings

# Said around an answer; dropped before matching ("嗯，满意吧").
FILLERS = re.compile(r"嗯|啊|呃|哦|噢|唉|哎|呀|吧|呢|嘛|那个|这个|就是")
# A phrase of this many characters or fewer must be heard whole; a longer one may miss one.
EXACT_UP_TO = 3
NEGATIONS = frozenset("不没未别")
NEVER = 99  # the cost of an extra negation: more than any phrase may miss


class AnswersError(ValueError):
    """``[answers]`` does not fit the survey's scales."""


@dataclass(frozen=True)
class Heard:
    """One phrase found in what was heard: where, and how well."""

    answer: str
    phrase: str
    start: int
    end: int
    misses: int  # characters heard wrong, not heard or extra (one allowed on long phrases)
    size: int  # characters of the phrase
    verbatim: bool  # the phrase is there character for character, not only by sound

    @property
    def score(self) -> int:
        return self.size - 2 * self.misses

    def overlaps(self, other: Heard) -> bool:
        return self.start < other.end and other.start < self.end


@lru_cache(maxsize=4096)
def _usual_reading(ch: str) -> str:
    return pinyin(ch, style=Style.NORMAL, heteronym=False)[0][0]


def _same_sound(a: str, b: str) -> bool:
    """The same character, or one usually read as a reading of the other (瞒 man, 满 man).
    Rare readings alone do not count (还 and 不 may both be read fu)."""
    if a == b:
        return True
    if not (is_han(a) and is_han(b)):
        return False
    return _usual_reading(a) in readings(b) or _usual_reading(b) in readings(a)


def _find(phrase: str, text: str) -> tuple[int, int, int] | None:
    """The best place of ``phrase`` in ``text``: (start, end, misses), or ``None``. A miss
    is a character heard wrong, not heard, or heard extra; short phrases must be there
    whole (by sound), longer ones may have one miss, but never an extra negation
    (非常满意 is not in 非常不满意). Edit distance with a free start and end in ``text``."""
    n, m = len(phrase), len(text)
    allowed = 0 if n <= EXACT_UP_TO else 1
    # cost[i][j]: phrase[:i] aligned to text ending at j; begin[i][j]: where in text it began
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    begin = [list(range(m + 1)) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0], begin[i][0] = i, 0
        for j in range(1, m + 1):
            options = [
                (cost[i - 1][j - 1] + (0 if _same_sound(phrase[i - 1], text[j - 1]) else 1), begin[i - 1][j - 1]),
                (cost[i - 1][j] + 1, begin[i - 1][j]),  # a character of the phrase not heard
                (cost[i][j - 1] + (NEVER if text[j - 1] in NEGATIONS else 1), begin[i][j - 1]),  # one heard extra
            ]
            cost[i][j], begin[i][j] = min(options, key=lambda o: (o[0], -o[1]))
    best = None
    for j in range(1, m + 1):
        if cost[n][j] <= allowed and (best is None or cost[n][j] < best[2]):
            best = (begin[n][j], j, cost[n][j])
    return best


def normalise(text: str) -> str:
    """What the recogniser said, as the phrases are compared: no spaces, punctuation or fillers."""
    return FILLERS.sub("", clean(text))


@dataclass(frozen=True)
class SurveyAnswers:
    """The phrase lists of each question's answers (``[answers.<question>]``)."""

    by_question: Mapping[str, Mapping[str, tuple[str, ...]]]

    @classmethod
    def of(cls, table: Mapping[str, Any], scales: Mapping[str, Sequence[str]]) -> SurveyAnswers:
        """``[answers]`` of the survey flow, checked against the rules' scales."""
        check_answers(table, scales)
        return cls({q: {a: tuple(table[q][a]) for a in scales[q]} for q in scales})

    def phrases(self, question: str) -> list[str]:
        """The grammar of the question's answer turn: every phrase of every answer, once."""
        return list(dict.fromkeys(p for phrases in self.by_question[question].values() for p in phrases))

    def heard(self, question: str, text: str) -> list[Heard]:
        """Every phrase of the question found in ``text``, best first: the longest with the
        fewest misses, then one there character for character, then the earliest."""
        said = normalise(text)
        found: list[Heard] = []
        if not said:
            return found
        for answer, phrases in self.by_question[question].items():
            for phrase in phrases:
                key = normalise(phrase)
                if not key:
                    continue
                place = _find(key, said)
                if place is not None:
                    found.append(Heard(answer, phrase, *place, size=len(key), verbatim=key in said))
        found.sort(key=lambda h: (-h.score, h.misses, not h.verbatim, h.start))
        return found

    def match(self, question: str, text: str) -> str | None:
        """The answer on the rules' scale ``text`` gives to ``question``, or ``None``
        (nothing of the list heard, or two different answers)."""
        found = self.heard(question, text)
        if not found:
            return None
        kept: list[Heard] = []
        for h in found:  # best first: a phrase inside (or across) a better one is not heard
            if not any(h.overlaps(k) for k in kept):
                kept.append(h)
        answers = {h.answer for h in kept}
        return kept[0].answer if len(answers) == 1 else None


def check_answers(table: Mapping[str, Any], scales: Mapping[str, Sequence[str]]) -> None:
    """Each question's answers are exactly its scale's, each a non-empty list of phrases,
    and no phrase answers two ways."""
    for question, scale in scales.items():
        answers = table.get(question)
        if not isinstance(answers, Mapping):
            raise AnswersError(f"answers.{question}: a table of the answers {list(scale)}")
        if sorted(answers) != sorted(scale):
            raise AnswersError(f"answers.{question}: must name each answer of the scale {list(scale)}, "
                               f"not {sorted(answers)}")
        seen: dict[str, str] = {}
        for answer in scale:
            phrases = answers[answer]
            if not _phrase_list(phrases):
                raise AnswersError(f"answers.{question}.{answer}: a list of phrases, not {phrases!r}")
            for phrase in phrases:
                key = normalise(phrase)
                if not key:
                    raise AnswersError(f"answers.{question}.{answer}: {phrase!r} is only fillers or punctuation")
                if key in seen and seen[key] != answer:
                    raise AnswersError(f"answers.{question}: {phrase!r} is both {seen[key]} and {answer}")
                seen[key] = answer


def _phrase_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(p, str) and p.strip() for p in value)
