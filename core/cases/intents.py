"""What a caller's words mean when they decide a call's path: a petition (the default), or
one of the intents of ``core/data/intents.toml`` (a status query, a person, "say it again",
"slower", confidentiality, and the short answers yes/no at a confirmation).

Words come from a recogniser: no punctuation, homophones (茶询 for 查询), a character
dropped or added, fillers (嗯, 那个). So phrases are matched by sound, the way the address
matcher does (``core.places.address``: every toneless reading of a character, folded by
the accent classes of rules.toml): two characters match when they share a reading, and a
phrase of ``fuzzy_from_syllables`` or more may be heard with ``fuzzy_errors`` syllables
wrong, missing or extra. A phrase decides the path only when little else was said
(``max_other_chars``): a long petition that mentions 进度 stays a petition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.places.address import canonical, clean, folded_readings
from core.platform.rules import DATA_DIR, RuleFile, RulesError

PETITION = "petition"
CONFIDENTIAL = "confidential"  # a modifier: it rides on whatever else was said
TURN_KINDS = ("open", "answer")


def _check(data: dict[str, Any]) -> None:
    intents = data["intents"]
    for kind in TURN_KINDS:
        for name in data["turns"][kind]:
            if name not in intents:
                raise RulesError(f"turns.{kind}: {name!r} is not an intent of [intents]")
    for name, phrases in intents.items():
        if not isinstance(phrases, list) or not all(isinstance(p, str) and clean(p) for p in phrases):
            raise RulesError(f"intents.{name}: a list of phrases, none empty")
    m = data["matching"]
    for key in ("max_other_chars", "fuzzy_from_syllables", "number_min_digits"):
        if m[key] <= 0:
            raise RulesError(f"matching.{key}: must be greater than 0, not {m[key]!r}")
    if m["fuzzy_errors"] < 0:
        raise RulesError(f"matching.fuzzy_errors: must be 0 or more, not {m['fuzzy_errors']!r}")


INTENTS = RuleFile("core/data/intents.toml", DATA_DIR / "intents.toml", "GRIDLINE_INTENTS", _check,
                   open_tables=frozenset({"intents"}))


@dataclass(frozen=True)
class Heard:
    """What the words mean: ``intent`` is "petition" or an intent's name."""

    intent: str
    confidential: bool = False
    number: str | None = None  # the digits of a case number said with it
    phrases: tuple[str, ...] = ()  # the phrases heard, for the record

    @property
    def is_petition(self) -> bool:
        return self.intent == PETITION


@dataclass(frozen=True)
class _Found:
    intent: str
    phrase: str
    start: int
    end: int
    errors: int
    rank: int  # the intent's place in the turn's list


def _sounds(text: str) -> list[frozenset[str]]:
    return [folded_readings(ch) for ch in text]


def _align(phrase: list[frozenset[str]], text: list[frozenset[str]], max_errors: int) -> tuple[int, int, int] | None:
    """The best place of ``phrase`` in ``text`` (start, end, errors) with at most
    ``max_errors`` syllables substituted, missing or extra; ``None`` if there is none.
    Approximate substring matching: the phrase may start anywhere in the text."""
    m, n = len(phrase), len(text)
    if m == 0:
        return None
    # cost[i][j]: errors aligning phrase[:i] with a text substring ending at j; start[i][j] its start
    prev = [0] * (n + 1)
    prev_start = list(range(n + 1))
    for i in range(1, m + 1):
        cur = [i] + [0] * n
        cur_start = [0] * (n + 1)
        for j in range(1, n + 1):
            same = 0 if phrase[i - 1] & text[j - 1] else 1
            options = ((prev[j - 1] + same, prev_start[j - 1]), (prev[j] + 1, prev_start[j]),
                       (cur[j - 1] + 1, cur_start[j - 1]))
            cur[j], cur_start[j] = min(options, key=lambda o: (o[0], -o[1]))
        prev, prev_start = cur, cur_start
    best = None
    for j in range(1, n + 1):
        if prev[j] <= max_errors and (best is None or prev[j] < best[2] or
                                      (prev[j] == best[2] and j - prev_start[j] > best[1] - best[0])):
            best = (prev_start[j], j, prev[j])
    if best is None or best[1] <= best[0]:
        return None
    return best


