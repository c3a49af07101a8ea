"""Which grid a case belongs to: by a shared location, the caller's registered household,
or a spoken/typed address (DESIGN "Grids and routing"). Each step answers a
:class:`RouteResult` or ``None``; ``None`` from all of them means operator triage.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cn2an
import phonenumbers
import shapely
from pypinyin import Style, pinyin
from rapidfuzz import fuzz
from shapely.geometry import shape
from sqlmodel import select

from core.models import GazetteerEntry, Grid, GridLevel, Household, Resident


@dataclass(frozen=True)
class RouteResult:
    grid_id: int
    confidence: float  # 0..1
    reason: str  # for the operator: why this grid
    method: str  # "point", "household", "gazetteer"


# ---------------------------------------------------------------------------------------
# Point in polygon


class GridLocator:
    """Micro grids' polygons in an STRtree. Build once, share, rebuild when grids change."""

    def __init__(self, grids: Iterable[tuple[int, str, dict]]) -> None:
        """``grids``: ``(grid_id, code, GeoJSON geometry)``; grids without geometry are skipped."""
        items = []
        for grid_id, code, geojson in grids:
            if not geojson:
                continue
            geom = shape(geojson)
            if not geom.is_valid:  # hand-drawn boundaries self-intersect now and then
                geom = shapely.make_valid(geom)
            items.append((code, grid_id, geom))
        # Sorted by code, so "the lowest code among several hits" is "the lowest index".
        items.sort(key=lambda t: t[0])
        self.codes: list[str] = [c for c, _, _ in items]
        self.grid_ids: list[int] = [g for _, g, _ in items]
        self.geometries = [geom for _, _, geom in items]
        shapely.prepare(self.geometries)
        self.tree = shapely.STRtree(self.geometries)

    @classmethod
    def from_session(cls, session: Any, level: GridLevel = GridLevel.micro) -> GridLocator:
        rows = session.exec(select(Grid.id, Grid.code, Grid.geometry).where(Grid.level == level)).all()
        return cls(rows)

    def __len__(self) -> int:
        return len(self.codes)

    def locate_point(self, lat: float, lon: float) -> RouteResult | None:
        """The grid covering (lat, lon). A point on an edge shared by several grids goes to
        the lowest grid code among them, so the same point always routes the same way."""
        if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)) or not self.codes:
            return None
        hits = self.tree.query(shapely.Point(lon, lat), predicate="intersects")
        if len(hits) == 0:
            return None
        i = int(hits.min())
        if len(hits) == 1:
            return RouteResult(self.grid_ids[i], 1.0, f"point in polygon {self.codes[i]}", "point")
        others = ", ".join(self.codes[int(j)] for j in sorted(hits) if j != i)
        return RouteResult(
            self.grid_ids[i], 0.9, f"point on boundary of {self.codes[i]} (also {others}); lowest code", "point"
        )

    def locate_many(self, lats: Sequence[float], lons: Sequence[float]) -> list[int | None]:
        """Grid ids for many points at once (one vectorised tree query), ``None`` outside."""
        import numpy as np

        points = shapely.points(np.asarray(lons, dtype=float), np.asarray(lats, dtype=float))
        out: list[int | None] = [None] * len(points)
        if not self.codes:
            return out
        pt_idx, geom_idx = self.tree.query(points, predicate="intersects")
        best = np.full(len(points), len(self.codes), dtype=np.int64)
        np.minimum.at(best, pt_idx, geom_idx)
        for k, i in enumerate(best.tolist()):
            if i < len(self.codes):
                out[k] = self.grid_ids[i]
        return out


# ---------------------------------------------------------------------------------------
# Registered household by phone

CN = 86  # the country calling code the district dials in without a prefix


