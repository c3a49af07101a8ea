"""`gridline categories sync` against a demo-loaded database with a district's
GRIDLINE_CATEGORIES file (Typer's runner in-process, the real database on both backends)."""

from __future__ import annotations

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from core import actions
from core.cases.intake import suggest_categories
from core.cases.models import Case, Category, Channel, Urgency
from core.deadlines.models import CategorySla
from core.people.models import AuditEntry, Department
from core.platform.db import session_scope
from core.platform.rules import CATEGORIES_ENV, DATA_DIR
from core.platform.settings import get_settings
from core.reference.demo import load_demo
from gridline.cli import app
from tests.support.serve import database_url

runner = CliRunner()

STREET_VENDING = """[[category]]
code = "street_vending"
name = "占道经营"
department = "urban_mgmt"
keywords = ["占道", "摆摊", "小摊", "地摊", "流动摊贩", "摊贩", "占用人行道", "店外经营", "战道"]
duplicate_radius_m = 100
duplicate_window_hours = 72
sla = { normal = [4, 24], urgent = [2, 8], emergency = [1, 4] }
"""
NEW = """
[[department]]
code = "animal_control"
name = "区畜牧兽医中心"
phone = "0598-7512310"

[[category]]
code = "stray_dogs"
name = "流浪犬"
department = "animal_control"
keywords = ["流浪狗", "野狗", "狗咬人"]
duplicate_radius_m = 200
duplicate_window_hours = 48
sla = { normal = [4, 24], urgent = [1, 8], emergency = [0.5, 4] }
"""


def district_file() -> str:
    """The packaged file as a district changed it: street vending gone, the streetlight
    renamed, the sewer's normal deadlines shorter, a department and a category added."""
    text = (DATA_DIR / "categories.toml").read_text("utf-8")
    for old, new in ((STREET_VENDING, ""), ('name = "路灯故障"', 'name = "路灯不亮"'),
                     ('sla = { normal = [4, 24], urgent = [2, 8], emergency = [1, 4] }\n\n[[category]]\ncode = "water_supply"',
                      'sla = { normal = [3, 20], urgent = [2, 8], emergency = [1, 4] }\n\n[[category]]\ncode = "water_supply"')):
        assert old in text
        text = text.replace(old, new)
    return text + NEW


@pytest.fixture
def demo_db(engine, monkeypatch, tmp_path):
    monkeypatch.setenv("GRIDLINE_DATABASE_URL", database_url(engine))
    monkeypatch.setenv("GRIDLINE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    with session_scope(engine) as session:
        load_demo(session)
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description="门口有人摆摊", contact_phone="13800000001",
            category_code="street_vending"), actor="hotline")
    yield case.number
    get_settings.cache_clear()


def snapshot(engine) -> dict:
    with session_scope(engine) as session:
        return {
            "categories": {c.code: (c.name, c.department_id, c.active, tuple(c.keywords or []), c.duplicate_radius_m,
                                    c.duplicate_window_hours) for c in session.exec(select(Category)).all()},
            "slas": {(s.category_id, s.urgency): (s.response_hours, s.resolution_hours)
                     for s in session.exec(select(CategorySla)).all()},
            "departments": {d.code: (d.name, d.phone) for d in session.exec(select(Department)).all()},
            "audit": [(a.action, a.actor) for a in session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()],
        }


