"""Chinese transcript clean-up: no spaces between Chinese words, numbers as digits.

Vosk's Chinese models emit words separated by spaces ("三 号 楼 二 单元") and numbers
as characters. ``normalize_text`` turns that into "3号楼2单元"; ``normalize_words``
does the same for timed words, merging the words a number spans so timings and
confidences survive. Only the standard library is imported at module level (cn2an is
loaded on first use), so ``core`` can use this for typed addresses as well.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Word", "convert_numerals", "normalize_text", "normalize_words", "strip_cjk_spaces"]


@dataclass(frozen=True)
class Word:
    """A recognised word with its time span (seconds from stream start) and confidence."""

    text: str
    start: float
    end: float
    conf: float

    def to_dict(self) -> dict:
        return {"word": self.text, "start": self.start, "end": self.end, "conf": self.conf}


_CJK = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # ideographs
    "\u3000-\u303f\uff00-\uffef"  # CJK punctuation, full-width forms
)
_SPACE_NEAR_CJK = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")


def strip_cjk_spaces(text: str) -> str:
    """Drop whitespace next to a Chinese character; keep it between Latin words."""
    return _SPACE_NEAR_CJK.sub("", text.strip())


_DIGITS = {
    "零": "0",
    "〇": "0",
    "○": "0",
    "幺": "1",
    "一": "1",
    "二": "2",
    "两": "2",
    "三": "3",
    "四": "4",
    "五": "5",
    "六": "6",
    "七": "7",
    "八": "8",
    "九": "9",
}
_DIGIT_CHARS = "".join(_DIGITS)
_UNIT_CHARS = "十百千万亿"
# Words after a number that make it an address, a count of rooms or a case number.
_CONTEXT_AFTER = "号楼|号院|号线|单元|室|栋|幢|座|号|楼|层|户|弄|巷|路|街|组|队|期|区|排|门|床|车厢"
_RUN = re.compile(rf"[{_DIGIT_CHARS}{_UNIT_CHARS}点]+")
_CONTEXT_RE = re.compile(rf"(?:{_CONTEXT_AFTER})")
# Idioms and words that contain numerals but are not numbers.
_NOT_NUMBERS = (
    "一点",
    "一下",
    "一些",
    "一样",
    "一起",
    "一直",
    "一定",
    "一般",
    "一切",
    "一边",
    "一会",
    "统一",
    "万一",
    "千万",
    "十分",
    "一五一十",
    "三三两两",
    "一一",
    "百分之",
    "两边",
)
MIN_DIGIT_STRING = 3  # "一三八" is a number; "一" or "二三" alone usually is not


def _digit_string(run: str) -> str:
    return "".join(_DIGITS[c] for c in run)


def _cn2an(run: str) -> str | None:
    import cn2an  # lazy: 0.15 s to import, wanted only when a number with units appears

    try:
        value = cn2an.cn2an(run.replace("两", "二").replace("幺", "一"), "strict")
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


def _convert_run(run: str, followed_by_context: bool) -> str | None:
    """Digits for one run of numeral characters, or None to leave it as it is."""
    if "点" in run:
        return None  # times and decimals ("三点半", "一点") are out of scope
    pure = all(c in _DIGITS for c in run)
    if pure:
        if len(run) >= MIN_DIGIT_STRING or followed_by_context:
            return _digit_string(run)
        return None
    # With units (二十三, 一千零五): accept only a well-formed number that starts with a
    # digit or 十, so words such as 千万 / 万一 stay words.
    if run[0] not in _DIGITS and run[0] != "十":
        return None
    if run[0] == "十" and not followed_by_context and len(run) == 1:
        return None
    return _cn2an(run)


def _find_numbers(text: str) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    protected = [False] * len(text)
    for idiom in _NOT_NUMBERS:
        for m in re.finditer(re.escape(idiom), text):
            for i in range(m.start(), m.end()):
                protected[i] = True
    for m in _RUN.finditer(text):
        # split the run around protected characters
        i = m.start()
        while i < m.end():
            if protected[i]:
                i += 1
                continue
            j = i
            while j < m.end() and not protected[j]:
                j += 1
            run = text[i:j]
            context = bool(_CONTEXT_RE.match(text, j))
            new = _convert_run(run, context)
            if new is not None:
                spans.append((i, j, new))
            i = j
    return spans


def _apply(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    out, last = [], 0
    for a, b, new in spans:
        out.append(text[last:a])
        out.append(new)
        last = b
    out.append(text[last:])
    return "".join(out)


def convert_numerals(text: str) -> str:
    """Spoken numbers to digits where they are numbers.

    >>> convert_numerals("一三八零零一三八零零零")
    '13800138000'
    >>> convert_numerals("三号楼二单元五零二室")
    '3号楼2单元502室'
    >>> convert_numerals("一个人十分满意")
    '一个人十分满意'
    """
    return _apply(text, _find_numbers(text))


def normalize_text(text: str) -> str:
    """Vosk output to display text: no spaces around Chinese, numbers as digits."""
    return convert_numerals(strip_cjk_spaces(text))


def _join(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join words as ``strip_cjk_spaces`` would; return the text and each word's span."""
    parts, spans, pos = [], [], 0
    for w in words:
        if parts and not (_is_cjk_edge(parts[-1][-1:]) or _is_cjk_edge(w[:1])):
            parts.append(" ")
            pos += 1
        spans.append((pos, pos + len(w)))
        parts.append(w)
        pos += len(w)
    return "".join(parts), spans


def _is_cjk_edge(ch: str) -> bool:
    return bool(ch) and bool(re.match(rf"[{_CJK}]", ch))


def normalize_words(words: Sequence[Word]) -> tuple[str, list[Word]]:
    """Normalise timed words; returns the text and the words after normalisation.

    Words covered by one number ("一", "三", "八" -> "138") become one word spanning
    their time range with the lowest of their confidences (a number is only as sure as
    its least sure digit).
    """
    words = [w for w in words if w.text.strip()]
    text, spans = _join([w.text.strip() for w in words])
    numbers = _find_numbers(text)
    if not numbers:
        return text, list(words)
    out: list[Word] = []
    i = k = 0
    while i < len(words):
        while k < len(numbers) and numbers[k][1] <= spans[i][0]:
            k += 1  # defensive: a number that ended before this word
        if k == len(numbers) or numbers[k][0] >= spans[i][1]:
            out.append(words[i])
            i += 1
            continue
        # words[i:j] are the words the number covers, plus any number overlapping them
        j, end = i, numbers[k][1]
        while j < len(words) and spans[j][0] < end:
            j += 1
            while k + 1 < len(numbers) and numbers[k + 1][0] < spans[j - 1][1]:
                k += 1
                end = max(end, numbers[k][1])
        g_from, g_to = spans[i][0], spans[j - 1][1]
        inner = [(a - g_from, b - g_from, n) for a, b, n in numbers if g_from <= a and b <= g_to]
        group = words[i:j]
        out.append(
            Word(
                _apply(text[g_from:g_to], inner),
                group[0].start,
                group[-1].end,
                min(w.conf for w in group),
            )
        )
        k += 1
        i = j
    return _apply(text, numbers), out