def _parse_phone(phone: str | None, default_area_code: str | None = None):  # noqa: ANN202
    """``(PhoneNumber, written_internationally_or_with_trunk_0)`` or ``None`` when the text
    holds no number phonenumbers can read."""
    if phone is None:
        return None
    s = unicodedata.normalize("NFKC", str(phone)).strip()
    s = s[4:] if s.lower().startswith("tel:") else s
    digits = re.sub(r"\D", "", s)
    if not digits:
        return None
    if default_area_code and len(digits) in (7, 8) and not s.startswith("+") and digits[0] not in "01":
        s = "0" + default_area_code.lstrip("0") + digits  # a bare local landline number
    try:
        number = phonenumbers.parse(s, "CN")
    except phonenumbers.NumberParseException:
        return None
    return number, s.startswith(("+", "0"))


def normalise_phone(phone: str | None, default_area_code: str | None = None) -> str | None:
    """One spelling per number, for storing and comparing (phonenumbers reads it as dialled
    in mainland China): mobiles as 11 digits (``13800138000``), landlines with their trunk 0
    and area code (``059187654321``), other countries in E.164 (``+442079460958``). A bare
    local landline number gets ``default_area_code`` if one is given; a number that is not
    valid (a short or local number) is kept as its digits. ``None`` when there are no digits."""
    parsed = _parse_phone(phone, default_area_code)
    if parsed is None:
        digits = re.sub(r"\D", "", unicodedata.normalize("NFKC", str(phone or "")))
        return digits or None
    number, prefixed = parsed
    national = phonenumbers.national_significant_number(number)
    if number.country_code != CN:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE:
        return national
    if phonenumbers.is_valid_number(number) or prefixed:
        return "0" + national
    return national  # a short/local number: kept as dialled


def valid_phone(phone: str | None) -> str | None:
    """The stored spelling of a number that can really be dialled, else ``None`` (for
    imports: a typo should be reported, not stored)."""
    parsed = _parse_phone(phone)
    if parsed is None or not phonenumbers.is_valid_number(parsed[0]):
        return None
    return normalise_phone(phone)


def phone_variants(phone: str) -> set[str]:
    """Spellings under which a number may already be stored (rows written before everyone
    normalised): the raw text, the normal form, E.164 with and without its +, and a
    landline with a dash after its area code."""
    out = {phone.strip()}
    n = normalise_phone(phone)
    if not n:
        return out
    out.add(n)
    parsed = _parse_phone(phone)
    if parsed is None or parsed[0].country_code != CN:
        return out
    number = parsed[0]
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    out.update({e164, e164[1:]})
    area = phonenumbers.length_of_geographical_area_code(number)
    if area and n.startswith("0"):
        out.add(n[:area + 1] + "-" + n[area + 1:])
    return out


def route_by_phone(session: Any, phone: str | None) -> RouteResult | None:
    """Resident with this number → their household → its grid."""
    target = normalise_phone(phone)
    if not target:
        return None
    stmt = (
        select(Resident.phone, Household.code, Household.grid_id, Household.id)
        .join(Household, Household.id == Resident.household_id)
    )
    rows = session.exec(stmt.where(Resident.phone.in_(sorted(phone_variants(phone))))).all()
    if not rows and len(target) >= 4:
        # Rows stored in some other spelling: narrow by the last digits, compare normalised.
        candidates = session.exec(stmt.where(Resident.phone.like(f"%{target[-4:]}"))).all()
        rows = [r for r in candidates if normalise_phone(r[0]) == target]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: r[3])
    grids = {r[2] for r in rows}
    _, code, grid_id, _ = rows[0]
    if len(grids) == 1:
        return RouteResult(grid_id, 0.9, f"registered household {code}", "household")
    # One number, households in several grids (a shared landline, a landlord): weak evidence.
    return RouteResult(grid_id, 0.5, f"registered household {code} (number also in {len(grids) - 1} other grids)",
                       "household")


# ---------------------------------------------------------------------------------------
# Address text against the gazetteer

