"""The fictional demo district 清溪区, modelled on the districts in the seed articles.

Everything is generated from ``random.Random(seed)``, so a given seed always yields the same
names, phone numbers and addresses.

Grid codes are hierarchical, each level appending digits to its parent's code::

    350499            district   清溪区                      6 digits (an administrative division code)
    350499001         street     虬江街道                    + 3
    350499001001      community  罗布社区                    + 3
    35049900100101    area       罗布社区第1片区 (洋坊新村)  + 2
    3504990010010105  micro      罗布社区第5微网格           + 2

Layout: the district is a rectangle of 9 × 6 micro grids, each 0.0025° of longitude by
0.0020° of latitude (≈ 250 m × 220 m) with its north-west corner at 26.397 N, 117.780 E.
Communities are vertical strips (罗布 3 columns wide, the others 2), each cut into three
areas of two rows; every area is one housing estate. Corner coordinates are computed from
integer lattice indices, so neighbouring grids share their edges exactly, and the boundary of
every area, community, street and the district is the shapely union of its micro grids.

Addresses read like "罗布社区洋坊新村9幢2单元301室": each micro grid holds two buildings
(幢) of its area's estate, numbered across the estate. The gazetteer maps administrative
names (kind ``community``), short aliases (``alias``, "罗布"), estates (``building`` → the
area grid), buildings ("洋坊新村9幢" → the micro grid), roads (``street``) and landmarks
(``landmark`` → a micro grid).

People on duty, so that dispatch and escalation always find an owner: a leader (role
``grid_leader``, ``is_leader``) for the district, each street, each community (网格长) and
each area; a second, non-leading officer at the district command centre and at each
community; a grid worker (``grid_worker``) for every micro grid, some covering two
neighbouring ones; and in some micro grids a resident volunteer as micro-grid leader
(``micro_leader``, ``is_leader``: cases there go to them first, as in 罗布社区, where the
micro-grid leaders "主动去发现问题、处理问题").
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass

from shapely.geometry import box, mapping, shape
from shapely.geometry.polygon import orient
from shapely.ops import unary_union
from sqlmodel import Session, func, select

from core.actions import categories
from core.deadlines.calendar import bundled_calendar_files, load_calendar_file, sync_calendar_days
from core.errors import DomainError, InvalidInput
from core.people.models import Resident, Worker, WorkerGrid, WorkerRole
from core.places.models import GazetteerEntry, Grid, GridLevel, Household
from core.places.routing import normalise_phone
from core.platform.rules import load_categories

DISTRICT_CODE = "350499"
DISTRICT_NAME = "清溪区"

# North-west corner of the district and the size of one micro grid, in degrees.
LON0 = 117.7800
LAT0 = 26.3970
DLON = 0.0025
DLAT = 0.0020
ROWS = 6  # three areas of two rows in every community
AREA_ROWS = 2

# (street code, street name, [(community name, short alias, columns, [estate per area])])
STREETS: list[tuple[str, str, list[tuple[str, str, int, list[str]]]]] = [
    ("001", "虬江街道", [
        ("罗布社区", "罗布", 3, ["洋坊新村", "罗布新苑", "东门小区"]),
        ("府前社区", "府前", 2, ["府前花园", "建设新村", "金桥小区"]),
    ]),
    ("002", "凤岗街道", [
        ("翠竹社区", "翠竹", 2, ["翠竹园", "南湖花园", "幸福里"]),
        ("金沙社区", "金沙", 2, ["金沙湾", "绿洲家园", "电厂宿舍"]),
    ]),
]

# Roads → the grid they belong to: a community alias with an optional area number, a street
# name, or the district.
ROADS: list[tuple[str, str, int | None]] = [
    ("清溪大道", DISTRICT_NAME, None),
    ("虬江路", "虬江街道", None),
    ("凤岗路", "凤岗街道", None),
    ("罗布路", "罗布", None),
    ("洋坊路", "罗布", 1),
    ("东门街", "罗布", 3),
    ("府前路", "府前", None),
    ("建设路", "府前", 2),
    ("翠竹路", "翠竹", None),
    ("南湖路", "翠竹", 2),
    ("金沙路", "金沙", None),
    ("电厂路", "金沙", 3),
    ("朝阳路", "翠竹", 1),  # 朝 read cháo, not zhāo
]

# Landmarks → (community alias, area number, micro number within the area).
LANDMARKS: list[tuple[str, str, int, int]] = [
    ("罗布菜市场", "罗布", 2, 3),
    ("虬江第二小学", "罗布", 1, 6),
    ("罗布社区卫生服务站", "罗布", 2, 1),
    ("罗布社区居委会", "罗布", 2, 2),
    ("洋坊公园", "罗布", 1, 3),
    ("东门幼儿园", "罗布", 3, 4),
    ("府前广场", "府前", 1, 1),
    ("府前社区居委会", "府前", 1, 2),
    ("清溪区人民医院", "府前", 2, 2),
    ("府前菜市场", "府前", 3, 3),
    ("翠竹社区居委会", "翠竹", 1, 1),
    ("翠竹社区卫生服务站", "翠竹", 1, 4),
    ("南湖小学", "翠竹", 2, 1),
    ("翠竹公园", "翠竹", 2, 3),
    ("金沙农贸市场", "金沙", 1, 2),
    ("凤岗卫生服务中心", "金沙", 1, 3),
    ("金沙社区居委会", "金沙", 2, 2),
    ("清溪汽车站", "金沙", 2, 4),
    ("金沙幼儿园", "金沙", 3, 1),
    # Names with characters of several readings (长, 重, 行, 朝): a recogniser writes any of them.
    ("长乐幼儿园", "翠竹", 3, 2),
    ("重阳养老院", "府前", 3, 4),
    ("工商银行凤岗支行", "金沙", 2, 1),
    ("清溪区行政服务中心", "府前", 1, 3),
    ("朝阳书店", "罗布", 3, 2),
]

BUILDINGS_PER_MICRO = 2
HOUSEHOLDS = 500

SURNAMES = (
    "陈林黄张李王吴刘蔡杨郑谢罗邓徐肖余叶曾邱詹游江范朱魏廖苏赖何卢傅高许周洪施沈庄彭"
)
GIVEN_CHARS = (
    "建国华明文秀英玉兰芳丽伟强军平志勇海春梅红霞金水德福荣清宝炳光俊杰晓慧婷静琳雪涛斌"
    "鑫宇浩然欣怡佳美桂凤淑珍振兴永生和顺成祥彬辉燕萍敏洁丹阳娟"
)
# Mainland mobile prefixes; numbers are random, so they are fictional in practice.
MOBILE_PREFIXES = (
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139",
    "150", "151", "152", "153", "155", "156", "157", "158", "159",
    "177", "180", "181", "182", "183", "185", "186", "187", "188", "189", "199",
)
LANDLINE_AREA = "598"  # 三明 (Sanming), where 沙县 lies


@dataclass(frozen=True)
class DemoSummary:
    districts: int
    streets: int
    communities: int
    areas: int
    micro_grids: int
    workers: int
    households: int
    residents: int
    gazetteer_entries: int
    departments: int
    categories: int
    calendar_days: int

    def __str__(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in asdict(self).items())


# -- geometry --------------------------------------------------------------------------


def _lon(col: int) -> float:
    # Rounded from the integer index, so two grids sharing an edge share the same floats.
    return round(LON0 + col * DLON, 7)


def _lat(row: int) -> float:
    return round(LAT0 - row * DLAT, 7)


def _geojson(geom) -> dict:
    """Shapely → GeoJSON with counter-clockwise outer rings (RFC 7946) and plain lists.
    ``simplify(0)`` drops the collinear corners a union leaves along straight edges."""
    geom = geom.simplify(0)
    if geom.geom_type == "Polygon":
        geom = orient(geom, 1.0)
    elif geom.geom_type == "MultiPolygon":
        geom = type(geom)([orient(p, 1.0) for p in geom.geoms])
    return json.loads(json.dumps(mapping(geom)))


# -- people ----------------------------------------------------------------------------


class _People:
    """Deterministic names and unique phone numbers, stored in the one spelling that
    ``core.places.routing.normalise_phone`` gives (mobiles as 11 digits, landlines with 0598)."""

    def __init__(self, rng: random.Random, taken_phones: set[str]):
        self.rng = rng
        self.phones = set(taken_phones)
        self.normalise = normalise_phone

    def name(self) -> str:
        r = self.rng
        given = r.choice(GIVEN_CHARS) if r.random() < 0.25 else r.choice(GIVEN_CHARS) + r.choice(GIVEN_CHARS)
        return r.choice(SURNAMES) + given

    def _unique(self, make) -> str:
        while True:
            number = self.normalise(make())
            if number not in self.phones:
                self.phones.add(number)
                return number

    def mobile(self) -> str:
        return self._unique(lambda: f"+86{self.rng.choice(MOBILE_PREFIXES)}{self.rng.randrange(10**8):08d}")

    def landline(self) -> str:
        return self._unique(lambda: f"+86{LANDLINE_AREA}{self.rng.choice('578')}{self.rng.randrange(10**6):06d}")


# -- the loader ------------------------------------------------------------------------


def load_demo(session: Session, *, seed: int = 2026) -> DemoSummary:
    """Load the demo district into a database without grids; refuses otherwise."""
    existing = session.exec(select(func.count()).select_from(Grid)).one()
    if existing:
        raise DomainError(
            f"the database already has {existing} grid(s); the demo district loads only into "
            "a database without grids",
            grids=existing,
            code="demo.not_empty",
        )
    rng = random.Random(seed)
    taken = {p for p in session.exec(select(Resident.phone).where(Resident.phone.is_not(None))).all()}
    taken |= {p for p in session.exec(select(Worker.phone).where(Worker.phone.is_not(None))).all()}
    people = _People(rng, taken)

    reference = load_categories()
    categories.sync_categories(session, actor="demo", data=reference)
    n_departments, n_categories = len(reference["department"]), len(reference["category"])
    calendar_days = _load_calendar(session)

    # -- grids, level by level so each level can point at its parent's id --------------
    micro_cells: list[dict] = []  # one per micro grid: codes, names, lattice cell, estate
    district = Grid(code=DISTRICT_CODE, name=DISTRICT_NAME, level=GridLevel.district)
    session.add(district)
    session.flush()

    streets: list[Grid] = []
    communities: list[tuple[Grid, str, Grid]] = []  # (community, alias, street)
    areas: list[tuple[Grid, str, str, Grid]] = []  # (area, estate, alias, community)
    community_cells: dict[str, list] = {}
    col = 0  # communities are laid out west to east in the order of STREETS
    for s_code, s_name, comms in STREETS:
        street = Grid(code=DISTRICT_CODE + s_code, name=s_name, level=GridLevel.street, parent_id=district.id)
        streets.append(street)
        for c_index, (c_name, alias, c_width, estates) in enumerate(comms, start=1):
            c_code = f"{street.code}{c_index:03d}"
            community_cells[c_code] = []
            seq = 0
            for a_index, estate in enumerate(estates, start=1):
                for r in range(AREA_ROWS):
                    for dc in range(c_width):
                        seq += 1
                        m_index = r * c_width + dc + 1
                        cell = {
                            "code": f"{c_code}{a_index:02d}{m_index:02d}",
                            "area_code": f"{c_code}{a_index:02d}",
                            "community_code": c_code,
                            "name": f"{c_name}第{seq}微网格",
                            "col": col + dc,
                            "row": (a_index - 1) * AREA_ROWS + r,
                            "estate": estate,
                            "community": c_name,
                            "alias": alias,
                            "area": a_index,
                            "micro": m_index,
                        }
                        cell["shape"] = box(_lon(cell["col"]), _lat(cell["row"] + 1),
                                            _lon(cell["col"] + 1), _lat(cell["row"]))
                        micro_cells.append(cell)
                        community_cells[c_code].append(cell)
            col += c_width
    district.geometry = _geojson(unary_union([c["shape"] for c in micro_cells]))
    for s in streets:
        s.geometry = _geojson(unary_union([c["shape"] for c in micro_cells if c["code"].startswith(s.code)]))
    session.add_all(streets)
    session.flush()

    street_by_code = {s.code: s for s in streets}
    for s_code, _, comms in STREETS:
        street = street_by_code[DISTRICT_CODE + s_code]
        for c_index, (c_name, alias, _, _) in enumerate(comms, start=1):
            c_code = f"{street.code}{c_index:03d}"
            shape = unary_union([c["shape"] for c in community_cells[c_code]])
            grid = Grid(code=c_code, name=c_name, level=GridLevel.community, parent_id=street.id,
                        geometry=_geojson(shape))
            communities.append((grid, alias, street))
    session.add_all([c[0] for c in communities])
    session.flush()

    for community, alias, _ in communities:
        estates = next(e for _, _, comms in STREETS for n, _, _, e in comms if n == community.name)
        for a_index, estate in enumerate(estates, start=1):
            a_code = f"{community.code}{a_index:02d}"
            shape = unary_union([c["shape"] for c in micro_cells if c["area_code"] == a_code])
            grid = Grid(code=a_code, name=f"{community.name}第{a_index}片区", level=GridLevel.area,
                        parent_id=community.id, geometry=_geojson(shape))
            areas.append((grid, estate, alias, community))
    session.add_all([a[0] for a in areas])
    session.flush()

    area_by_code = {a[0].code: a[0] for a in areas}
    micros: list[Grid] = []
    for cell in micro_cells:
        grid = Grid(code=cell["code"], name=cell["name"], level=GridLevel.micro,
                    parent_id=area_by_code[cell["area_code"]].id, geometry=_geojson(cell["shape"]))
        cell["grid"] = grid
        micros.append(grid)
    session.add_all(micros)
    session.flush()

    # -- people on duty --------------------------------------------------------------
    assignments: list[tuple[Worker, list[Grid], bool]] = []
    used_names: set[str] = set()

    def worker(role: WorkerRole, grids: list[Grid], leader: bool) -> None:
        name = people.name()
        while name in used_names:  # distinct workers are told apart by name in the console
            name = people.name()
        used_names.add(name)
        w = Worker(code=f"W{len(assignments) + 1:04d}", name=name, role=role, phone=people.mobile())
        assignments.append((w, grids, leader))

    worker(WorkerRole.grid_leader, [district], True)
    worker(WorkerRole.grid_worker, [district], False)  # duty officer at the command centre
    for street in streets:
        worker(WorkerRole.grid_leader, [street], True)
    for community, _, _ in communities:
        worker(WorkerRole.grid_leader, [community], True)  # 网格长
        worker(WorkerRole.grid_worker, [community], False)
    for area, _, _, _ in areas:
        worker(WorkerRole.grid_leader, [area], True)
        cells = [c for c in micro_cells if c["area_code"] == area.code]
        i = 0
        while i < len(cells):
            # Now and then one worker covers two neighbouring micro grids.
            if i + 1 < len(cells) and rng.random() < 0.3:
                worker(WorkerRole.grid_worker, [cells[i]["grid"], cells[i + 1]["grid"]], False)
                i += 2
            else:
                worker(WorkerRole.grid_worker, [cells[i]["grid"]], False)
                i += 1
    for cell in micro_cells:
        share = 0.5 if cell["alias"] == "罗布" else 0.25
        if rng.random() < share:
            worker(WorkerRole.micro_leader, [cell["grid"]], True)
    session.add_all([w for w, _, _ in assignments])
    session.flush()
    session.add_all([
        WorkerGrid(worker_id=w.id, grid_id=g.id, is_leader=leader)
        for w, grids, leader in assignments for g in grids
    ])

    # -- gazetteer -------------------------------------------------------------------
    entries: list[GazetteerEntry] = [GazetteerEntry(name=DISTRICT_NAME, kind="community", grid_id=district.id)]
    entries += [GazetteerEntry(name=s.name, kind="community", grid_id=s.id) for s in streets]
    community_by_alias: dict[str, Grid] = {}
    for community, alias, _ in communities:
        community_by_alias[alias] = community
        entries.append(GazetteerEntry(name=community.name, kind="community", grid_id=community.id))
        entries.append(GazetteerEntry(name=alias, kind="alias", grid_id=community.id))
    for area, estate, _, _ in areas:
        entries.append(GazetteerEntry(name=estate, kind="building", grid_id=area.id))
    for cell in micro_cells:
        for b in _buildings(cell):
            entries.append(GazetteerEntry(name=f"{cell['estate']}{b}幢", kind="building", grid_id=cell["grid"].id))
    by_name = {DISTRICT_NAME: district, **{s.name: s for s in streets}, **community_by_alias}
    for road, owner, area_no in ROADS:
        grid = by_name[owner]
        if area_no is not None:
            grid = area_by_code[f"{grid.code}{area_no:02d}"]
        entries.append(GazetteerEntry(name=road, kind="street", grid_id=grid.id))
    cell_at = {(c["alias"], c["area"], c["micro"]): c["grid"] for c in micro_cells}
    for name, alias, area_no, micro_no in LANDMARKS:
        entries.append(GazetteerEntry(name=name, kind="landmark", grid_id=cell_at[(alias, area_no, micro_no)].id))
    session.add_all(entries)

    # -- households and residents ----------------------------------------------------
    per_cell = [HOUSEHOLDS // len(micro_cells)] * len(micro_cells)
    for i in rng.sample(range(len(micro_cells)), HOUSEHOLDS % len(micro_cells)):
        per_cell[i] += 1
    households: list[tuple[Household, int]] = []
    for cell, count in zip(micro_cells, per_cell, strict=True):
        seen: set[str] = set()
        while len(seen) < count:
            building = rng.choice(_buildings(cell))
            unit = rng.randint(1, 3)
            room = rng.randint(1, 7) * 100 + rng.randint(1, 2)
            address = f"{cell['community']}{cell['estate']}{building}幢{unit}单元{room}室"
            if address in seen:
                continue
            seen.add(address)
            size = rng.choices((1, 2, 3), weights=(30, 45, 25))[0]
            h = Household(code=f"H{len(households) + 1:04d}", address=address, grid_id=cell["grid"].id)
            households.append((h, size))
    session.add_all([h for h, _ in households])
    session.flush()
    residents: list[Resident] = []
    for h, size in households:
        for k in range(size):
            if k == 0:
                # Some older residents only have the landline of the flat.
                phone = people.landline() if rng.random() < 0.06 else people.mobile()
            else:
                phone = people.mobile() if rng.random() < 0.6 else None
            residents.append(Resident(name=people.name(), phone=phone, household_id=h.id))
    session.add_all(residents)
    session.flush()

    # The flushes above bumped the routing indexes' version (core.places.indexes): every process,
    # this one included, routes with the new grids and gazetteer once they are committed.
    return DemoSummary(
        districts=1,
        streets=len(streets),
        communities=len(communities),
        areas=len(areas),
        micro_grids=len(micros),
        workers=len(assignments),
        households=len(households),
        residents=len(residents),
        gazetteer_entries=len(entries),
        departments=n_departments,
        categories=n_categories,
        calendar_days=calendar_days,
    )


def _buildings(cell: dict) -> list[int]:
    """Building numbers of a micro grid: two per micro grid, numbered across the estate."""
    first = (cell["micro"] - 1) * BUILDINGS_PER_MICRO + 1
    return list(range(first, first + BUILDINGS_PER_MICRO))


def _load_calendar(session: Session) -> int:
    rows = [row for path in bundled_calendar_files() for row in load_calendar_file(path)]
    return sync_calendar_days(session, rows)


def grid_centre(session: Session, code: str) -> tuple[float, float]:
    """(latitude, longitude) of the centre of a grid's polygon, for demos and tests."""
    grid = session.exec(select(Grid).where(Grid.code == code)).first()
    if grid is None or not grid.geometry:
        raise InvalidInput(f"no grid with a boundary has code {code!r}", code="demo.no_boundary", grid=code)
    point = shape(grid.geometry).representative_point()
    return point.y, point.x
