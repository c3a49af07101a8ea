"""Addresses as residents say them and recognisers write them.

- ``canonical``: one spelling for matching. Full-width to ASCII, no spaces or punctuation
  (Vosk writes "洋 坊 新村 九 幢"), every number as digits, however it was said or written
  (9, 九, 玖, 十二 and 一十二, 三零一 and 三百零一, 幺 for 1, 两 for 2).
- ``parse_parts``: the numbered parts of an address, 9幢 2单元 301室, with the measure
  words residents use for the same thing (幢 = 栋 = 号楼 = 座; 室 = 号 = a bare number
  after the unit) and the homophones a recogniser writes for them (九撞, 九洞, 二担元).
- ``readings``/``local_readings``: every pinyin reading of a character, and the one a
  local uses for the characters of a name (``core/data/readings.toml``), so a match
  through the local reading wins a tie.
- Words for a recogniser's phrase list: measure words, numerals, names spelled as spoken.

Gazetteer names and what people say go through the same functions, so whatever they
change they change on both sides. ``core.places.routing.Gazetteer`` does the matching.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from pypinyin import Style, lazy_pinyin, pinyin

from core.platform.rules import DATA_DIR, load_rules

# ---------------------------------------------------------------------------------------
# Numbers

_DIGIT_VALUE = {
    "零": 0, "〇": 0, "○": 0,
    "一": 1, "壹": 1, "幺": 1,  # 幺: how 1 is said on the phone
    "二": 2, "两": 2, "贰": 2,
    "三": 3, "叁": 3,
    "四": 4, "肆": 4,
    "五": 5, "伍": 5,
    "六": 6, "陆": 6,
    "七": 7, "柒": 7,
    "八": 8, "捌": 8,
    "九": 9, "玖": 9,
}
_UNIT_VALUE = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_NUMERAL_RUN = re.compile("[0-9" + "".join(_DIGIT_VALUE) + "".join(_UNIT_VALUE) + "]+")


def parse_number(run: str) -> int | None:
    """The value of one written or spoken number, or ``None`` if it is not one.

    Digits are read positionally when the run has 十/百/千 (十二, 一十二, 三百零一, 两百),
    else digit by digit as phone numbers and room numbers are said (三零一 → 301)."""
    if not run:
        return None
    if run.isascii():
        return int(run) if run.isdigit() else None
    if any(c.isascii() for c in run) or any(c not in _DIGIT_VALUE and c not in _UNIT_VALUE for c in run):
        return None
    if not any(c in _UNIT_VALUE for c in run):
        return int("".join(str(_DIGIT_VALUE[c]) for c in run))
    total, digit, last_unit, zero = 0, None, None, False
    for c in run:
        if c in _DIGIT_VALUE:
            value = _DIGIT_VALUE[c]
            if value == 0:
                zero = True  # a place holder: 一百零一
                continue
            if digit is not None:
                return None  # 二三十 is not a number
            digit = value
            continue
        unit = _UNIT_VALUE[c]
        if last_unit is not None and unit >= last_unit:
            return None  # 十百
        if digit is None:
            if last_unit is not None:
                return None  # 一百十
            digit = 1  # 十二 is 一十二
        total += digit * unit
        last_unit, digit, zero = unit, None, False
    if digit is not None:
        # 一百一 is 110 in speech; 一百零一 is 101.
        total += digit * (last_unit // 10) if (last_unit and last_unit >= 100 and not zero) else digit
    return total


_WORD_DIGITS = "零一二三四五六七八九"


def number_words(n: int) -> str:
    """How a number is said: 9 → 九, 12 → 十二, 20 → 二十, 301 → 三百零一."""
    if n < 10:
        return _WORD_DIGITS[n]
    if n < 20:
        return "十" + (_WORD_DIGITS[n % 10] if n % 10 else "")
    if n >= 10000:
        return "".join(_WORD_DIGITS[int(d)] for d in str(n))
    out, pending_zero = [], False
    for unit, name in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // unit % 10
        if d:
            if pending_zero and out:
                out.append("零")
            out.append(_WORD_DIGITS[d] + name)
            pending_zero = False
        else:
            pending_zero = True
    return "".join(out)


# ---------------------------------------------------------------------------------------
# One spelling

_DROP = re.compile(r"[\s,，。、;；:：!！?？\"'“”‘’()（）【】\[\]<>《》·.~～…]")
# "一栋楼都停电了" counts buildings (the whole building), it does not name building 1.
_COUNT_AFTER = re.compile(r"[栋幢座]楼(?![下上前后里道顶梯门口边])")


def clean(text: str | None) -> str:
    """Full-width to ASCII, no spaces (Vosk puts them between words) and no punctuation."""
    return _DROP.sub("", unicodedata.normalize("NFKC", text or ""))


def canonical(text: str | None) -> str:
    """``clean`` with every number as ASCII digits: 洋坊新村九幢 → 洋坊新村9幢,
    三百零一 and 三零一 → 301. Numbers inside names change too (五一路 → 51路), on the
    gazetteer's side as on the caller's."""
    s = clean(text)

    def digits(m: re.Match) -> str:
        run = m.group(0)
        if run in ("一", "两") and _COUNT_AFTER.match(s, m.end()):
            return run
        value = parse_number(run)
        return run if value is None else str(value)

    return _NUMERAL_RUN.sub(digits, s)


# ---------------------------------------------------------------------------------------
# Readings


_ASCII_DIGIT_READINGS = {
    "0": ("ling",), "1": ("yi", "yao"), "2": ("er", "liang"), "3": ("san",), "4": ("si",),
    "5": ("wu",), "6": ("liu",), "7": ("qi",), "8": ("ba",), "9": ("jiu",),
}


def is_han(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"


@lru_cache(maxsize=50000)
def readings(ch: str) -> frozenset[str]:
    """Every toneless reading of a character (a digit reads as its numeral)."""
    if ch in _ASCII_DIGIT_READINGS:
        return frozenset(_ASCII_DIGIT_READINGS[ch])
    if not is_han(ch):
        return frozenset({ch.lower()})
    return frozenset(pinyin(ch, style=Style.NORMAL, heteronym=True, errors="default")[0])


# Accent-tolerant syllables: callers from the south (and recognisers) blur these pairs;
# rules.toml [address] accent_classes says which (each folds to its first spelling).
ACCENT_INITIALS = {"n/l": ("l", "n"), "f/h": ("h", "f"), "z/zh": ("zh", "z"), "c/ch": ("ch", "c"),
                   "s/sh": ("sh", "s")}
ACCENT_FINALS = {"an/ang": ("ang", "an"), "en/eng": ("eng", "en"), "in/ing": ("ing", "in")}


def accent_classes() -> tuple[str, ...]:
    """This process's rules.toml ``[address] accent_classes``. A gazetteer takes them when
    it is built (a rules change applies from the next index rebuild)."""
    return tuple(str(c).strip() for c in load_rules()["address"]["accent_classes"])


@lru_cache(maxsize=16)
def accent_rules(classes: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """(initials, finals) to fold for these classes."""
    unknown = [c for c in classes if c not in ACCENT_INITIALS and c not in ACCENT_FINALS]
    if unknown:
        raise ValueError(f"rules.toml [address] accent_classes: unknown {unknown}; "
                         f"known: {sorted({**ACCENT_INITIALS, **ACCENT_FINALS})}")
    initials = tuple(ACCENT_INITIALS[c] for c in classes if c in ACCENT_INITIALS)
    finals = tuple(ACCENT_FINALS[c] for c in classes if c in ACCENT_FINALS)
    return tuple(sorted(initials, key=lambda p: -len(p[0]))), finals


@lru_cache(maxsize=50000)
def fold(syllable: str, classes: tuple[str, ...] | None = None) -> str:
    """The syllable as the accent classes blur it (``None``: the rules' classes)."""
    initials, finals = accent_rules(accent_classes() if classes is None else classes)
    for a, b in initials:
        if syllable.startswith(a) and not (a == "n" and syllable.startswith("ng")):
            syllable = b + syllable[len(a):]
            break
    for a, b in finals:
        if syllable.endswith(a):
            return syllable[: -len(a)] + b
    return syllable


@lru_cache(maxsize=50000)
def folded_readings(ch: str, classes: tuple[str, ...] | None = None) -> frozenset[str]:
    return frozenset(fold(r, classes) for r in readings(ch))


@lru_cache(maxsize=1)
def _local_table() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    data = tomllib.loads((DATA_DIR / "readings.toml").read_text("utf-8"))
    chars = {k: str(v).strip() for k, v in data.get("chars", {}).items()}
    words = {}
    for word, spoken in data.get("words", {}).items():
        syllables = tuple(str(spoken).split())
        if len(syllables) != len(word):
            raise ValueError(f"readings.toml: {word!r} has {len(word)} characters but {len(syllables)} syllables")
        words[word] = syllables
    return chars, words


def local_readings(name: str) -> tuple[str, ...]:
    """The reading a local uses for each character of ``name``: the word table of
    readings.toml, else its character table, else pypinyin's reading in context."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            out.extend(lazy_pinyin("".join(run), style=Style.NORMAL, errors="default"))
            run.clear()

    for ch in name:
        if is_han(ch):
            run.append(ch)
            continue
        flush()
        out.append(_ASCII_DIGIT_READINGS[ch][0] if ch in _ASCII_DIGIT_READINGS else ch.lower())
    flush()
    chars, words = _local_table()
    for i, ch in enumerate(name):
        if ch in chars:
            out[i] = chars[ch]
    for word, syllables in words.items():
        start = name.find(word)
        while start != -1:
            out[start:start + len(word)] = syllables
            start = name.find(word, start + 1)
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Numbered parts: 9幢 2单元 301室

BUILDING, UNIT, FLOOR, ROOM, DOOR = "building", "unit", "floor", "room", "door"

# Written measure words, longest first.
_MEASURES: tuple[tuple[str, str], ...] = (
    ("号楼", BUILDING), ("单元", UNIT), ("幢", BUILDING), ("栋", BUILDING), ("座", BUILDING),
    ("层", FLOOR), ("楼", FLOOR), ("室", ROOM), ("户", ROOM), ("号", DOOR),
)
# What a recogniser may write for them: any characters with these readings. The first
# reading of each is the one residents use; 幢 read chuáng (the dictionary's reading) is
# still a building, a little less surely.
_SOUNDS: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("hao", "lou"), BUILDING, True),
    (("dan", "yuan"), UNIT, True),
    (("zhuang",), BUILDING, True),
    (("dong",), BUILDING, True),
    (("zuo",), BUILDING, True),
    (("chuang",), BUILDING, False),
)
MEASURE_SURE = 1.0
HOMOPHONE_LOCAL_SURE = 0.9
HOMOPHONE_OTHER_SURE = 0.88

MEASURE_WORDS = ("幢", "栋", "号楼", "座", "单元", "楼", "层", "室", "号")
NUMERAL_WORDS = ("零", "一", "幺", "二", "两", "三", "四", "五", "六", "七", "八", "九", "十", "百")
FILLER_WORDS = ("我家", "我家住在", "住在", "我住", "在", "的", "门口", "旁边", "附近", "对面", "楼下",
                "小区", "社区", "那边", "这里")


@dataclass(frozen=True)
class Part:
    """One numbered part of an address. ``start``/``end``: its span in the canonical text,
    measure word included; ``sure``: 1 for a written measure word, less for a homophone."""

    kind: str  # building, unit, floor, room, door
    number: int
    start: int
    end: int
    sure: float = MEASURE_SURE


_MEASURE_KIND = dict(_MEASURES)
_MEASURE_RE = re.compile("|".join(re.escape(w) for w, _ in _MEASURES))


def _measure_at(text: str, pos: int, homophones: bool,
                protected: tuple[tuple[int, int], ...] = ()) -> tuple[str, int, float] | None:
    m = _MEASURE_RE.match(text, pos)
    if m is not None:
        return _MEASURE_KIND[m.group(0)], len(m.group(0)), MEASURE_SURE
    if not homophones or pos >= len(text) or not is_han(text[pos]):
        return None
    if any(a <= pos < b for a, b in protected):
        return None  # 9东门小区: 东 starts a name here, it is not 栋
    for sounds, kind, local in _SOUNDS:
        window = text[pos:pos + len(sounds)]
        if len(window) == len(sounds) and all(
            is_han(ch) and s in readings(ch) for s, ch in zip(sounds, window, strict=True)
        ):
            return kind, len(sounds), HOMOPHONE_LOCAL_SURE if local else HOMOPHONE_OTHER_SURE
    return None


_NUMBER_GROUP = re.compile(r"[0-9]+(?:-[0-9]+){0,2}")


def parse_parts(text: str, *, homophones: bool = True, protected: tuple[tuple[int, int], ...] = ()) -> list[Part]:
    """The numbered parts in a canonical text, in order. Numbers inside ``protected``
    spans (names found in the text) are part of the name. ``homophones``: also read
    homophones of measure words (for what people say; gazetteer names are written)."""
    parts: list[Part] = []
    for m in _NUMBER_GROUP.finditer(text):
        s, e = m.span()
        if protected and any(s < b and e > a for a, b in protected):
            continue
        group = m.group(0)
        if "-" in group:  # 9-2-301: building, unit, room; 9-301: building, room
            pieces = list(re.finditer(r"[0-9]+", group))
            kinds = (BUILDING, UNIT, ROOM) if len(pieces) == 3 else (BUILDING, ROOM)
            for k, (kind, piece) in enumerate(zip(kinds, pieces, strict=True)):
                end = s + (pieces[k + 1].start() if k + 1 < len(pieces) else piece.end())
                parts.append(Part(kind, int(piece.group(0)), s + piece.start(), end))
            continue
        number = int(group)
        before = parts[-1] if parts and parts[-1].end == s else None
        measure = _measure_at(text, e, homophones, protected)
        if measure is not None:
            kind, length, sure = measure
            if kind == DOOR and before is not None and before.kind in (BUILDING, UNIT, FLOOR):
                kind = ROOM  # 9幢20号: the flat's number
            parts.append(Part(kind, number, s, e + length, sure))
        elif before is not None and before.kind in (BUILDING, UNIT, FLOOR):
            parts.append(Part(ROOM, number, s, e))  # 2单元301
    # 9号2单元: a number before the unit is the building's, however it was said.
    for i in range(len(parts) - 1):
        if parts[i].kind == DOOR and parts[i + 1].kind == UNIT and parts[i + 1].start == parts[i].end:
            parts[i] = Part(BUILDING, parts[i].number, parts[i].start, parts[i].end, parts[i].sure)
    return parts


def part_runs(parts: list[Part]) -> list[list[Part]]:
    """Parts that follow each other without a gap: one address each."""
    runs: list[list[Part]] = []
    for p in parts:
        if runs and runs[-1][-1].end == p.start:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


Comps = tuple[tuple[str, int], ...]


def comps(parts: list[Part] | tuple[Part, ...]) -> Comps:
    """What identifies a place: the kinds and numbers, floors left out (people add or drop them)."""
    return tuple((p.kind, p.number) for p in parts if p.kind != FLOOR)


@lru_cache(maxsize=262144)  # the registry's addresses, parsed once per process, not per index rebuild
def split_numbered(name: str) -> tuple[str, Comps, str] | None:
    """A registered name that ends in numbered parts (洋坊新村9幢, 罗布路3号,
    罗布社区洋坊新村9幢2单元301室) → (canonical base name, comps, canonical name);
    ``None`` for a plain name."""
    key = canonical(name)
    parts = parse_parts(key, homophones=False)
    if not parts or parts[-1].end != len(key):
        return None
    runs = part_runs(parts)
    if len(runs) != 1:
        return None
    run = runs[0]
    base = key[: run[0].start]
    found = comps(run)
    if len(base) < 2 or not found:
        return None
    return base, found, key


def spoken(name: str) -> str:
    """A name as it is said, for a recogniser's phrase list: digits as numerals."""
    return re.sub(r"[0-9]+", lambda m: number_words(int(m.group(0))), name)
