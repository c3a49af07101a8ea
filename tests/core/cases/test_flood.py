"""Floods and repeats from one sender (rules [intake.flood]): nothing is lost, a repeat is
a suggested duplicate of the earlier case and is not dispatched again, a burst beyond the
limit waits for an operator, and only a channel that may refuse (Open311) is refused."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlmodel import select

from core.actions import Petition
from core.cases import intake
from core.cases.flood import DUPLICATE, FLOOD
from core.cases.models import Case, CaseEvent, CaseStatus, Channel
from core.errors import TooManyPetitions
from core.places.models import GazetteerEntry
from core.platform import clock, rules
from core.platform.db import session_scope
from tests.core.district import build_district

POINT = {"latitude": 26.3905, "longitude": 117.7915}  # inside micro2, which has a grid worker
SAME = "楼道里有人飞线给电动车充电，很危险"


@pytest.fixture
def district(engine):
    intake.invalidate_routing()
    with session_scope(engine) as session:
        d = build_district(session)
        session.add(GazetteerEntry(name="罗布社区", kind="community", grid_id=d.grids["community"].id))
        return d



def file(engine, key: str, **kw):
    base = dict(channel=Channel.chat, description=SAME, idempotency_key=key, **POINT)
    base.update(kw)
    return intake.file_petition(engine, Petition(**base))


def cases(engine) -> list[Case]:
    with session_scope(engine) as session:
        return list(session.exec(select(Case).order_by(Case.id)).all())


def events(engine, action: str) -> list[CaseEvent]:
    with session_scope(engine) as session:
        return list(session.exec(select(CaseEvent).where(CaseEvent.action == action).order_by(CaseEvent.id)).all())


def test_fifteen_identical_petitions_from_one_chat_dispatch_once(engine, district):
    rid = district.resident.id
    results = [file(engine, f"chat|77|{i}", resident_id=rid) for i in range(15)]

    assert [r.dispatched for r in results] == [True] + [False] * 14
    first = results[0].case.number
    stored = cases(engine)
    assert len(stored) == 15  # none lost
    assert all(c.description == SAME for c in stored)
    assert stored[0].status == CaseStatus.dispatched
    for case, result in zip(stored[1:], results[1:], strict=True):
        assert case.status == CaseStatus.received
        assert DUPLICATE in case.flags
        assert result.held.reason == "duplicate" and result.held.duplicate_of == first
        # still placed and classified for the operator who decides
        assert case.grid_id == district.grids["micro2"].id and case.category_id is not None
    assert len(events(engine, "dispatch")) == 1
    holds = events(engine, "hold")
    assert len(holds) == 14 and {h.data["duplicate_of"] for h in holds} == {first}
    assert all(h.data["similarity"] == 100.0 for h in holds)
    # beyond max_petitions they are also many: the duplicate (the more telling reason) is said
    assert FLOOD not in (stored[-1].flags or [])


def test_a_parallel_burst_from_one_sender_is_counted_one_after_the_other(engine, district):
    rid = district.resident.id
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: file(engine, f"burst-{i}", resident_id=rid), range(12)))
    assert sum(r.dispatched for r in results) == 1
    assert len(cases(engine)) == 12
    assert len(events(engine, "dispatch")) == 1
    assert sum(1 for r in results if r.held and r.held.reason == "duplicate") == 11


def test_a_near_identical_petition_is_a_duplicate_a_different_one_is_not(engine, district):
    rid = district.resident.id
    file(engine, "a", resident_id=rid)
    near = file(engine, "b", resident_id=rid, description="楼道里有人飞线给电动车充电, 很危险!!")
    other = file(engine, "c", resident_id=rid, description="小区门口的路灯坏了，晚上一片漆黑",
                 latitude=26.3905, longitude=117.7915)
    assert near.held is not None and near.held.reason == "duplicate"
    assert other.held is None and other.dispatched


def test_the_same_words_from_another_sender_are_not_held(engine, district):
    file(engine, "a", contact_phone="13911112222")
    other = file(engine, "b", contact_phone="13933334444")
    assert other.dispatched and other.held is None


def test_the_same_phone_in_another_spelling_is_the_same_sender(engine, district):
    file(engine, "a", channel=Channel.open311, contact_phone="13911112222")
    again = file(engine, "b", channel=Channel.hotline, contact_phone="+86 139-1111-2222")
    assert again.held is not None and again.held.reason == "duplicate"


def test_a_closed_or_merged_earlier_case_is_not_a_duplicate_to_follow(engine, district):
    from core import actions

    first = file(engine, "a", contact_phone="13911112222")
    with session_scope(engine) as session:
        case = actions.get_case(session, first.case.id)
        actions.return_case(session, case, actor="t", reason="不是本网格")
        actions.close(session, case, actor="t", reason="withdrawn")
    again = file(engine, "b", contact_phone="13911112222")
    assert again.held is None and again.dispatched


def test_more_petitions_than_the_limit_wait_for_an_operator(engine, district, override):
    override("[intake.flood]\nmax_petitions = 3\nrefuse_above = 10\n")
    start = clock.utcnow()
    clock.freeze(start)
    words = ["路灯不亮了", "楼道飞线充电", "三号楼前面那盏路灯一直灯不亮", "有人在车棚里给电动车充电", "河边的路灯不亮"]
    results = [file(engine, f"k{i}", contact_phone="13911112222", description=w) for i, w in enumerate(words)]
    assert [r.dispatched for r in results] == [True, True, True, False, False]
    assert [r.held.reason if r.held else None for r in results] == [None, None, None, "flood", "flood"]
    stored = cases(engine)
    assert len(stored) == 5 and all(FLOOD in (c.flags or []) for c in stored[3:])
    assert stored[3].status == CaseStatus.received
    # the window passes: the sender is like anybody else again
    clock.freeze(start + timedelta(minutes=61))
    later = file(engine, "k9", contact_phone="13911112222", description="广场边上的路灯坏了")
    assert later.held is None and later.dispatched


def test_open311_is_refused_above_the_hard_cap_and_the_hotline_never(engine, district, override):
    override("[intake.flood]\nmax_petitions = 2\nrefuse_above = 3\n")
    phone = "13911112222"
    start = clock.utcnow()
    clock.freeze(start)
    for i, w in enumerate(["路灯不亮了", "楼道飞线充电", "垃圾堆在楼下三天"]):
        file(engine, f"o{i}", channel=Channel.open311, contact_phone=phone, description=w)
    clock.freeze(start + timedelta(minutes=10))
    with pytest.raises(TooManyPetitions) as refused:
        file(engine, "o3", channel=Channel.open311, contact_phone=phone, description="井盖坏了")
    # the oldest of the window ages out 50 minutes from now
    assert 49 * 60 <= refused.value.retry_after <= 50 * 60 + 1
    assert refused.value.code == "intake.too_many_petitions"
    assert len(cases(engine)) == 3  # refused before anything was written
    # a retry of a request filed before is answered with its case, never refused
    again = file(engine, "o0", channel=Channel.open311, contact_phone=phone, description="路灯不亮了")
    assert not again.created
    # the hotline keeps every caller's words: held, not refused
    called = file(engine, "h1", channel=Channel.hotline, contact_phone=phone, description="井盖坏了",
                  transcript=[{"text": "井盖坏了"}])
    assert called.created and not called.dispatched and called.held.reason == "flood"


def test_a_retried_filing_reports_the_same_hold(engine, district):
    rid = district.resident.id
    file(engine, "a", resident_id=rid)
    held = file(engine, "b", resident_id=rid)
    again = file(engine, "b", resident_id=rid)
    assert not again.created and again.held == held.held


def test_flood_rules_are_checked(override):
    with pytest.raises(rules.RulesError, match="refuse_above"):
        override("[intake.flood]\nmax_petitions = 10\nrefuse_above = 5\n")
        rules.load_rules()
    with pytest.raises(rules.RulesError, match="refuse_channels"):
        override('[intake.flood]\nrefuse_channels = ["fax"]\n')
        rules.load_rules()
    with pytest.raises(rules.RulesError, match="duplicate_similarity"):
        override("[intake.flood]\nduplicate_similarity = 150\n")
        rules.load_rules()
