"""Which grid a case belongs to: by a shared location, the caller's registered household,
or a spoken/typed address (DESIGN "Grids and routing"). Each step answers a
:class:`RouteResult` or ``None``; ``None`` from all of them means operator triage.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import phonenumbers
import shapely
from rapidfuzz import fuzz
from shapely.geometry import shape
from sqlalchemy import bindparam, event
from sqlalchemy.orm import Session
from sqlmodel import select

from core.people.models import Resident
from core.places.address import (
    BUILDING,
    FILLER_WORDS,
    FLOOR,
    MEASURE_WORDS,
    NUMERAL_WORDS,
    Comps,
    Part,
    accent_classes,
    canonical,
    comps,
    fold,
    folded_readings,
    local_readings,
    parse_number,
    parse_parts,
    part_runs,
    readings,
    split_numbered,
    spoken,
)
from core.places.models import GazetteerEntry, Grid, GridLevel, Household
from core.platform.i18n import routing_text

# Why a case went to its grid, as steps ``{"code": …, "params": {…}}`` (``routing.<code>``
# of core/locales): stored with the case, put into words by each edge in its reader's language.
Trace = tuple[dict[str, Any], ...]


def step(code: str, **params: Any) -> dict[str, Any]:
    return {"code": code, "params": {k: v for k, v in params.items() if v is not None}}


@dataclass(frozen=True)
class RouteResult:
    grid_id: int
    confidence: float  # 0..1
    reason: str  # English words of ``trace``, for logs
    method: str  # "point", "household", "gazetteer"
    # Address matches only (core.places.routing.Gazetteer):
    level: str | None = None  # the grid's level
    ancestor_only: bool = False  # sure of this grid, not of the micro grid below it
    needs_building: bool = False  # a building number (Gazetteer.match_building) would settle it
    place: str | None = None  # the registered name that matched, to read back
    scope: str | None = None  # the estate whose buildings Gazetteer.match_building picks from
    trace: Trace = ()  # why this grid, as codes (see ``step``)
    # Close candidates the caller may choose between (the read-back asks): (grid id, place name).
    choices: tuple[tuple[int, str], ...] = ()


def routed(grid_id: int, confidence: float, method: str, trace: Trace, **more: Any) -> RouteResult:
    return RouteResult(grid_id, confidence, routing_text("en", list(trace))[:256], method, trace=tuple(trace), **more)


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
            return routed(self.grid_ids[i], 1.0, "point", (step("point", grid=self.codes[i]),))
        others = ", ".join(self.codes[int(j)] for j in sorted(hits) if j != i)
        return routed(self.grid_ids[i], 0.9, "point", (step("point_boundary", grid=self.codes[i], others=others),))

    def locate_many(self, lats: Sequence[float], lons: Sequence[float]) -> list[int | None]:
        """Grid ids for many points at once (one vectorised tree query), ``None`` outside."""
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


# Intake asks for the same caller's number several times per petition (the flood check, the
# resident, the household, the duplicate screen); phonenumbers parses it each time. Cached:
# the answers are pure functions of the text.
@functools.lru_cache(maxsize=8192)
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


@functools.lru_cache(maxsize=8192)
def phone_variants(phone: str) -> frozenset[str]:
    """Spellings under which a number may already be stored (rows written before everyone
    normalised): the raw text, the normal form, E.164 with and without its +, and a
    landline with a dash after its area code."""
    return frozenset(_phone_variants(phone))


def _phone_variants(phone: str) -> set[str]:
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


# Built once (intake asks for every caller: to link the resident, then to route by the
# household); the numbers are parameters.
# The resident comes whole: what follows a new case (the chat notice of its dispatch) reads
# it again, from the session's identity map instead of the database.
_REGISTERED = select(Resident.phone, Household.code, Household.grid_id, Household.id, Resident) \
    .outerjoin(Household, Household.id == Resident.household_id).order_by(Resident.id)
_REGISTERED_BY_PHONES = _REGISTERED.where(Resident.phone.in_(bindparam("phones", expanding=True)))
_REGISTERED_BY_PATTERN = _REGISTERED.where(Resident.phone.like(bindparam("pattern")))
# session.info: (the transaction, {normalised number: its rows}): what registered_under found
_REGISTERED_SEEN = "gridline.routing.registered_under"


def registered_under(session: Any, phone: str | None) -> list:
    """The residents registered under this number, in any spelling, oldest first: rows of
    (phone, household code, grid id, household id, resident), the household's columns None
    for a resident without one.

    Asked once per transaction and number: intake links the petition to the resident and
    then routes it by the household, a statement each before (two for an unknown caller,
    whose number is looked for in other spellings too). A flush that writes a resident or a
    household forgets what was found (``_forget_registered``)."""
    target = normalise_phone(phone)
    if not target:
        return []
    transaction = session.get_transaction()
    seen = session.info.get(_REGISTERED_SEEN)
    if seen is None or seen[0] is not transaction:
        seen = (transaction, {})
        session.info[_REGISTERED_SEEN] = seen
    rows = seen[1].get(target)
    if rows is None:
        rows = session.execute(_REGISTERED_BY_PHONES, {"phones": sorted(phone_variants(phone))}).all()
        if not rows and len(target) >= 4:
            # Rows stored in some other spelling: narrow by the last digits, compare normalised.
            candidates = session.execute(_REGISTERED_BY_PATTERN, {"pattern": f"%{target[-4:]}"}).all()
            rows = [r for r in candidates if normalise_phone(r[0]) == target]
        if transaction is not None:
            seen[1][target] = rows
    return rows


@event.listens_for(Session, "after_flush")
def _forget_registered(session: Session, _context: Any) -> None:
    if _REGISTERED_SEEN in session.info and any(
            isinstance(obj, Resident | Household) for obj in (*session.new, *session.dirty, *session.deleted)):
        del session.info[_REGISTERED_SEEN]


def route_by_phone(session: Any, phone: str | None) -> RouteResult | None:
    """Resident with this number → their household → its grid."""
    rows = [r for r in registered_under(session, phone) if r[3] is not None]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: r[3])
    grids = {r[2] for r in rows}
    _, code, grid_id = rows[0][:3]
    if len(grids) == 1:
        return routed(grid_id, 0.9, "household", (step("household", household=code),))
    # One number, households in several grids (a shared landline, a landlord): weak evidence.
    return routed(grid_id, 0.5, "household", (step("household_shared", household=code, others=len(grids) - 1),))


# ---------------------------------------------------------------------------------------
# Address text against the gazetteer

def _by_sound(how: str, used: list[Part]) -> str:
    return how if all(p.sure >= 1 for p in used) else f"{how}+by_sound"


@dataclass(frozen=True)
class GazetteerItem:
    """A registered place: a gazetteer entry, a grid's own name, or a household's address."""

    name: str
    kind: str  # community, alias, building, street, landmark, grid:<level>, household, place
    grid_id: int | None
    code: str | None = None  # a household's code


@dataclass(eq=False)
class _Place:
    """A name that can be heard: a gazetteer entry, or the estate part of numbered
    addresses (洋坊新村 of 洋坊新村9幢), with the numbered places that follow it."""

    key: str  # canonical spelling
    item: GazetteerItem
    standalone: bool  # False: only the start of registered household addresses, never a place alone
    numbered: dict[Comps, list[GazetteerItem]] = field(default_factory=dict)
    every: tuple[frozenset[str], ...] = ()  # every reading of each character
    every_folded: tuple[frozenset[str], ...] = ()
    local: tuple[str, ...] = ()  # the reading a local uses

    def has_buildings(self) -> bool:
        return any(len(c) == 1 and c[0][0] == BUILDING for c in self.numbered)


@dataclass(frozen=True)
class Candidate:
    """One place found in the text. ``entry``: what was found (``.name``, ``.grid_id``);
    ``scope``: the key of the named place whose buildings a keypad number picks from."""

    entry: GazetteerItem
    confidence: float
    how: str
    heard: str
    start: int
    end: int
    scope: str | None = None
    note: dict | None = None  # a step of the trace: what was heard but not used
    numbered: bool = False  # a numbered place (building, flat), not a name alone


@dataclass(frozen=True)
class AddressPhrases:
    """A recogniser's phrase list for the address turn; ``version`` changes with the gazetteer."""

    phrases: tuple[str, ...]
    version: str


