"""Import grids, workers and households from files a district office keeps.

Every importer reads and checks the whole file first and raises
:class:`core.errors.ImportFailed` with *all* the problems found, each with its line
number, before it writes anything: a file is imported completely or not at all.

Formats
-------
Grids — GeoJSON ``FeatureCollection``; each feature has ``properties``
``code``, ``name``, ``level`` (district/street/community/area/micro) and ``parent_code``
(left out, or null, only for a district), and a ``Polygon``/``MultiPolygon`` geometry in
WGS84 lon/lat, or null. No other properties are accepted (a typo like ``parent`` would
otherwise be silently ignored). A parent may be in the file or already in the database and
must be exactly one level up. Existing codes get the new name and, if the feature has one,
the new boundary; their level and parent must not change.

Workers — CSV with header ``code,name,role,phone,grid_codes,is_leader``; ``role`` is
``grid_worker``/``grid_leader``/``micro_leader`` (or 网格员/网格长/微网格长), ``grid_codes``
are separated by ``;``, ``is_leader`` is true/false (1/0, yes/no, 是/否, empty = false) and
applies to each listed grid. An existing code is updated and its grids replaced.

Households — CSV with header ``code,address,grid_code,resident_name,phone``, one row per
resident: further rows with the same household code (and the same address and grid) add
residents. ``grid_code`` must be a micro grid. A phone may belong to one resident only.

CSV files are UTF-8, with or without a byte-order mark (as Excel writes them).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from shapely.geometry import shape
from shapely.validation import explain_validity
from sqlmodel import Session, select

from core.actions.residents import rehouse
from core.errors import ImportFailed
from core.people.models import Resident, Worker, WorkerGrid, WorkerRole
from core.places.models import GRID_LEVELS, Grid, GridLevel, Household
from core.places.routing import valid_phone

Problems = list[tuple[int, str]]

GRID_PROPERTIES = ("code", "name", "level", "parent_code")
WORKER_COLUMNS = ("code", "name", "role", "phone", "grid_codes", "is_leader")
HOUSEHOLD_COLUMNS = ("code", "address", "grid_code", "resident_name", "phone")

# Lengths of the columns they end up in (core/places/models.py, core/people/models.py).
_CODE_MAX, _GRID_NAME_MAX, _WORKER_NAME_MAX, _ADDRESS_MAX = 32, 128, 64, 256

ROLE_ALIASES = {
    "网格员": WorkerRole.grid_worker,
    "网格长": WorkerRole.grid_leader,
    "微网格长": WorkerRole.micro_leader,
    "微网格员": WorkerRole.micro_leader,
}
_LEVELS = frozenset(lv.value for lv in GridLevel)
_TRUE = {"1", "true", "yes", "y", "是", "t"}
_FALSE = {"", "0", "false", "no", "n", "否", "f"}


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


# -- reading ---------------------------------------------------------------------------


def _read_text(path: Path, source: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFailed(source, [(line, f"not UTF-8 (byte {exc.start}); save the file as UTF-8")]) from None


def _phone(raw: str, errors: list[str]) -> str | None:
    """The stored spelling of a CSV phone cell (empty: ``None``); a bad one is added to ``errors``."""

    if not raw:
        return None
    phone = valid_phone(raw)
    if phone is None:
        errors.append(f"bad phone {raw!r}")
    return phone


# -- grids -----------------------------------------------------------------------------


_WS = re.compile(r"[ \t\n\r]*")


def _feature_lines(text: str) -> list[int]:
    """Line on which each element of the top-level ``features`` array starts.

    ``json`` gives no positions for nested values, so walk the top-level object and let
    ``raw_decode`` skip over each value. Only called on text that ``json.loads`` accepted.
    """
    dec = json.JSONDecoder()
    line, last = 1, 0

    def line_at(i: int) -> int:
        nonlocal line, last
        line += text.count("\n", last, i)
        last = i
        return line

    i = _WS.match(text, 0).end()
    if text[i : i + 1] != "{":
        return []
    i += 1
    lines: list[int] = []
    while True:
        i = _WS.match(text, i).end()
        if text[i] == "}":
            return lines
        if text[i] == ",":
            i = _WS.match(text, i + 1).end()
        key, i = dec.raw_decode(text, i)
        i = _WS.match(text, i).end() + 1  # the colon
        i = _WS.match(text, i).end()
        if key == "features" and text[i] == "[":
            lines = []
            i += 1
            while True:
                i = _WS.match(text, i).end()
                if text[i] == "]":
                    i += 1
                    break
                if text[i] == ",":
                    i = _WS.match(text, i + 1).end()
                lines.append(line_at(i))
                _, i = dec.raw_decode(text, i)
        else:
            _, i = dec.raw_decode(text, i)


def _positions(coords: Any, depth: int) -> list | None:
    """The positions in a nested coordinate array ``depth`` levels deep, or None if malformed."""
    if not isinstance(coords, list):
        return None
    if depth == 0:
        return [coords]
    out: list = []
    for item in coords:
        sub = _positions(item, depth - 1)
        if sub is None:
            return None
        out.extend(sub)
    return out


def _check_geometry(geom: Any) -> tuple[dict | None, list[str]]:
    """``(geometry to store, problems)``; a null geometry is fine."""
    if geom is None:
        return None, []
    if not isinstance(geom, dict):
        return None, ["geometry must be an object or null"]
    gtype = geom.get("type")
    if gtype not in ("Polygon", "MultiPolygon"):
        return None, [f"geometry type {gtype!r} is not supported (Polygon or MultiPolygon)"]
    coords = geom.get("coordinates")
    depth = 3 if gtype == "Polygon" else 4
    positions = _positions(coords, depth - 1)
    if not positions or any(not isinstance(p, list) or len(p) not in (2, 3) for p in positions):
        return None, [f"malformed {gtype} coordinates (want {'[' * depth}lon, lat{']' * depth})"]
    problems: list[str] = []
    for p in positions:
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in p):
            return None, [f"coordinate {p!r} is not a pair of numbers"]
        lon, lat = p[0], p[1]
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            hint = " (latitude and longitude swapped?)" if -90 <= lon <= 90 and -180 <= lat <= 180 else ""
            problems.append(f"coordinate [{lon}, {lat}] is outside WGS84 lon/lat ranges{hint}")
            return None, problems
    rings = [coords] if gtype == "Polygon" else coords
    for polygon in rings:
        for ring in polygon:
            if len(ring) < 4:
                return None, [f"a ring has {len(ring)} positions; a closed ring needs at least 4"]
            if ring[0] != ring[-1]:
                return None, [f"a ring is not closed: it starts at {ring[0]} and ends at {ring[-1]}"]
    try:
        shp = shape(geom)
    except Exception as exc:  # shapely's messages for malformed input are its own classes
        return None, [f"unreadable geometry: {exc}"]
    if shp.is_empty:
        return None, ["empty geometry (use null for a grid without a boundary)"]
    if not shp.is_valid:
        return None, [f"invalid geometry: {explain_validity(shp)}"]
    return {"type": gtype, "coordinates": coords}, []


def import_grids_geojson(session: Session, path: str | Path) -> int:
    """Insert or update grids from a GeoJSON FeatureCollection; returns the number of features."""
    path = Path(path)
    source = str(path)
    text = _read_text(path, source)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFailed(source, [(exc.lineno, f"JSON syntax error at column {exc.colno}: {exc.msg}")]) from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        found = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise ImportFailed(source, [(1, f"expected a GeoJSON FeatureCollection, found {found!r}")])
    features = doc.get("features")
    if not isinstance(features, list):
        raise ImportFailed(source, [(1, "the FeatureCollection has no \"features\" array")])
    if not features:
        raise ImportFailed(source, [(1, "the FeatureCollection has no features")])
    lines = _feature_lines(text)
    if len(lines) != len(features):  # duplicate "features" keys and the like
        lines = [1] * len(features)

    problems: Problems = []
    parsed: list[dict] = []  # valid features, with their line
    first_line: dict[str, int] = {}
    for index, feature in enumerate(features):
        line = lines[index]

        def bad(msg: str, line: int = line, index: int = index) -> None:
            problems.append((line, f"feature {index}: {msg}"))

        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            bad("not a GeoJSON Feature")
            continue
        props = feature.get("properties")
        if not isinstance(props, dict):
            bad("has no properties object")
            continue
        # A feature with a bad geometry or name still has its code, level and parent
        # checked against the others below, so one problem does not hide another.
        related = True
        unknown = sorted(set(props) - set(GRID_PROPERTIES))
        if unknown:
            bad(f"unknown propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
                f"(allowed: {', '.join(GRID_PROPERTIES)})")
        missing = [k for k in ("code", "name", "level") if props.get(k) in (None, "")]
        if missing:
            bad(f"missing propert{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}")
            related = related and "name" in missing and len(missing) == 1
        code = props.get("code")
        if code not in (None, "") and (not isinstance(code, str) or len(code) > _CODE_MAX):
            bad(f"code must be a string of at most {_CODE_MAX} characters, got {code!r}")
            related = False
        name = props.get("name")
        if name not in (None, "") and (not isinstance(name, str) or len(name) > _GRID_NAME_MAX):
            bad(f"name must be a string of at most {_GRID_NAME_MAX} characters")
        level = props.get("level")
        known_level = isinstance(level, str) and level in _LEVELS
        if level not in (None, "") and not known_level:
            bad(f"unknown level {level!r} (one of {', '.join(lv.value for lv in GridLevel)})")
            related = False
        parent = props.get("parent_code")
        if parent is not None and not isinstance(parent, str):
            bad(f"parent_code must be a string, got {parent!r}")
            related = False
        if level == "district" and parent not in (None, ""):
            bad("a district has no parent_code")
            related = False
        if known_level and level != "district" and parent in (None, ""):
            bad(f"missing property parent_code (only a district has none; this is {_a(level)})")
            related = False
        geometry, geo_problems = _check_geometry(feature.get("geometry"))
        for msg in geo_problems:
            bad(msg)
        if isinstance(code, str) and code:
            if code in first_line:
                bad(f"duplicate code {code} (first on line {first_line[code]})")
                related = False
            else:
                first_line[code] = line
        if related:
            parsed.append({"line": line, "index": index, "code": code, "name": name,
                           "level": GridLevel(level), "parent": parent or None, "geometry": geometry})

    # Parents and existing rows: one query for every code the file mentions.
    wanted = {f["code"] for f in parsed} | {f["parent"] for f in parsed if f["parent"]}
    in_db = {g.code: g for g in session.exec(select(Grid).where(Grid.code.in_(wanted))).all()} if wanted else {}
    db_parent_codes = {}
    parent_ids = {g.parent_id for g in in_db.values() if g.parent_id}
    if parent_ids:
        db_parent_codes = {g.id: g.code for g in session.exec(select(Grid).where(Grid.id.in_(parent_ids))).all()}
    in_file = {f["code"]: f for f in parsed}
    for f in parsed:
        def bad(msg: str, f: dict = f) -> None:
            problems.append((f["line"], f"feature {f['index']}: {msg}"))

        existing = in_db.get(f["code"])
        if existing is not None:
            if existing.level != f["level"]:
                bad(f"grid {f['code']} exists as {_a(existing.level.value)}; its level cannot change to {f['level'].value}")
            old_parent = db_parent_codes.get(existing.parent_id)
            if old_parent != f["parent"]:
                bad(f"grid {f['code']} exists under {old_parent or 'no parent'}; moving it to "
                    f"{f['parent'] or 'no parent'} is not done by import")
        if f["parent"] is None:
            continue
        parent = in_file.get(f["parent"]) or in_db.get(f["parent"])
        if parent is None:
            if f["parent"] not in first_line:  # a broken parent in the file is reported already
                bad(f"parent {f['parent']} is neither in the file nor in the database")
            continue
        parent_level = parent["level"] if isinstance(parent, dict) else parent.level
        if GRID_LEVELS.index(parent_level) != GRID_LEVELS.index(f["level"]) + 1:
            bad(f"parent {f['parent']} is {_a(parent_level.value)}; {_a(f['level'].value)}'s parent "
                f"must be {_a(GRID_LEVELS[GRID_LEVELS.index(f['level']) + 1].value)}")
    if problems:
        raise ImportFailed(source, sorted(problems))

    # Write top-down, so every parent has an id before its children need it.
    ids = {code: g.id for code, g in in_db.items()}
    for level in reversed(GRID_LEVELS):
        batch = [f for f in parsed if f["level"] == level]
        for f in batch:
            grid = in_db.get(f["code"])
            if grid is None:
                grid = Grid(code=f["code"], name=f["name"], level=f["level"],
                            parent_id=ids[f["parent"]] if f["parent"] else None, geometry=f["geometry"])
                session.add(grid)
                in_db[f["code"]] = grid
            else:
                grid.name = f["name"]
                if f["geometry"] is not None:  # a names-only file keeps the boundaries
                    grid.geometry = f["geometry"]
        session.flush()
        ids.update({f["code"]: in_db[f["code"]].id for f in batch})
    return len(parsed)


def export_grids_geojson(session: Session, path: str | Path) -> int:
    """Write every grid as a FeatureCollection that :func:`import_grids_geojson` reads
    back; parents come before their children. Returns the number of features."""
    grids = session.exec(select(Grid)).all()
    code_of = {g.id: g.code for g in grids}
    order = {lv: i for i, lv in enumerate(reversed(GRID_LEVELS))}
    grids = sorted(grids, key=lambda g: (order[g.level], g.code))
    features = []
    for g in grids:
        props: dict[str, Any] = {"code": g.code, "name": g.name, "level": g.level.value}
        if g.parent_id is not None:
            props["parent_code"] = code_of[g.parent_id]
        features.append({"type": "Feature", "properties": props, "geometry": g.geometry})
    # One feature per line: readable, diffable, and import errors point at a useful line.
    body = ",\n".join(json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in features)
    Path(path).write_text('{"type":"FeatureCollection","features":[\n' + body + "\n]}\n", "utf-8")
    return len(features)


# The CLI demo round-trips the demo district through this.
export_demo_geojson = export_grids_geojson


# -- CSV -------------------------------------------------------------------------------


def _read_csv(path: Path, source: str, columns: tuple[str, ...]) -> tuple[list[tuple[int, dict[str, str]]], Problems]:
    """``(line, row)`` pairs and the lines that could not be read as rows (a wrong number of
    fields), so the caller reports those with the problems of the other rows. Raises
    ImportFailed for a missing or wrong header, or a file with no rows at all."""
    text = _read_text(path, source)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFailed(source, [(1, f"empty file; the header must be {','.join(columns)}")]) from None
    except csv.Error as exc:
        raise ImportFailed(source, [(1, f"unreadable CSV: {exc}")]) from None
    header = [h.strip().lower() for h in header]
    problems: Problems = []
    missing = [c for c in columns if c not in header]
    if missing:
        problems.append((1, f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                            f"(the header must be {','.join(columns)})"))
    unknown = [h for h in header if h not in columns]
    if unknown:
        problems.append((1, f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}"))
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        problems.append((1, f"column{'s' if len(dupes) > 1 else ''} {', '.join(dupes)} appear more than once"))
    if problems:
        raise ImportFailed(source, problems)
    rows: list[tuple[int, dict[str, str]]] = []
    line = reader.line_num
    try:
        for values in reader:
            start, line = line + 1, reader.line_num  # a quoted field may span lines
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                problems.append((start, f"{len(values)} fields, expected {len(header)}"))
                continue
            rows.append((start, {h: v.strip() for h, v in zip(header, values, strict=True)}))
    except csv.Error as exc:  # the reader cannot go on after this; report it with the rest
        problems.append((reader.line_num, f"unreadable CSV: {exc}"))
    if not rows and not problems:
        raise ImportFailed(source, [(1, "no rows after the header")])
    return rows, problems


def _grid_ids(session: Session, codes: set[str]) -> dict[str, Grid]:
    if not codes:
        return {}
    return {g.code: g for g in session.exec(select(Grid).where(Grid.code.in_(sorted(codes)))).all()}


def import_workers_csv(session: Session, path: str | Path) -> int:
    """Insert or update workers and the grids they answer for; returns the number of rows."""
    path = Path(path)
    source = str(path)
    rows, problems = _read_csv(path, source, WORKER_COLUMNS)
    grids = _grid_ids(session, {c.strip() for _, r in rows for c in r["grid_codes"].split(";") if c.strip()})
    seen: dict[str, int] = {}
    parsed = []
    for line, r in rows:
        errors: list[str] = []
        code = r["code"]
        if not code:
            errors.append("empty code")
        elif len(code) > _CODE_MAX:
            errors.append(f"code longer than {_CODE_MAX} characters")
        elif code in seen:
            errors.append(f"duplicate code {code} (first on line {seen[code]})")
        else:
            seen[code] = line
        if not r["name"]:
            errors.append("empty name")
        elif len(r["name"]) > _WORKER_NAME_MAX:
            errors.append(f"name longer than {_WORKER_NAME_MAX} characters")
        role = ROLE_ALIASES.get(r["role"]) or WorkerRole.__members__.get(r["role"].lower())
        if role is None:
            errors.append(f"unknown role {r['role']!r} (one of {', '.join(x.value for x in WorkerRole)})")
        phone = _phone(r["phone"], errors)
        codes = [c.strip() for c in r["grid_codes"].split(";") if c.strip()]
        if not codes:
            errors.append("no grid_codes")
        unknown = [c for c in codes if c not in grids]
        if unknown:
            errors.append(f"unknown grid{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        flag = r["is_leader"].lower()
        if flag not in _TRUE | _FALSE:
            errors.append(f"is_leader must be true or false, got {r['is_leader']!r}")
        problems += [(line, e) for e in errors]
        if not errors:
            parsed.append((code, r["name"], role, phone, list(dict.fromkeys(codes)), flag in _TRUE))
    if problems:
        raise ImportFailed(source, sorted(problems))

    existing = {w.code: w for w in session.exec(select(Worker).where(Worker.code.in_(list(seen)))).all()}
    workers = []
    for code, name, role, phone, _, _ in parsed:
        worker = existing.get(code) or Worker(code=code, name=name)
        worker.name, worker.role, worker.phone = name, role, phone
        session.add(worker)
        workers.append(worker)
    session.flush()
    old_ids = [w.id for w in existing.values()]
    if old_ids:
        for link in session.exec(select(WorkerGrid).where(WorkerGrid.worker_id.in_(old_ids))).all():
            session.delete(link)
        session.flush()
    session.add_all([
        WorkerGrid(worker_id=w.id, grid_id=grids[c].id, is_leader=leader)
        for w, (_, _, _, _, codes, leader) in zip(workers, parsed, strict=True) for c in codes
    ])
    session.flush()
    return len(parsed)


def import_households_csv(session: Session, path: str | Path, *, actor: str = "import") -> int:
    """Insert or update households and their residents; returns the number of households.
    A registered person the file moves or renames is audited as ``actor`` (one row each)."""
    path = Path(path)
    source = str(path)
    rows, problems = _read_csv(path, source, HOUSEHOLD_COLUMNS)
    grids = _grid_ids(session, {r["grid_code"] for _, r in rows if r["grid_code"]})
    households: dict[str, dict] = {}
    phone_line: dict[str, int] = {}
    residents = []
    for line, r in rows:
        errors: list[str] = []
        code, address, grid_code = r["code"], r["address"], r["grid_code"]
        if not code:
            errors.append("empty code")
        elif len(code) > _CODE_MAX:
            errors.append(f"code longer than {_CODE_MAX} characters")
        if not address:
            errors.append("empty address")
        elif len(address) > _ADDRESS_MAX:
            errors.append(f"address longer than {_ADDRESS_MAX} characters")
        grid = grids.get(grid_code)
        if not grid_code:
            errors.append("empty grid_code")
        elif grid is None:
            errors.append(f"unknown grid {grid_code}")
        elif grid.level != GridLevel.micro:
            errors.append(f"grid {grid_code} is {_a(grid.level.value)}; households belong to micro grids")
        first = households.get(code)
        if first is not None and (first["address"], first["grid_code"]) != (address, grid_code):
            errors.append(f"duplicate code {code} with a different address or grid (first on line {first['line']})")
        phone = _phone(r["phone"], errors)
        if phone is not None and phone in phone_line:
            errors.append(f"phone {r['phone']} is already on line {phone_line[phone]}")
        elif phone is not None:
            phone_line[phone] = line
        if len(r["resident_name"]) > _WORKER_NAME_MAX:
            errors.append(f"resident_name longer than {_WORKER_NAME_MAX} characters")
        problems += [(line, e) for e in errors]
        if errors:
            continue
        if first is None:
            households[code] = {"line": line, "address": address, "grid_code": grid_code}
        if r["resident_name"] or phone:
            residents.append((line, code, r["resident_name"] or None, phone))

    # A phone registered to someone in another household would make routing by phone ambiguous.
    phones = sorted(phone_line)
    registered: dict[str, tuple[Resident, str | None]] = {}
    if phones:
        stmt = (select(Resident, Household.code).join(Household, Household.id == Resident.household_id, isouter=True)
                .where(Resident.phone.in_(phones)))
        registered = {res.phone: (res, hcode) for res, hcode in session.exec(stmt).all()}
    for line, code, _, phone in residents:
        if phone in registered and registered[phone][1] not in (None, code):
            problems.append((line, f"phone {phone} is registered to household {registered[phone][1]}"))
    if problems:
        raise ImportFailed(source, sorted(problems))

    existing = {h.code: h for h in session.exec(select(Household).where(Household.code.in_(list(households)))).all()}
    for code, h in households.items():
        row = existing.get(code)
        if row is None:
            row = existing[code] = Household(code=code, address=h["address"], grid_id=grids[h["grid_code"]].id)
        row.address = h["address"]
        row.grid_id = grids[h["grid_code"]].id
        session.add(row)
    session.flush()
    current = {}
    ids = [h.id for h in existing.values()]
    if ids:
        for res in session.exec(select(Resident).where(Resident.household_id.in_(ids))).all():
            current[(res.household_id, res.phone or "", res.name or "")] = res
    for _, code, name, phone in residents:
        hid = existing[code].id
        if phone and phone in registered:
            # the same person (by phone): adopt and rename
            rehouse(session, registered[phone][0], hid, name, actor=actor)
        elif (hid, "", name or "") in current or (phone and (hid, phone, name or "") in current):
            continue  # already there: importing the same file twice adds nobody
        else:
            session.add(Resident(name=name, phone=phone, household_id=hid))
    session.flush()
    return len(households)
