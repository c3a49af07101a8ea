"""Spoken and typed addresses against the demo gazetteer: how often each kind of variant
reaches the right grid.

    .venv/bin/python bench/address.py                  # every place, 3 draws per kind
    .venv/bin/python bench/address.py --draws 1 --show-misses 5

Variants are generated from the demo district (core/reference/demo.py) the way residents say
addresses and recognisers write them: other measure words (幢 栋 号楼 座; 室 号 or
nothing), numbers said or written every way (九 玖 十二 一十二 三零一 三百零一 幺 两),
homophones drawn from ALL readings of a character (幢 → 撞 or 床, 长 → 常 or 张), Vosk's
spaces between words, words around the address (我家住在…门口), and the community name
left out. Each variant is matched by ``core.places.routing.Gazetteer``; the result is right (the
place's own grid), coarser (an ancestor of it: sure only of the community or estate),
wrong (any other grid) or nothing (triage). Targets: at least 98 % right, 0 % wrong.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import select  # noqa: E402

from core.places.address import is_han, number_words, readings  # noqa: E402
from core.places.models import GazetteerEntry, Grid, GridLevel, Household  # noqa: E402
from core.places.routing import Gazetteer  # noqa: E402
from core.platform.db import make_engine, session_scope  # noqa: E402
from core.platform.migrations import upgrade  # noqa: E402
from core.reference.demo import load_demo  # noqa: E402

TARGET_RIGHT = 0.98
NUMERALS = set("零〇一二两三四五六七八九十百千幺壹贰叁肆伍陆柒捌玖拾佰仟")
MEASURE_CHARS = set("幢栋座号楼单元室层户")
CAPITALS = "零壹贰叁肆伍陆柒捌玖"
PREFIXES = ("我家住在", "我住在", "就在", "我们", "在", "地址是", "那个")
SUFFIXES = ("门口", "旁边", "那里", "楼下", "附近", "的路灯坏了", "这边有人飞线充电")


@dataclass(frozen=True)
class Place:
    """An address to say: ``name`` (the estate, landmark, road …), optional building,
    unit and room, the community it lies in, and the grid it must reach."""

    kind: str  # building, household, landmark, estate, road, community
    name: str
    grid_id: int
    community: str | None = None
    building: int | None = None
    measure: str = "幢"
    unit: int | None = None
    room: int | None = None


# -- how numbers and words are said ---------------------------------------------------


def say_number(n: int, rng: random.Random, *, digit_by_digit: bool = False) -> str:
    """One of the ways a number is said or written."""
    forms = [str(n), number_words(n)]
    if n < 10:
        forms += [CAPITALS[n]]
        if n == 1:
            forms += ["幺"]
        if n == 2:
            forms += ["两"]
    elif n < 20:
        forms += ["一" + number_words(n)]  # 一十二
    if digit_by_digit or n >= 100:
        digits = "".join("零一二三四五六七八九"[int(d)] for d in str(n))
        forms += [digits, digits.replace("一", "幺")]
    return rng.choice(forms)


class Homophones:
    """Characters that share a reading with a character, any of its readings."""

    def __init__(self) -> None:
        self.by_reading: dict[str, list[str]] = defaultdict(list)
        self.common: list[str] = []
        for hi in range(0xB0, 0xF8):  # GB2312's level-1 and level-2 characters: what recognisers write
            for lo in range(0xA1, 0xFF):
                try:
                    ch = bytes((hi, lo)).decode("gb2312")
                except UnicodeDecodeError:
                    continue
                if ch in NUMERALS or ch in MEASURE_CHARS or not is_han(ch):
                    continue
                if hi < 0xD8:  # level 1: the 3,755 most common characters
                    self.common.append(ch)
                for r in readings(ch):
                    self.by_reading[r].append(ch)

    def swap(self, ch: str, rng: random.Random) -> str:
        choices = [r for r in sorted(readings(ch)) if any(c != ch for c in self.by_reading.get(r, ()))]
        if not choices:
            return ch
        reading = rng.choice(choices)  # every reading, not only the usual one
        return rng.choice([c for c in self.by_reading[reading] if c != ch])

    def accent(self, ch: str, rng: random.Random) -> str:
        """A character read with a southern accent's blur (zh/z, ch/c, sh/s, n/l, in/ing, en/eng)."""
        options = []
        for r in sorted(readings(ch)):
            for a, b in (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"), ("l", "n")):
                if r.startswith(a) and not (a in ("n", "l") and r.startswith("ng")):
                    options.append(b + r[len(a):])
                    break
            for a, b in (("ing", "in"), ("in", "ing"), ("eng", "en"), ("en", "eng")):
                if r.endswith(a):
                    options.append(r[: -len(a)] + b)
                    break
        options = [o for o in options if o not in readings(ch) and self.by_reading.get(o)]
        return rng.choice(self.by_reading[rng.choice(options)]) if options else ch

    def accented_name(self, name: str, rng: random.Random) -> str:
        chars = list(name)
        positions = [i for i, ch in enumerate(name) if is_han(ch) and self.accent(ch, random.Random(0)) != ch]
        if positions:
            i = rng.choice(positions)
            chars[i] = self.accent(chars[i], rng)
        return "".join(chars)

    def in_name(self, name: str, rng: random.Random, count: int = 1) -> str:
        positions = [i for i, ch in enumerate(name) if is_han(ch) and ch not in NUMERALS]
        chars = list(name)
        for i in rng.sample(positions, min(count, len(positions))):
            chars[i] = self.swap(chars[i], rng)
        return "".join(chars)


def vosk_spaces(text: str, rng: random.Random) -> str:
    """Words of one or two characters separated by spaces, as Vosk's Chinese models write."""
    out, i = [], 0
    while i < len(text):
        step = rng.choice((1, 2, 2))
        out.append(text[i:i + step])
        i += step
    return " ".join(out)


# -- building an address ----------------------------------------------------------------


def spell(place: Place, rng: random.Random, *, measure: str | None = None, numerals: bool = False,
          community: bool = True, name: str | None = None, room_word: str | None = None) -> str:
    """The address of ``place`` with the given choices; numbers written as digits unless
    ``numerals`` (then said in one of their spoken forms)."""
    text = (place.community or "") if community else ""
    text += name if name is not None else place.name
    if place.building is not None:
        text += say_number(place.building, rng) if numerals else str(place.building)
        text += measure or place.measure
    if place.unit is not None:
        text += (say_number(place.unit, rng) if numerals else str(place.unit)) + "单元"
    if place.room is not None:
        text += say_number(place.room, rng, digit_by_digit=True) if numerals else str(place.room)
        text += "室" if room_word is None else room_word
    return text


# What people report without saying where: must route nowhere (an operator asks).
NO_ADDRESS = (
    "路灯坏了晚上一片漆黑", "下水道堵了污水漫出来", "楼道里有人飞线充电很危险", "邻居装修噪音太大",
    "垃圾好几天没人清运", "井盖松动了", "我家三楼的水管漏了", "二单元门口堆了很多杂物", "一栋楼都停电了",
    "低保的事情想问一下", "小区门口的树倒了", "十二点以后还在唱歌", "楼上漏水到我家", "电梯坏了老人下不了楼",
    "我八十多岁了行动不便", "请帮忙处理一下谢谢", "两个人在吵架", "门口的车堵住了消防通道",
    # places that are not in the district
    "五四路三号那边", "鼓楼区医院门口", "火车站广场", "东街口百货", "三坊七巷附近", "长乐机场高速",
)


def drop_one(name: str, rng: random.Random, registered: set[str]) -> str:
    """The name with one character left out, unless that leaves another registered name
    (翠竹公园 → 翠竹园 is a different place, not a mistake)."""
    options = [name[:i] + name[i + 1:] for i in range(len(name))]
    options = [o for o in options if not any(r in o for r in registered)] or [name]
    return rng.choice(options)


def other_measure(place: Place, rng: random.Random) -> str:
    return rng.choice([m for m in ("幢", "栋", "号楼", "座") if m != place.measure])


def measure_homophone(place: Place, homophones: Homophones, rng: random.Random) -> str:
    return homophones.swap(place.measure, rng) if len(place.measure) == 1 else place.measure


def variants(homophones: Homophones, registered: set[str]) -> dict[str, tuple[Callable[[Place], bool], Callable]]:
    """kind of variant → (which places it applies to, how to say the place)."""
    numbered = lambda p: p.building is not None  # noqa: E731
    named = lambda p: len(p.name) >= 3  # noqa: E731  shorter names match only as written
    every = lambda p: True  # noqa: E731
    return {
        "as registered": (every, lambda p, r: spell(p, r)),
        "measure word (栋 号楼 座; 号 or no 室)": (
            numbered, lambda p, r: spell(p, r, measure=other_measure(p, r), room_word=r.choice(("号", "", "室")))),
        "numerals said (九 玖 十二 一十二 三零一 幺)": (numbered, lambda p, r: spell(p, r, numerals=True)),
        "homophone in the name (all readings)": (named, lambda p, r: spell(p, r, name=homophones.in_name(p.name, r))),
        "two homophones in the name": (
            lambda p: len(p.name) >= 4, lambda p, r: spell(p, r, name=homophones.in_name(p.name, r, 2))),
        "accent (zh/z ch/c sh/s n/l in/ing) in the name": (
            named, lambda p, r: spell(p, r, name=homophones.accented_name(p.name, r))),
        "homophone of the measure word (撞 床 洞)": (
            numbered, lambda p, r: spell(p, r, numerals=True, measure=measure_homophone(p, homophones, r))),
        "Vosk spaces": (every, lambda p, r: vosk_spaces(spell(p, r, numerals=True), r)),
        "words around it (我家住在…门口)": (
            every, lambda p, r: r.choice(PREFIXES) + spell(p, r) + r.choice(SUFFIXES)),
        "community name left out": (
            lambda p: p.community is not None, lambda p, r: spell(p, r, community=False)),
        "building not registered (→ its estate)": (
            lambda p: p.kind == "building" and p.community is not None,
            lambda p, r: spell(Place(p.kind, p.name, p.grid_id, p.community, 40 + r.randrange(50), p.measure), r,
                               numerals=r.random() < 0.5)),
        "one character of the name dropped (extra)": (
            lambda p: len(p.name) >= 4, lambda p, r: spell(p, r, name=drop_one(p.name, r, registered))),
        "no address in it (→ nothing)": (
            every,
            lambda p, r: vosk_spaces(r.choice(PREFIXES) + r.choice(NO_ADDRESS) + r.choice(SUFFIXES), r)),
        "random characters (→ nothing)": (
            every, lambda p, r: "".join(r.choice(homophones.common) for _ in range(r.randint(4, 16)))),
        "all at once (recogniser)": (
            numbered, lambda p, r: vosk_spaces(
                r.choice(PREFIXES)
                + spell(p, r, numerals=True, community=r.random() < 0.5, name=homophones.in_name(p.name, r),
                        measure=measure_homophone(p, homophones, r), room_word=r.choice(("号", "", "室")))
                + r.choice(SUFFIXES), r)),
    }


# -- the demo's places ------------------------------------------------------------------


def demo_places(session) -> list[Place]:
    grids = {g.id: g for g in session.exec(select(Grid)).all()}

    def community_of(grid_id: int) -> str | None:
        g = grids.get(grid_id)
        while g is not None and GridLevel(g.level) != GridLevel.community:
            g = grids.get(g.parent_id)
        return g.name if g is not None else None

    import re

    places: list[Place] = []
    for e in session.exec(select(GazetteerEntry)).all():
        m = re.fullmatch(r"(.+?)(\d+)(幢|栋|号楼|座)", e.name)
        if m:
            places.append(Place("building", m.group(1), e.grid_id, community_of(e.grid_id), int(m.group(2)),
                                m.group(3)))
        elif e.kind in ("landmark", "street") or (e.kind == "building" and not m):
            kind = {"landmark": "landmark", "street": "road", "building": "estate"}[e.kind]
            places.append(Place(kind, e.name, e.grid_id))
        elif e.kind == "community" and e.name.endswith("社区"):
            places.append(Place("community", e.name, e.grid_id))
    for h in session.exec(select(Household)).all():
        m = re.fullmatch(r"(.+?社区)(.+?)(\d+)(幢|栋|号楼|座)(\d+)单元(\d+)室", h.address)
        if m:
            places.append(Place("household", m.group(2), h.grid_id, m.group(1), int(m.group(3)), m.group(4),
                                int(m.group(5)), int(m.group(6))))
    return places


def expected_grid(kind: str, place: Place, parents: dict[int, int | None]) -> int | None:
    if kind.startswith(("no address", "random")):
        return None
    if kind.startswith("building not registered"):
        return parents[place.grid_id]  # the estate's area grid: sure of no building
    return place.grid_id


def verdict(found, expected: int | None, parents: dict[int, int | None]) -> str:
    if found is None:
        return "right" if expected is None else "nothing"
    if expected is None:
        return "wrong"
    if found.grid_id == expected:
        return "right"
    g = parents.get(expected)
    while g is not None:
        if g == found.grid_id:
            return "coarser"
        g = parents.get(g)
    return "wrong"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=3, help="random variants per place and kind")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--households", type=int, default=0, help="households to use (0 = all 500)")
    ap.add_argument("--show-misses", type=int, default=10, help="print this many misses per kind")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}")
        upgrade(engine)
        with session_scope(engine) as session:
            load_demo(session)
        with session_scope(engine) as session:
            started = time.perf_counter()
            gazetteer = Gazetteer.from_session(session)
            build_s = time.perf_counter() - started
            places = demo_places(session)
            registered = {e.name for e in session.exec(select(GazetteerEntry)).all() if len(e.name) >= 3}
            parents = {g.id: g.parent_id for g in session.exec(select(Grid)).all()}
            names = {g.id: g.name for g in session.exec(select(Grid)).all()}
        engine.dispose()

    rng = random.Random(args.seed)
    if args.households:
        households = [p for p in places if p.kind == "household"]
        keep = set(map(id, rng.sample(households, min(args.households, len(households)))))
        places = [p for p in places if p.kind != "household" or id(p) in keep]
    homophones = Homophones()
    counts: dict[str, dict[str, int]] = {}
    misses: dict[str, list[str]] = defaultdict(list)
    timings: list[float] = []
    for kind, (applies, say) in variants(homophones, registered).items():
        tally = dict.fromkeys(("right", "coarser", "wrong", "nothing"), 0)
        for place in places:
            if not applies(place):
                continue
            for _ in range(args.draws):
                text = say(place, rng)
                started = time.perf_counter()
                found = gazetteer.match(text)
                timings.append(time.perf_counter() - started)
                expected = expected_grid(kind, place, parents)
                v = verdict(found, expected, parents)
                tally[v] += 1
                if v != "right" and len(misses[kind]) < args.show_misses:
                    got = f"{names.get(found.grid_id)} ({found.reason})" if found else "nothing"
                    misses[kind].append(f"  {v:8} {text!r} [{place.kind}] → {got}; expected {names.get(expected)}")
        counts[kind] = tally

    print(f"demo gazetteer: {len(gazetteer)} entries, {len(places)} places to say; index built in "
          f"{build_s * 1000:.0f} ms; match p50 {statistics.median(timings) * 1000:.2f} ms, "
          f"p99 {sorted(timings)[int(len(timings) * 0.99)] * 1000:.2f} ms")
    print()
    columns = ("right", "coarser", "wrong", "nothing")

    def row(label: str, tally: dict[str, int]) -> str:
        n = sum(tally.values())
        shares = " | ".join(f"{100 * tally[k] / max(1, n):6.1f} %" for k in columns)
        return f"| {label:44} | {n:5} | {shares} |"

    print(f"| {'variant':44} | {'n':>5} | " + " | ".join(f"{k:>8}" for k in columns) + " |")
    print(f"|{'-' * 46}|{'-' * 7}|" + "|".join("-" * 10 for _ in columns) + "|")
    total = dict.fromkeys(columns, 0)
    for kind, tally in counts.items():
        for k in columns:
            total[k] += tally[k]
        print(row(kind, tally))
    print(row("all", total))
    print()
    for kind, lines in misses.items():
        if lines:
            print(f"misses, {kind}:")
            print("\n".join(lines))
    right_ok = all(t["right"] / max(1, sum(t.values())) >= TARGET_RIGHT
                   for kind, t in counts.items() if "(extra)" not in kind)
    wrong_ok = total["wrong"] == 0
    print()
    print(f"target ≥ {TARGET_RIGHT:.0%} right in every kind but the extras: {'met' if right_ok else 'NOT met'}; "
          f"0 % wrong: {'met' if wrong_ok else 'NOT met'} ({total['wrong']} wrong)")
    return 0 if right_ok and wrong_ok else 1


if __name__ == "__main__":
    sys.exit(main())