_CN_DIGITS = "零〇一二两三四五六七八九十百千幺"
_UNITS = "号楼|号院|单元|号|幢|栋|座|楼|层|室|户|弄|巷|排|组|期|区|门|街坊"
_NUMERAL_BEFORE_UNIT = re.compile(f"([{_CN_DIGITS}]+)(?=(?:{_UNITS}))")
_DIGIT_MAP = str.maketrans({"零": "0", "〇": "0", "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3",
                            "四": "4", "五": "5", "六": "6", "七": "7", "八": "8", "九": "9"})
_DROP = re.compile(r"[\s,，。、;；:：!！?？\"'“”‘’()（）【】\[\]<>《》·.~～]")


def _numeral(run: str) -> str:
    if any(c in "十百千" for c in run):
        try:
            return str(cn2an.cn2an(run.replace("幺", "一"), "smart"))
        except (ValueError, KeyError):
            return run
    return run.translate(_DIGIT_MAP)  # read digit by digit: 一零二室 → 102室


def normalise_address(text: str) -> str:
    """Address text as recognisers and people write it → one form: full-width to ASCII,
    no spaces or punctuation, spoken numbers before an address unit as digits
    (九幢二十号 → 9幢20号, 三号楼二单元 → 3号楼2单元, 一零二室 → 102室). Numerals elsewhere
    stay, being part of names (五一路, 第一中学). Gazetteer names go through the same function,
    so a name that does change (三坊七巷 → 三坊7巷) still matches itself."""
    s = unicodedata.normalize("NFKC", text or "")
    s = _DROP.sub("", s)
    return _NUMERAL_BEFORE_UNIT.sub(lambda m: _numeral(m.group(1)), s)


_BUILDING_UNIT = re.compile(r"(\d+)(?:号楼|栋|座|幢)")


def _match_key(text: str) -> str:
    # 9栋, 9号楼, 9座 and 9幢 are the same building in everyday speech.
    return _BUILDING_UNIT.sub(r"\1幢", normalise_address(text))


# Accent-tolerant syllables: callers from the south (and recognisers) blur these pairs.
_FOLD_INITIAL = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"))
_FOLD_FINAL = (("ing", "in"), ("eng", "en"))


def _fold(syllable: str) -> str:
    for a, b in _FOLD_INITIAL:
        if syllable.startswith(a):
            syllable = b + syllable[len(a):]
            break
    for a, b in _FOLD_FINAL:
        if syllable.endswith(a):
            return syllable[: -len(a)] + b
    return syllable


@lru_cache(maxsize=20000)
def _readings(ch: str) -> tuple[frozenset[str], frozenset[str]]:
    """All toneless readings of a character (exact, folded). Every reading, not the one
    pypinyin guesses from context: it reads 萝卜 as "luo bo" but 罗布 as "luo bu", while a
    recogniser that heard "luó bù" may write either."""
    if not ("\u3400" <= ch <= "\u9fff"):
        return frozenset({ch}), frozenset({ch})
    exact = frozenset(pinyin(ch, style=Style.NORMAL, heteronym=True, errors="default")[0])
    return exact, frozenset(_fold(s) for s in exact)


def _pinyin_seq(text: str) -> list[tuple[frozenset[str], frozenset[str]]]:
    return [_readings(c) for c in text]


_DIGITS = re.compile(r"\d+")
_KIND_RANK = {"building": 4, "landmark": 3, "alias": 2, "community": 2, "street": 1}
_GRID_LEVEL_RANK = {"micro": 3, "area": 2, "community": 2, "street": 1, "district": 0}


@dataclass(frozen=True)
class _Entry:
    name: str
    key: str
    kind: str
    grid_id: int
    rank: int  # specificity: a building beats a community when both match
    py: tuple[tuple[frozenset[str], frozenset[str]], ...]


@dataclass(frozen=True)
class _Candidate:
    entry: _Entry
    confidence: float
    how: str
    heard: str  # the part of the text that matched