class Gazetteer:
    """Names of communities, buildings and landmarks, the grids' own names and the
    households' registered addresses → grids. Never answers below the level it is sure of:
    a place it is sure of only in part (the estate, not the building) gives the estate's grid
    and says so (``RouteResult.ancestor_only``, ``routing_reason``)."""

    EXACT = 1.0
    PINYIN = 0.85  # every character through the reading a local uses
    PINYIN_OTHER = 0.84  # some character only through another reading: a local reading wins a tie
    PINYIN_FOLDED = 0.8
    PINYIN_FOLDED_OTHER = 0.79
    FUZZY_MAX = 0.9  # a fuzzy score of 100 maps to this; 80 maps to 0.72
    FUZZY_CUTOFF = 80.0
    MIN_SOUNDALIKE = 3  # shorter names match only as written (付钱 is not 府前)
    MIN_FUZZY = 4  # a three-character name with a character missing leaves too little (朝阳 for 朝阳路)
    PARTS_GAP = 3  # characters allowed between a name and its numbers (的, 小区, 那个)
    # A deeper match is taken over its ancestor when it is at most this much less sure.
    SPECIFIC_SLACK = 0.22  # under an exact community: any reading-alike estate or building (≥ 0.78)
    # Two places on different branches found equally surely: sure only of their common
    # ancestor. Any difference decides (a local reading beats another reading by 0.01).
    TIE = 1e-6
    CONFLICT_FACTOR = 0.7
    # A name with one character missing or one too many, when no other name is that close:
    # below every reading-alike match, above the 0.78 an exact community lets a deeper match win by.
    NEAR = 0.8
    MIN_NEAR = 4  # names this long may lose a character (洋坊新村 → 洋坊村); three may gain one

    def __init__(
        self,
        entries: Iterable[tuple[str, str, int]],
        min_confidence: float = 0.6,
        parents: dict[int, int | None] | None = None,
        *,
        levels: dict[int, str] | None = None,
        households: Iterable[tuple[str, str, int]] = (),
        accents: Iterable[str] | None = None,
    ) -> None:
        """``entries``: ``(name, kind, grid_id)``; kind ``building``, ``landmark``,
        ``community``, ``street``, ``alias`` or ``grid:<level>`` for a grid's own name.
        ``parents`` (grid id → parent id) and ``levels`` (grid id → level) are the grid tree:
        without it a match cannot be checked against the others or said to be partial.
        ``households``: ``(code, address, grid_id)``; a full address routes to its grid."""
        self.min_confidence = min_confidence
        # Accent classes blurred (rules.toml [address]); a rules change applies from the next build.
        self.accents = accent_classes() if accents is None else tuple(accents)
        self.parents = dict(parents or {})
        self.levels = dict(levels or {})
        self.entries: list[GazetteerItem] = []
        self._places: dict[tuple[str, int | None], _Place] = {}
        self._by_key: dict[str, list[_Place]] = defaultdict(list)
        numbered: list[tuple[str, Comps, GazetteerItem, bool]] = []
        for name, kind, grid_id in entries:
            item = GazetteerItem(name, kind, grid_id)
            self.entries.append(item)
            split = split_numbered(name)
            if split is not None:
                numbered.append((split[0], split[1], item, True))
                continue
            key = canonical(name)
            if len(key) < 2 or (key, grid_id) in self._places:
                continue  # one character matches everything
            self._add_place(_Place(key, item, True))
        for code, address, grid_id in households:
            split = split_numbered(address)
            if split is not None and grid_id is not None:
                numbered.append((split[0], split[1], GazetteerItem(address, "household", grid_id, code), False))
        # Gazetteer entries first: a household's estate is then found as a registered name.
        for base, found, item, registered in numbered:
            self._anchor(base, item.grid_id, registered).numbered.setdefault(found, []).append(item)
        for place in list(self._places.values()):
            if place.item.kind == "place":  # an estate known only by its numbered places
                grids = {i.grid_id for items in place.numbered.values() for i in items}
                common = self._lca(grids)
                place.item = GazetteerItem(place.key, "place", common)
                if common is None:
                    place.standalone = False
            place.every = tuple(readings(ch) for ch in place.key)
            place.every_folded = tuple(folded_readings(ch, self.accents) for ch in place.key)
            place.local = local_readings(place.key)
        # Index by each reading of the first character: a pinyin scan then only tries the
        # names that can start at a given position of the text.
        self._by_first: dict[str, list[_Place]] = defaultdict(list)
        for place in self._places.values():
            if len(place.key) >= self.MIN_SOUNDALIKE:
                for r in place.every_folded[0]:
                    self._by_first[r].append(place)
        # One character off: each name without one of its characters → the names that gives
        # (only a variant that gives one name is used), and names by first character for
        # a character slipped inside them. Names with digits are left out: 51路 is not 5路.
        self._minus_one: dict[str, set[str]] = defaultdict(set)
        self._near_by_first: dict[str, list[str]] = defaultdict(list)
        for key in self._by_key:
            if any(ch.isdigit() for ch in key) or len(key) < self.MIN_SOUNDALIKE:
                continue
            self._near_by_first[key[0]].append(key)
            if len(key) >= self.MIN_NEAR:
                for i in range(len(key)):
                    variant = key[:i] + key[i + 1:]
                    if variant not in self._by_key:
                        self._minus_one[variant].add(key)
        self._minus_lengths = sorted({len(v) for v in self._minus_one})
        # Building numbers under each grid (gazetteer buildings only: the household registry
        # is never complete, so it cannot say a number is unique).
        self._buildings_under: dict[int, dict[int, list[GazetteerItem]]] = defaultdict(dict)
        for place in self._places.values():
            for found, items in place.numbered.items():
                if len(found) != 1 or found[0][0] != BUILDING:
                    continue
                for item in items:
                    if item.kind == "household":
                        continue
                    for grid in self._lineage(item.grid_id):
                        self._buildings_under[grid].setdefault(found[0][1], []).append(item)
        self._phrases: AddressPhrases | None = None

    @classmethod
    def from_session(cls, session: Any, min_confidence: float = 0.6) -> Gazetteer:
        rows = [(e.name, e.kind, e.grid_id) for e in session.exec(select(GazetteerEntry)).all()]
        grids = session.exec(select(Grid)).all()
        rows += [(g.name, f"grid:{GridLevel(g.level).value}", g.id) for g in grids]
        households = session.exec(select(Household.code, Household.address, Household.grid_id)).all()
        return cls(rows, min_confidence=min_confidence, parents={g.id: g.parent_id for g in grids},
                   levels={g.id: GridLevel(g.level).value for g in grids}, households=households)

    def __len__(self) -> int:
        return len(self.entries)

    # -- building the index ---------------------------------------------------------------

    def _add_place(self, place: _Place) -> _Place:
        self._places[(place.key, place.item.grid_id)] = place
        self._by_key[place.key].append(place)
        return place

    def _anchor(self, base: str, grid_id: int | None, registered: bool) -> _Place:
        """The named place a numbered address hangs from: the longest registered name that
        ends the address's base (罗布社区洋坊新村 → 洋坊新村) and contains its grid."""
        for start in range(len(base) - 1):
            for place in self._by_key.get(base[start:], ()):
                if place.item.kind == "place" or self._within(grid_id, place.item.grid_id):
                    place.standalone = place.standalone or registered
                    return place
        place = self._places.get((base, None))
        if place is None:
            place = self._add_place(_Place(base, GazetteerItem(base, "place", None), registered))
        place.standalone = place.standalone or registered
        return place

    def _lineage(self, grid_id: int | None) -> list[int]:
        """The grid and its ancestors, nearest first."""
        out: list[int] = []
        while grid_id is not None and grid_id not in out and len(out) < 16:
            out.append(grid_id)
            grid_id = self.parents.get(grid_id)
        return out

    def _within(self, grid_id: int | None, ancestor: int | None) -> bool:
        if ancestor is None or grid_id is None:
            return False
        if not self.parents:
            return True  # no grid tree to check against
        return ancestor in self._lineage(grid_id)

    def within(self, grid_id: int | None, ancestor: int | None) -> bool:
        """``grid_id`` is ``ancestor`` or lies under it."""
        return grid_id is not None and (grid_id == ancestor or self._within(grid_id, ancestor))

    def _on_one_line(self, a: int | None, b: int | None) -> bool:
        return a == b or (bool(self.parents) and (a in self._lineage(b) or b in self._lineage(a)))

    def _lca(self, grids: Iterable[int | None]) -> int | None:
        grids = [g for g in grids]
        if not grids or None in grids:
            return None
        if len(set(grids)) == 1:
            return grids[0]
        common = self._lineage(grids[0])
        for g in grids[1:]:
            line = set(self._lineage(g))
            common = [a for a in common if a in line]
        return common[0] if common else None

    def _depth(self, grid_id: int | None) -> int:
        return len(self._lineage(grid_id))

    # -- finding names in the text --------------------------------------------------------

    def _exact(self, text: str) -> list[tuple[_Place, int, int, float, str]]:
        out = []
        for place in self._places.values():
            key = place.key
            start = text.find(key)
            while start != -1:
                end = start + len(key)
                # 9幢 must not match inside 19幢: digits end at digit boundaries.
                if not (key[0].isdigit() and start > 0 and text[start - 1].isdigit()) and not (
                    key[-1].isdigit() and end < len(text) and text[end].isdigit()
                ):
                    out.append((place, start, end, self.EXACT, "exact"))
                start = text.find(key, start + 1)
        return out

    def _soundalike(self, text: str) -> list[tuple[_Place, int, int, float, str]]:
        """Windows of the text that read like a name: every reading of every character on
        both sides (a recogniser writes a homophone of any of them), the local reading surest."""
        scores = (
            (self.PINYIN, "pinyin"),
            (self.PINYIN_OTHER, "pinyin_other"),
            (self.PINYIN_FOLDED, "accent"),
            (self.PINYIN_FOLDED_OTHER, "accent_other"),
        )
        out = []
        for i, ch in enumerate(text):
            tried: set[int] = set()
            for r in folded_readings(ch, self.accents):
                for place in self._by_first.get(r, ()):
                    if id(place) in tried or i + len(place.key) > len(text):
                        continue
                    tried.add(id(place))
                    grade = self._grade(place, text[i:i + len(place.key)])
                    if grade is not None:
                        confidence, how = scores[grade]
                        out.append((place, i, i + len(place.key), confidence, how))
        return out

    def _grade(self, place: _Place, window: str) -> int | None:
        """0 all through local readings, 1 some through other readings, 2 and 3 the same
        accent-tolerant; ``None`` when a character does not read alike or nothing differs."""
        worst, differs = 0, False
        for j, ch in enumerate(window):
            if ch == place.key[j]:
                continue
            differs = True
            heard = readings(ch)
            if place.local[j] in heard:
                grade = 0
            elif place.every[j] & heard:
                grade = 1
            elif fold(place.local[j], self.accents) in folded_readings(ch, self.accents):
                grade = 2
            elif place.every_folded[j] & folded_readings(ch, self.accents):
                grade = 3
            else:
                return None
            worst = max(worst, grade)
        return worst if differs else None

    def _fuzzy(self, text: str, skip: set[int]) -> list[tuple[_Place, int, int, float, str]]:
        out = []
        for place in self._places.values():
            key = place.key
            if id(place) in skip or len(key) < self.MIN_FUZZY or len(key) > len(text):
                continue
            res = fuzz.partial_ratio_alignment(key, text, score_cutoff=self.FUZZY_CUTOFF)
            if res is None or res.score >= 100:
                continue
            heard = text[res.dest_start:res.dest_end]
            if _DIGITS.findall(heard) != _DIGITS.findall(key):
                continue  # 洋坊新村8幢 is one character from 9幢, and a different building
            out.append((place, res.dest_start, res.dest_end, self.FUZZY_MAX * res.score / 100.0,
                        "fuzzy"))
        return out

    # -- from names to places -------------------------------------------------------------

    def _derive(self, place: _Place, start: int, end: int, confidence: float, how: str,
                runs: list[list[Part]], text: str) -> Candidate | None:
        """What a name found in the text stands for, with the numbers that follow it."""
        run = next((r for r in runs if end <= r[0].start <= end + self.PARTS_GAP), None)
        if run is None:
            # The building said before the name, or further away (九幢，洋坊新村那边): taken
            # when it is the only building in the text.
            apart = [r for r in runs if r[0].kind == BUILDING and (r[-1].end <= start or r[0].start >= end)]
            if len(apart) == 1:
                run = apart[0]
        note = None
        if run is not None:
            numbered = [p for p in run if p.kind != FLOOR]
            found = comps(run)
            if place.numbered and found:
                for k in range(len(found), 0, -1):
                    items = place.numbered.get(found[:k])
                    if items:
                        used = numbered[:k]
                        a, b = min(start, used[0].start), max(end, used[-1].end)
                        return self._numbered(items, min([confidence] + [p.sure for p in used]), _by_sound(how, used),
                                              text[a:b], a, b)
                note = step("building_not_registered", number=found[0][1]) if found[0][0] == BUILDING else step(
                    "part_not_registered", number=found[0][1])
            elif found and found[0][0] == BUILDING and place.item.grid_id is not None:
                items = self._buildings_under.get(place.item.grid_id, {}).get(found[0][1], [])
                grids = {i.grid_id for i in items}
                if len(grids) == 1:
                    a, b = min(start, numbered[0].start), max(end, numbered[0].end)
                    return self._numbered(items, min(confidence, numbered[0].sure), _by_sound(how, numbered[:1]),
                                          text[a:b], a, b)
                note = step("building_not_unique" if grids else "building_not_registered", number=found[0][1],
                            place=place.item.name)
        if not place.standalone or place.item.grid_id is None:
            return None
        scope = place.key if place.has_buildings() else None
        return Candidate(place.item, confidence, how, text[start:end], start, end, scope, note)

    def _numbered(self, items: list[GazetteerItem], confidence: float, how: str, heard: str,
                  start: int, end: int) -> Candidate | None:
        grids = {i.grid_id for i in items}
        if len(grids) == 1:
            return Candidate(items[0], confidence, how, heard, start, end, numbered=True)
        common = self._lca(grids)  # the same address registered in several grids
        if common is None:
            return None
        item = GazetteerItem(items[0].name, items[0].kind, common)
        return Candidate(item, confidence, how, heard, start, end, note=step("several_grids"), numbered=True)

    def _near(self, text: str, exact: list) -> list[tuple[_Place, int, int, float, str]]:
        """Names with one character missing (洋坊村) or one slipped inside (洋坊讨新村), where
        that is one name only; never inside a name found as written."""
        spans = [(s, e) for _, s, e, _, _ in exact]
        out = []

        def add(key: str, i: int, j: int, how: str) -> None:
            if not any(a <= i and j <= b for a, b in spans):
                out.extend((place, i, j, self.NEAR, how) for place in self._by_key[key])

        for length in self._minus_lengths:
            for i in range(len(text) - length + 1):
                keys = self._minus_one.get(text[i:i + length])
                if keys is not None and len(keys) == 1:
                    add(next(iter(keys)), i, i + length, "missing_char")
        for i, ch in enumerate(text):
            hits = set()
            for key in self._near_by_first.get(ch, ()):
                j = i + len(key) + 1
                if j > len(text) or text[j - 1] != key[-1]:
                    continue
                window = text[i:j]
                if any(window[:k] + window[k + 1:] == key for k in range(1, len(key))):
                    hits.add(key)
            if len(hits) == 1:
                key = hits.pop()
                add(key, i, i + len(key) + 1, "extra_char")
        return out

    def candidates(self, text: str) -> list[Candidate]:
        """Every place found in the text above ``min_confidence``, surest first."""
        return self._candidates(canonical(text))[0]

    def _candidates(self, key: str) -> tuple[list[Candidate], list[dict]]:
        """The candidates, and what the trace should say about the text as a whole."""
        if not key or not self._places:
            return [], []
        exact = self._exact(key)
        runs = part_runs(parse_parts(key, protected=tuple((s, e) for _, s, e, _, _ in exact)))
        found = exact + self._soundalike(key) + self._fuzzy(key, {id(p) for p, *_ in exact}) + self._near(key, exact)
        # Two different buildings and no repair word: neither is sure (the read-back asks).
        # A building number after a unit or a room (…单元301号楼下) is the flat's, not another building.
        buildings = {p.number for r in runs for k, p in enumerate(r)
                     if p.kind == BUILDING and (k == 0 or r[k - 1].kind == BUILDING)}
        steps = []
        if len(buildings) > 1:
            runs = [r for r in runs if all(p.kind != BUILDING for p in r)]
            steps.append(step("two_buildings", numbers=sorted(buildings)))
        best: dict[tuple, Candidate] = {}
        for place, start, end, confidence, how in found:
            c = self._derive(place, start, end, confidence, how, runs, key)
            if c is None or c.confidence < self.min_confidence:
                continue
            k = (c.entry, c.start, c.end)
            if k not in best or best[k].confidence < c.confidence:
                best[k] = c
        return sorted(best.values(), key=lambda c: (-c.confidence, -self._depth(c.entry.grid_id),
                                                    -(c.end - c.start), c.entry.grid_id or 0)), steps

    def _repaired(self, key: str) -> tuple[str, list[dict]]:
        """The text a caller meant after correcting themselves: what follows the last
        repair word (不对, 错了, 我说错了, 应该是, 不是…是) wins; a repair that names only a
        number keeps the place said before it (洋坊新村七幢，不对，九幢); 不是 X drops X
        (是九幢不是七幢). A repair word followed by nothing of an address is not one (灯装错了)."""
        steps: list[dict] = []
        cancels = list(_REPAIR.finditer(key))
        for m in reversed(cancels):
            before, after = key[:m.start()], key[m.end():]
            named = bool(self._candidates(after)[0]) if after else False
            numbers = part_runs(parse_parts(after)) if after else []
            if not named and not numbers:
                continue
            if not named:
                runs = part_runs(parse_parts(before))
                if runs:  # the number being corrected goes; the place it was in stays
                    before = before[:runs[-1][0].start] + before[runs[-1][-1].end:]
                after = before + after
            steps.append(step("repair", heard=key[m.start():]))
            key = after
            break
        while (m := _NEGATED.search(key)) is not None:
            stop = key.find("是", m.end())
            stop = len(key) if stop == -1 else stop
            steps.append(step("negated", heard=key[m.end():stop]))
            key = key[:m.start()] + key[stop:]
        return key, steps

    # -- the answer -----------------------------------------------------------------------

    def match(self, text: str) -> RouteResult | None:
        """The grid an address names, as deep as the text makes sure; ``None`` when nothing
        in it is sure enough (triage)."""
        key, repairs = self._repaired(canonical(text))
        found, notes = self._candidates(key)
        if not found:
            return None
        result = self._choose(found)
        if notes and result.scope is not None:
            # Two buildings of one estate: sure of the micro grid only when both lie in it.
            numbers = next(s["params"]["numbers"] for s in notes if s["code"] == "two_buildings")
            each = [self.match_building(result, str(n)) for n in numbers]
            if all(each) and len({r.grid_id for r in each}) == 1:
                result = replace(each[0], choices=())
            else:
                result = replace(result, choices=tuple((r.grid_id, r.place) for r in each if r is not None))
        extra = [s for s in repairs + notes if s not in result.trace]
        return replace(result, trace=result.trace + tuple(extra),
                       reason=routing_text("en", list(result.trace) + extra)[:256]) if extra else result

    def _choose(self, found: list[Candidate]) -> RouteResult:
        accepted: list[Candidate] = []
        conflicting: list[Candidate] = []
        for c in found:
            clashes = [a for a in accepted if not self._on_one_line(a.entry.grid_id, c.entry.grid_id)]
            if not clashes:
                accepted.append(c)
            elif any(a.start <= c.start and c.end <= a.end and a.end - a.start > c.end - c.start for a in clashes):
                continue  # a longer name explains these characters
            elif c.confidence >= max(a.confidence for a in clashes) - self.TIE:
                conflicting.append(c)
        if conflicting:
            involved = accepted + conflicting
            common = self._lca(c.entry.grid_id for c in involved)
            if common is None:
                return None
            names = list(dict.fromkeys(c.entry.name for c in involved))
            confidence = min(c.confidence for c in involved) * self.CONFLICT_FACTOR
            choices = tuple(dict.fromkeys((c.entry.grid_id, c.entry.name) for c in involved
                                          if c.entry.grid_id != common and c.entry.kind not in ("alias",)))
            return replace(self._result(common, confidence, [step("conflict", names=names)], None),
                           choices=choices[:4])
        surest = max(c.confidence for c in accepted)
        pick = max((c for c in accepted if c.confidence >= surest - self.SPECIFIC_SLACK),
                   key=lambda c: (self._depth(c.entry.grid_id), c.confidence, c.end - c.start))
        if pick.note is not None and pick.note["code"] == "building_not_registered":
            # The building said is not this place's; another name heard in the text has it:
            # not a guess between them.
            rivals = [c for c in found if c.numbered and not self._on_one_line(c.entry.grid_id, pick.entry.grid_id)]
            common = self._lca([pick.entry.grid_id, *(c.entry.grid_id for c in rivals)]) if rivals else None
            if common is not None:
                names = list(dict.fromkeys([pick.entry.name, *(c.entry.name for c in rivals)]))
                return replace(self._result(common, pick.confidence * self.CONFLICT_FACTOR,
                                            [step("conflict", names=names)], None),
                               choices=tuple((c.entry.grid_id, c.entry.name) for c in rivals[:3]))
        return self._result(pick.entry.grid_id, pick.confidence, self._found_steps(pick), pick, note=pick.note)

    @staticmethod
    def _found_steps(pick: Candidate) -> list[dict]:
        e = pick.entry
        how, _, by_sound = pick.how.partition("+")
        heard = None if pick.heard == canonical(e.name) else pick.heard
        steps = [step("gazetteer_heard" if heard else "gazetteer", how=how, place=e.name, heard=heard)]
        if by_sound:
            steps.append(step("measure_by_sound"))
        if e.code:
            steps.append(step("household_address", household=e.code))
        return steps

    def _result(self, grid_id: int, confidence: float, steps: list[dict], pick: Candidate | None,
                note: dict | None = None) -> RouteResult:
        level = self.levels.get(grid_id)
        ancestor_only = level is not None and level != GridLevel.micro.value
        scope = pick.scope if pick is not None else None
        needs_building = False
        if ancestor_only:
            if pick is not None and pick.numbered:
                missing = "unit"  # the building is known; it spans several micro grids
            else:
                numbers = self._building_numbers(self._scope_place(scope, grid_id), grid_id)
                needs_building = any(len({i.grid_id for i in items}) == 1 for items in numbers.values())
                missing = "building" if numbers else "place"
            steps = [*steps, step("partial", level=level, missing=missing, needs_building=needs_building)]
        if note:
            steps = [*steps, note]
        return routed(grid_id, round(confidence, 3), "gazetteer", steps, level=level,
                      ancestor_only=ancestor_only, needs_building=needs_building,
                      place=pick.entry.name if pick is not None else None, scope=scope)

    def _building_numbers(self, place: _Place | None, grid_id: int) -> dict[int, list[GazetteerItem]]:
        """Building number → the gazetteer's buildings of that number, in the estate
        ``place`` if there is one, else anywhere under the grid."""
        if place is None:
            return self._buildings_under.get(grid_id, {})
        return {
            found[0][1]: [i for i in items if i.kind != "household"]
            for found, items in place.numbered.items()
            if len(found) == 1 and found[0][0] == BUILDING and any(i.kind != "household" for i in items)
        }

    def _scope_place(self, scope: str | None, grid_id: int) -> _Place | None:
        if scope is None:
            return None
        return next((p for p in self._by_key.get(scope, ()) if p.item.grid_id == grid_id), None)

    def match_building(self, base: RouteResult | int, digits: str, scope: str | None = None) -> RouteResult | None:
        """A building number keyed in (or said) for a place matched only in part: ``base``
        is the partial match, or its grid id (and ``scope``) as a caller kept them. The
        building's grid if exactly one building of that number lies in the estate
        (``scope``) or else under the grid; ``None`` if none or several do (the case stays
        where ``base`` put it)."""
        number = parse_number("".join(ch for ch in canonical(digits) if ch.isdigit()))
        if number is None:
            return None
        if isinstance(base, RouteResult):
            grid_id, scope, confidence = base.grid_id, base.scope, base.confidence
            under = base.place or str(grid_id)
        else:
            grid_id, confidence, under = int(base), 1.0, scope or str(base)
        items = self._building_numbers(self._scope_place(scope, grid_id), grid_id).get(number, [])
        if len({i.grid_id for i in items}) != 1:
            return None
        item = items[0]
        steps = [step("building_number", number=number, under=under, place=item.name)]
        return self._result(item.grid_id, confidence, steps,
                            Candidate(item, confidence, "keypad", str(number), 0, 0, numbered=True))

    # -- a choice between close candidates -------------------------------------------------

    def pick(self, text: str, choices: Sequence[tuple[int, str]]) -> int | None:
        """Which of ``choices`` ((grid id, name), as ``RouteResult.choices``) an answer names:
        its index, or ``None`` (neither, unsure, or nothing of them). The answer is matched by
        this matcher restricted to the candidates (readings, accents, a character off); the
        part they share may be left out (九幢 for 洋坊新村九幢, 金桥 for 金桥新村), and
        "第二个" or a bare "二" names the second. Two candidates both heard: none."""
        key, _ = self._repaired(canonical(text))
        names = [canonical(name) for _, name in choices]
        if not key or len(choices) < 2 or _NEITHER.search(key):
            return None
        ordinal = _ORDINAL.fullmatch(key)
        if ordinal is not None:
            n = int(ordinal.group(1))
            return n - 1 if 1 <= n <= len(choices) else None
        kinds = {(e.name, e.grid_id): e.kind for e in self.entries}
        restricted = Gazetteer([(name, kinds.get((name, grid), "place"), grid) for grid, name in choices],
                               self.min_confidence, self.parents, levels=self.levels, accents=self.accents)
        prefix, suffix = shared_ends(names)
        tries = [key]
        if prefix and not key.startswith(prefix):
            tries.append(prefix + key)
        if suffix and not key.endswith(suffix):
            tries += [t + suffix for t in list(tries)]
        for attempt in tries:
            found = restricted.match(attempt)
            if found is None:
                continue
            by_name = [i for i, (_, name) in enumerate(choices) if name == found.place]
            by_grid = [i for i, (grid, _) in enumerate(choices) if grid == found.grid_id]
            if len(by_name) == 1:
                return by_name[0]
            if len(by_grid) == 1 and not found.choices:
                return by_grid[0]
        return None

    # -- what the recogniser should expect ------------------------------------------------

    def phrases(self) -> AddressPhrases:
        """See ``address_phrases``."""
        if self._phrases is None:
            names: set[str] = set()
            for place in self._places.values():
                item = place.item
                if not place.standalone or item.kind.startswith("grid:") and item.kind not in (
                    "grid:community", "grid:street", "grid:district"
                ):
                    continue  # households' addresses are private; micro grid names are never said
                names.add(spoken(item.name))
                for items in place.numbered.values():
                    if all(i.kind != "household" for i in items):
                        names.add(spoken(items[0].name))
            words = sorted(names) + list(MEASURE_WORDS) + list(NUMERAL_WORDS) + list(FILLER_WORDS)
            phrases = tuple(dict.fromkeys(words))
            version = hashlib.sha256("\n".join(phrases).encode()).hexdigest()[:16]
            self._phrases = AddressPhrases(phrases, version)
        return self._phrases