def test_sync_plans_then_applies_a_changed_file_once(engine, demo_db, override):
    assert runner.invoke(app, ["categories", "sync"]).output.startswith("categories are in sync")
    override(district_file(), CATEGORIES_ENV)
    before = snapshot(engine)

    dry = runner.invoke(app, ["categories", "sync", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would change:" in dry.output and "nothing written (dry run)" in dry.output
    for line in ("departments added (1): animal_control", "categories added (1): stray_dogs",
                 "categories changed (2): streetlight sewer_blocked", "categories retired (1): street_vending"):
        assert line in dry.output, dry.output
    assert snapshot(engine) == before  # a dry run changes nothing, audit log included

    done = runner.invoke(app, ["categories", "sync"])
    assert done.exit_code == 0 and "changed:" in done.output and "stray_dogs" in done.output, done.output
    after = snapshot(engine)
    cats = after["categories"]
    assert cats["streetlight"][0] == "路灯不亮" and cats["street_vending"][2] is False
    assert cats["stray_dogs"][0] == "流浪犬" and cats["stray_dogs"][2] is True
    assert after["departments"]["animal_control"] == ("区畜牧兽医中心", "0598-7512310")
    with session_scope(engine) as session:
        ids = {c.code: c.id for c in session.exec(select(Category)).all()}
        dept = session.exec(select(Department).where(Department.code == "animal_control")).one()
        assert session.get(Category, ids["stray_dogs"]).department_id == dept.id
        # The retired category keeps its case and its rows; routing no longer suggests it.
        case = session.exec(select(Case).where(Case.number == demo_db)).one()
        assert case.category_id == ids["street_vending"]
        assert "street_vending" not in [c.code for c, _ in suggest_categories(session, "门口有人摆摊占道经营")]
        assert [c.code for c, _ in suggest_categories(session, "小区里有野狗")] == ["stray_dogs"]
    assert after["slas"][(ids["sewer_blocked"], Urgency.normal)] == (3.0, 20.0)
    assert after["slas"][(ids["stray_dogs"], Urgency.emergency)] == (0.5, 4.0)
    assert {k: v for k, v in after["slas"].items() if k[0] not in (ids["sewer_blocked"], ids["stray_dogs"])} == \
        {k: v for k, v in before["slas"].items() if k[0] != ids["sewer_blocked"]}

    with session_scope(engine) as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "category.sync",
                                                      AuditEntry.actor == "cli")).one()
    assert entry.target_type == "category"
    assert entry.detail["counts"] == {"departments_added": 1, "departments_changed": 0, "added": 1, "changed": 2,
                                      "retired": 1, "reactivated": 0, "unchanged": 13}
    assert entry.detail["retired"] == ["street_vending"] and entry.detail["added"] == ["stray_dogs"]

    again = runner.invoke(app, ["categories", "sync"])
    assert again.exit_code == 0 and again.output.startswith("categories are in sync (16 unchanged)"), again.output
    assert snapshot(engine) == after  # a second run is a no-op: no change, no audit row


def test_a_retired_category_that_comes_back_is_active_again(engine, demo_db, override):
    override(district_file(), CATEGORIES_ENV)
    assert runner.invoke(app, ["categories", "sync"]).exit_code == 0
    override((DATA_DIR / "categories.toml").read_text("utf-8"), CATEGORIES_ENV)
    back = runner.invoke(app, ["categories", "sync"])
    assert "categories active again (1): street_vending" in back.output, back.output
    assert "categories retired (1): stray_dogs" in back.output
    with session_scope(engine) as session:
        assert session.exec(select(Category).where(Category.code == "street_vending")).one().active
        assert "street_vending" in [c.code for c, _ in suggest_categories(session, "门口有人摆摊占道经营")]
        assert [a.detail["counts"]["reactivated"] for a in session.exec(
            select(AuditEntry).where(AuditEntry.action == "category.sync", AuditEntry.actor == "cli")
            .order_by(AuditEntry.id)).all()] == [0, 1]


def test_a_bad_file_is_one_line_and_changes_nothing(engine, demo_db, override):
    path = override(district_file().replace('department = "animal_control"', 'department = "zoo"'), CATEGORIES_ENV)
    before = snapshot(engine)
    result = runner.invoke(app, ["categories", "sync"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"GRIDLINE_CATEGORIES={path}" in result.output and "unknown department 'zoo'" in result.output
    assert snapshot(engine) == before