class Gazetteer:
    """Names of communities, buildings and landmarks (and the grids' own names) → grids."""

    EXACT = 1.0
    PINYIN = 0.85
    PINYIN_FOLDED = 0.8
    FUZZY_MAX = 0.9  # a fuzzy score of 100 maps to this; 80 maps to 0.72
    FUZZY_CUTOFF = 80.0
    # A more specific match (building) wins over the best one if it is at most this much less sure.
    SPECIFIC_SLACK = 0.15

    def __init__(
        self,
        entries: Iterable[tuple[str, str, int]],
        min_confidence: float = 0.6,
        parents: dict[int, int | None] | None = None,
    ) -> None:
        """``entries``: ``(name, kind, grid_id)``; kind ``building``, ``landmark``,
        ``community``, ``street``, ``alias`` or ``grid:<level>`` for a grid's own name.
        ``parents`` (grid id → parent id) lets a building inside the best-matching community
        win over it; without it any nearly-as-sure, more specific match does."""
        self.min_confidence = min_confidence
        self.parents = parents or {}
        self.entries: list[_Entry] = []
        seen: set[tuple[str, int]] = set()
        for name, kind, grid_id in entries:
            key = _match_key(name)
            if len(key) < 2 or (key, grid_id) in seen:
                continue  # one character matches everything
            seen.add((key, grid_id))
            rank = _GRID_LEVEL_RANK.get(kind[5:], 1) if kind.startswith("grid:") else _KIND_RANK.get(kind, 2)
            self.entries.append(_Entry(name, key, kind, grid_id, rank, tuple(_pinyin_seq(key))))
        # Index by each reading of the first character: a pinyin scan then only tries the
        # entries that can start at a given position of the text.
        self._by_first: dict[str, list[_Entry]] = defaultdict(list)
        for e in self.entries:
            for r in e.py[0][1]:
                self._by_first[r].append(e)
        self._keys = [e.key for e in self.entries]

    @classmethod
    def from_session(cls, session: Any, min_confidence: float = 0.6) -> Gazetteer:
        rows = [(e.name, e.kind, e.grid_id) for e in session.exec(select(GazetteerEntry)).all()]
        grids = session.exec(select(Grid)).all()
        rows += [(g.name, f"grid:{GridLevel(g.level).value}", g.id) for g in grids]
        return cls(rows, min_confidence=min_confidence, parents={g.id: g.parent_id for g in grids})

    def __len__(self) -> int:
        return len(self.entries)

    # -- the three ways of matching ---------------------------------------------------------

    def _exact(self, text: str) -> list[_Candidate]:
        out = []
        for e in self.entries:
            start = text.find(e.key)
            while start != -1:
                end = start + len(e.key)
                # 9幢 must not match inside 19幢 or 9幢 inside 洋坊新村9幢0…: digits end at digit boundaries.
                if not (e.key[0].isdigit() and start > 0 and text[start - 1].isdigit()) and not (
                    e.key[-1].isdigit() and end < len(text) and text[end].isdigit()
                ):
                    out.append(_Candidate(e, self.EXACT, "exact", e.key))
                    break
                start = text.find(e.key, start + 1)
        return out

    def _fuzzy(self, text: str) -> list[_Candidate]:
        out = []
        for e in self.entries:
            if len(e.key) > len(text):
                continue  # the text is a fragment of this name: too little to go on
            res = fuzz.partial_ratio_alignment(e.key, text, score_cutoff=self.FUZZY_CUTOFF)
            if res is not None:
                heard = text[res.dest_start:res.dest_end]
                if _DIGITS.findall(heard) != _DIGITS.findall(e.key):
                    continue  # 洋坊新村8幢 is one character from 9幢, and a different building
                out.append(_Candidate(e, self.FUZZY_MAX * res.score / 100.0, f"fuzzy {res.score:.0f}", heard))
        return out

    def _pinyin(self, text: str) -> list[_Candidate]:
        seq = _pinyin_seq(text)
        best: dict[_Entry, _Candidate] = {}
        for i, (_, first_folded) in enumerate(seq):
            tried: set[int] = set()
            for r in first_folded:
                for e in self._by_first.get(r, ()):
                    if id(e) in tried or i + len(e.py) > len(seq):
                        continue
                    tried.add(id(e))
                    window = seq[i:i + len(e.py)]
                    if all(a[0] & b[0] for a, b in zip(e.py, window, strict=True)):
                        cand = _Candidate(e, self.PINYIN, "pinyin", text[i:i + len(e.py)])
                    elif all(a[1] & b[1] for a, b in zip(e.py, window, strict=True)):
                        cand = _Candidate(e, self.PINYIN_FOLDED, "pinyin, accent-tolerant", text[i:i + len(e.py)])
                    else:
                        continue
                    if e not in best or best[e].confidence < cand.confidence:
                        best[e] = cand
        return list(best.values())

    # -- the answer -----------------------------------------------------------------------------

    def candidates(self, text: str) -> list[_Candidate]:
        """Everything that matched above ``min_confidence``, one per entry, surest first:
        exact substrings (longest first), then fuzzy on characters and by pinyin."""
        key = _match_key(text)
        if not key or not self.entries:
            return []
        best: dict[int, _Candidate] = {}
        for c in self._exact(key) + self._fuzzy(key) + self._pinyin(key):
            if c.confidence >= self.min_confidence and (
                id(c.entry) not in best or best[id(c.entry)].confidence < c.confidence
            ):
                best[id(c.entry)] = c
        return sorted(best.values(), key=lambda c: (-c.confidence, -len(c.entry.key), -c.entry.rank, c.entry.grid_id))

    def _inside(self, grid_id: int, ancestor: int) -> bool:
        seen = 0
        while grid_id is not None and seen < 16:
            if grid_id == ancestor:
                return True
            grid_id = self.parents.get(grid_id)
            seen += 1
        return False

    def match(self, text: str) -> RouteResult | None:
        """The grid an address names, or ``None`` below ``min_confidence`` (triage)."""
        found = self.candidates(text)
        if not found:
            return None
        pick = found[0]
        # A building (or landmark) beats the community that matched as well, if it is nearly as
        # sure and, when the grid tree is known, lies inside that community's grid.
        for c in found[1:]:
            if (
                c.entry.rank > pick.entry.rank
                and c.confidence >= found[0].confidence - self.SPECIFIC_SLACK
                and (not self.parents or self._inside(c.entry.grid_id, found[0].entry.grid_id))
            ):
                pick = c
        e = pick.entry
        if pick.how == "exact":
            reason = f"gazetteer exact {e.name}"
        elif pick.heard == e.key:
            reason = f"gazetteer {pick.how} {e.name}"
        else:
            reason = f"gazetteer {pick.how} {pick.heard}→{e.name}"
        return RouteResult(e.grid_id, round(pick.confidence, 3), reason[:256], "gazetteer")


# ---------------------------------------------------------------------------------------
# All together


def route_case(
    session: Any,
    *,
    latitude: float | None = None,
    longitude: float | None = None,
    phone: str | None = None,
    address_text: str | None = None,
    locator: GridLocator | None = None,
    gazetteer: Gazetteer | None = None,
) -> RouteResult | None:
    """DESIGN's order: the shared point, the caller's registered household, the address.
    Pass a long-lived ``locator``/``gazetteer``; without them they are built from the session."""
    if latitude is not None and longitude is not None:
        locator = locator if locator is not None else GridLocator.from_session(session)
        found = locator.locate_point(latitude, longitude)
        if found is not None:
            return found
    if phone:
        found = route_by_phone(session, phone)
        if found is not None:
            return found
    if address_text and address_text.strip():
        gazetteer = gazetteer if gazetteer is not None else Gazetteer.from_session(session)
        return gazetteer.match(address_text)
    return None