def address_phrases(gazetteer: Gazetteer) -> AddressPhrases:
    """The phrase list for a recogniser's address turn, built from the gazetteer: the names
    of communities, estates, buildings (as said: 洋坊新村九幢), roads and landmarks, the
    measure words, the numerals and the words people put around an address. ``version``
    is a hash of the list: a caller keeps its recogniser's grammar while it is unchanged."""
    return gazetteer.phrases()


_DIGITS = re.compile(r"\d+")
# Repair words in canonical text (no punctuation): the last one says the address follows.
_REPAIR = re.compile(r"我?说错了|(?:不对)+|弄错了|错了|应该是|不是(?=是)")
_NEGATED = re.compile(r"不是(?!是)")
# An answer to "A, or B?" that takes neither.
_NEITHER = re.compile(r"都不是|都不对|哪个都不|两个都不|都没有|不是这")
# "第二个", "二", "按二" (numbers are digits by now): the n-th of the candidates read out.
_ORDINAL = re.compile(r"(?:按|选)?(?:第)?([0-9])(?:个|号)?(?:吧|啊|呀)?")


def shared_ends(names: Sequence[str]) -> tuple[str, str]:
    """The start and the end every name shares, leaving each name something of its own:
    洋坊新村7幢, 洋坊新村9幢 → (洋坊新村, 幢); 金桥新村, 金湖新村 → (金, 新村)."""
    if len(names) < 2:
        return "", ""
    shortest = min(len(n) for n in names)
    start = 0
    while start < shortest - 1 and len({n[start] for n in names}) == 1:
        start += 1
    while start and names[0][start - 1].isdigit():  # 洋坊新村12幢, 洋坊新村15幢: not 1 shared
        start -= 1
    end = 0
    while end < shortest - start - 1 and len({n[-1 - end] for n in names}) == 1:
        end += 1
    while end and names[0][-end].isdigit():
        end -= 1
    return names[0][:start], names[0][len(names[0]) - end:] if end else ""


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
