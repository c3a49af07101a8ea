"""A small hand-made district for action tests: one grid per level down to two micro
grids, somebody on duty at every level, two categories with deadlines, the 2026 calendar."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from core.cases.models import Category, Urgency
from core.deadlines.calendar import bundled_calendar_files, load_calendar_file, sync_calendar_days
from core.deadlines.models import CategorySla
from core.people.models import Department, Resident, Worker, WorkerGrid, WorkerRole
from core.places.models import Grid, GridLevel, Household


@dataclass
class District:
    grids: dict[str, Grid]
    workers: dict[str, Worker]
    categories: dict[str, Category]
    resident: Resident


def square(lon: float, lat: float, size: float = 0.001) -> dict:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def build_district(session: Session) -> District:
    grids: dict[str, Grid] = {}
    parent = None
    for code, name, level in [
        ("350499", "清溪区", GridLevel.district),
        ("350499001", "城关街道", GridLevel.street),
        ("350499001001", "罗布社区", GridLevel.community),
        ("35049900100101", "洋坊片区", GridLevel.area),
    ]:
        grid = Grid(code=code, name=name, level=level, parent_id=parent.id if parent else None)
        session.add(grid)
        session.flush()
        grids[level.value] = parent = grid
    for i, lon in enumerate((117.790, 117.791), start=1):
        grid = Grid(code=f"35049900100101{i:02d}", name=f"洋坊新村{i}号微网格", level=GridLevel.micro,
                    parent_id=parent.id, geometry=square(lon, 26.390))
        session.add(grid)
        session.flush()
        grids[f"micro{i}"] = grid

    workers: dict[str, Worker] = {}
    duty = [("W-M1", "陈炳光", WorkerRole.micro_leader, "micro1", True),
            ("W-M2", "林秀英", WorkerRole.grid_worker, "micro2", False),
            ("W-A", "张建国", WorkerRole.grid_leader, "area", True),
            ("W-C", "王丽华", WorkerRole.grid_leader, "community", True),
            ("W-S", "李志强", WorkerRole.grid_leader, "street", True),
            ("W-D", "刘海峰", WorkerRole.grid_leader, "district", True)]
    for code, name, role, grid_key, leader in duty:
        worker = Worker(code=code, name=name, role=role, phone=f"+86139000000{len(workers):02d}")
        session.add(worker)
        session.flush()
        session.add(WorkerGrid(worker_id=worker.id, grid_id=grids[grid_key].id, is_leader=leader))
        workers[code] = worker

    dept = Department(code="chengguan", name="城管局")
    session.add(dept)
    session.flush()
    categories: dict[str, Category] = {}
    for code, name, words, hours in [
        ("streetlight", "路灯", ["路灯", "灯不亮"], (4, 37.5)),
        ("flying_lead", "飞线充电", ["飞线", "电动车充电"], (1, 8)),
    ]:
        category = Category(code=code, name=name, department_id=dept.id, keywords=words,
                            duplicate_radius_m=150, duplicate_window_hours=72)
        session.add(category)
        session.flush()
        for urgency in Urgency:
            session.add(CategorySla(category_id=category.id, urgency=urgency,
                                    response_hours=hours[0], resolution_hours=hours[1]))
        categories[code] = category

    household = Household(code="H0001", address="罗布社区洋坊新村9幢2单元301室", grid_id=grids["micro1"].id)
    session.add(household)
    session.flush()
    resident = Resident(name="陈阿婆", phone="+8613800138000", household_id=household.id)
    session.add(resident)
    for path in bundled_calendar_files():
        sync_calendar_days(session, load_calendar_file(path))
    session.flush()
    return District(grids, workers, categories, resident)