class IntentMatcher:
    """Built once from the rules data (``IntentMatcher.load()``); ``hear(words, kind)``."""

    def __init__(self, data: dict[str, Any]):
        m = data["matching"]
        self.max_other = int(m["max_other_chars"])
        self.fuzzy_from = int(m["fuzzy_from_syllables"])
        self.fuzzy_errors = int(m["fuzzy_errors"])
        self.number_min = int(m["number_min_digits"])
        self.fillers = sorted({clean(f) for f in m["fillers"] if clean(f)}, key=len, reverse=True)
        turns = data["turns"]
        self.turns = {"open": list(turns["open"]), "answer": list(turns["answer"])}
        self.phrases = {name: [clean(p) for p in phrases] for name, phrases in data["intents"].items()}
        self._sounds = {name: [(p, _sounds(p)) for p in phrases] for name, phrases in self.phrases.items()}

    @classmethod
    def load(cls) -> IntentMatcher:
        return cls(INTENTS.load())

    def phrase_list(self, kind: str) -> list[str]:
        """Every phrase a turn of ``kind`` listens for: the recogniser's grammar for short answers."""
        return list(dict.fromkeys(p for name in self.turns[kind] for p in self.phrases[name]))

    def _found(self, text: str, kind: str) -> list[_Found]:
        sounds = _sounds(text)
        found = []
        for rank, name in enumerate(self.turns[kind]):
            for phrase, phrase_sounds in self._sounds[name]:
                allowed = self.fuzzy_errors if len(phrase) >= self.fuzzy_from else 0
                hit = _align(phrase_sounds, sounds, allowed)
                if hit is not None:
                    found.append(_Found(name, phrase, hit[0], hit[1], hit[2], rank))
        # The longest, surest match wins where two overlap (不是 over 是, 转人工 over 人工).
        found.sort(key=lambda f: (f.errors, -(f.end - f.start), f.rank))
        taken: list[_Found] = []
        for f in found:
            if all(f.end <= t.start or f.start >= t.end for t in taken):
                taken.append(f)
        return sorted(taken, key=lambda f: f.start)

    def _rest(self, text: str, taken: list[_Found]) -> str:
        keep = [True] * len(text)
        for f in taken:
            for i in range(f.start, f.end):
                keep[i] = False
        rest = "".join(ch for ch, k in zip(text, keep, strict=True) if k)
        for filler in self.fillers:
            rest = rest.replace(filler, "")
        return rest

    def number(self, text: str) -> str | None:
        """The longest run of digits said (幺, 两, digit groups: ``canonical``) long enough
        to be a case number."""
        runs = re.findall(r"\d+", canonical(text))
        best = max(runs, key=len, default="")
        return best if len(best) >= self.number_min else None

    def hear(self, words: str | None, kind: str = "open") -> Heard:
        """What ``words`` mean in a turn of ``kind`` ("open": the call's first words;
        "answer": a reply to a confirmation). Nothing recognised: a petition (open) or no
        answer (answer: intent "")."""
        text = clean(words)
        default = PETITION if kind == "open" else ""
        if not text:
            return Heard(default)
        taken = self._found(text, kind)
        confidential = any(f.intent == CONFIDENTIAL for f in taken)
        number = self.number(text) if kind == "open" else None
        rest = self._rest(text, taken)
        if number:
            rest = re.sub(r"\d+", "", canonical(rest))
            rest = "".join(ch for ch in rest if not ch.isdigit())
        phrases = tuple(f.phrase for f in taken)
        short = len(rest) <= self.max_other
        deciding = [f for f in taken if f.intent != CONFIDENTIAL]
        if short and deciding:
            best = min(deciding, key=lambda f: (f.rank, f.errors, f.start))
            return Heard(best.intent, confidential, number if best.intent == "status" else None, phrases)
        if short and number and kind == "open":
            return Heard("status", confidential, number, phrases)  # a case number said on its own
        if short and confidential:
            return Heard(CONFIDENTIAL, True, None, phrases)
        return Heard(default, confidential, None, phrases)
