"""The writer of categories: a dry run plans exactly what the real run does, and a retired
category is kept for its cases but offered nowhere (routing, the bot's choices)."""

from __future__ import annotations

import copy

from sqlmodel import select

from chat.store import category_options
from core.actions.categories import sync_categories
from core.cases.models import Category
from core.people.models import AuditEntry
from core.platform.db import session_scope
from core.platform.rules import load_categories
from tests.core.district import build_district


def test_a_dry_run_plans_what_the_run_does_and_writes_nothing(engine):
    with session_scope(engine) as session:
        build_district(session)
    data = copy.deepcopy(load_categories())
    with session_scope(engine) as session:
        known = {c.code for c in session.exec(select(Category)).all()}
        audited = len(session.exec(select(AuditEntry)).all())
        plan = sync_categories(session, actor="test", data=data, dry_run=True)
        assert not plan.empty
        assert {c.code for c in session.exec(select(Category)).all()} == known
        assert len(session.exec(select(AuditEntry)).all()) == audited
    with session_scope(engine) as session:
        done = sync_categories(session, actor="test", data=data)
    assert done == plan
    assert set(done.added) == {c["code"] for c in data["category"]} - known
    assert set(done.retired) == known - {c["code"] for c in data["category"]}


def test_a_retired_category_is_not_offered_by_the_bot(engine):
    data = copy.deepcopy(load_categories())
    with session_scope(engine) as session:
        sync_categories(session, actor="test", data=data)
    assert "noise" in [code for code, _ in category_options(engine, "楼上装修噪音", limit=20)]
    data["category"] = [c for c in data["category"] if c["code"] != "noise"]
    with session_scope(engine) as session:
        plan = sync_categories(session, actor="test", data=data)
    assert plan.retired == ["noise"] and plan.unchanged == len(data["category"])
    offered = [code for code, _ in category_options(engine, "楼上装修噪音", limit=20)]
    assert "noise" not in offered and offered  # the others still are
