"""Merging a duplicate and undoing it (issue 26): the merge keeps what the duplicate was,
``unmerge`` gives it back within ``[merge] undo_hours`` and refuses after, in words; the
caller of a merged duplicate hears of the surviving case's progress. SQLite and PostgreSQL
(the ``engine`` fixture)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from core import actions
from core.actions import Petition
from core.cases.models import Attachment, Case, CaseEvent, CaseStatus, Channel
from core.errors import IllegalTransition
from core.people.models import Resident
from core.platform import clock, i18n
from core.platform.db import session_scope
from core.platform.models import Job
from tests.core.district import build_district

S = CaseStatus
MORNING = datetime(2026, 11, 17, 1, 0)  # Tuesday 09:00 in Shanghai


@pytest.fixture
def district(engine):
    with session_scope(engine) as session:
        return build_district(session)


def submit(engine, **kw) -> Case:
    base = dict(channel=Channel.hotline, description="9幢门口的路灯坏了三天了", contact_phone="+8613800138000",
                category_code="streetlight")
    base.update(kw)
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, Petition(**base), actor="test")
        return case


def events_of(session, case) -> list[CaseEvent]:
    return list(session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all())


def merge(engine, dup: Case, first: Case) -> Case:
    with session_scope(engine) as session:
        case = actions.get_case(session, dup.id)
        return actions.merge(session, case, actions.get_case(session, first.id), actor="console:op", reason="同一路灯")


def unmerge(engine, dup: Case) -> Case:
    with session_scope(engine) as session:
        return actions.unmerge(session, actions.get_case(session, dup.id), actor="console:op", reason="不是同一件事")


def test_unmerge_gives_the_duplicate_back_as_it_was(engine, district, tmp_path):
    clock.freeze(MORNING)
    first = submit(engine)
    dup = submit(engine, contact_phone="+8613900139000", flags=("suggested_duplicate", "low_confidence"))
    with session_scope(engine) as session:  # dispatched, with its deadlines, and a photo
        case = actions.get_case(session, dup.id)
        actions.dispatch(session, case, actor="op", grid_id=district.grids["micro1"].id)
        session.add(Attachment(case_id=case.id, kind="photo", path="cases/x/photo.jpg", mime_type="image/jpeg",
                               size=10))
    with session_scope(engine) as session:
        before = actions.get_case(session, dup.id)
        kept = {k: getattr(before, k) for k in ("status", "worker_id", "owner_level", "dispatched_at", "response_due",
                                                "resolution_due", "flags", "resident_id", "contact_phone",
                                                "grid_id", "department_id", "description")}
    assert kept["status"] == S.dispatched and kept["response_due"] is not None
    assert kept["flags"] == ["low_confidence"]  # dispatch settled suggested_duplicate

    clock.freeze(MORNING + timedelta(hours=3))
    merged = merge(engine, dup, first)
    assert merged.status == S.merged and merged.worker_id is None and merged.flags is None

    clock.freeze(MORNING + timedelta(hours=26))  # 23 h after the merge: still within the day
    back = unmerge(engine, dup)
    with session_scope(engine) as session:
        back = actions.get_case(session, dup.id)
        assert {k: getattr(back, k) for k in kept} == kept
        assert back.merged_into_id is None
        assert [a.path for a in session.exec(select(Attachment).where(Attachment.case_id == dup.id))] == \
            ["cases/x/photo.jpg"]
        mine = events_of(session, back)
        theirs = events_of(session, first)
    assert [e.action for e in mine[-2:]] == ["merge", "unmerge"]
    assert mine[-1].from_status == S.merged and mine[-1].to_status == S.dispatched
    assert mine[-1].data == {"from": first.number} and mine[-1].reason == "不是同一件事"
    assert [e.action for e in theirs[-2:]] == ["absorb", "unabsorb"]
    assert theirs[-1].data == {"duplicate": dup.number} and theirs[-1].to_status == theirs[-1].from_status
    # and it can be merged again, then undone again: the latest merge is the one undone
    merge(engine, dup, first)
    assert unmerge(engine, dup).status == S.dispatched


def test_unmerge_after_the_window_is_refused_in_words_and_writes_nothing(engine, district):
    clock.freeze(MORNING)
    first, dup = submit(engine), submit(engine)
    merge(engine, dup, first)
    clock.freeze(MORNING + timedelta(hours=24, minutes=1))
    with session_scope(engine) as session:
        count = len(events_of(session, dup))
    with pytest.raises(IllegalTransition) as refused:
        unmerge(engine, dup)
    assert refused.value.code == "unmerge.too_late"
    said = i18n.say("zh", f"errors.{refused.value.code}", refused.value.params)
    assert "不能再撤销合并" in said and "24" in said and dup.number in said
    assert "hours" not in said
    with session_scope(engine) as session:
        after = actions.get_case(session, dup.id)
        assert after.status == S.merged and after.merged_into_id == first.id
        assert len(events_of(session, after)) == count
        assert actions.undo_deadline(session, after) == MORNING + timedelta(hours=24)


def test_only_a_merged_case_can_be_unmerged(engine, district):
    case = submit(engine)
    with pytest.raises(IllegalTransition) as refused:
        unmerge(engine, case)
    assert refused.value.code == "case.illegal_transition"
    assert "撤销合并" in i18n.say("zh", "errors.case.illegal_transition", refused.value.params)


def test_a_shredded_duplicate_stays_merged(engine, district, tmp_path):
    first, dup = submit(engine), submit(engine)
    merge(engine, dup, first)
    with session_scope(engine) as session:
        actions.shred(session, actions.get_case(session, dup.id), actor="cli", data_dir=tmp_path)
    with pytest.raises(IllegalTransition) as refused:
        unmerge(engine, dup)
    assert refused.value.code == "unmerge.shredded"
    with session_scope(engine) as session:
        assert actions.undo_deadline(session, actions.get_case(session, dup.id)) is None


def test_the_caller_of_a_merged_duplicate_hears_of_the_surviving_cases_progress(engine, district):
    """Both callers get the follow-up: the duplicate's caller is told by chat and SMS (under
    the number they were given) when the case their words joined moves on; one caller who
    rang twice hears it once; after an undone merge, the duplicate's caller no longer does."""
    with session_scope(engine) as session:
        chatter = Resident(name="林秀英", phone="+8613700137000", chat_id="777001")
        session.add(chatter)
        session.flush()
        chatter_id = chatter.id
    first = submit(engine, contact_phone="+8613800138000")
    by_chat = submit(engine, channel=Channel.chat, contact_phone=None, resident_id=chatter_id)
    second_call = submit(engine, contact_phone="+8613911112222")
    same_caller = submit(engine, contact_phone="+8613800138000")
    for dup in (by_chat, second_call, same_caller):
        merge(engine, dup, first)
    with session_scope(engine) as session:
        actions.dispatch(session, actions.get_case(session, first.id), actor="op",
                         grid_id=district.grids["micro1"].id)
        sms = [j.payload for j in session.exec(select(Job).where(Job.kind == "sms_progress")
                                               .order_by(Job.id)).all()]
        chat = [j.payload for j in session.exec(select(Job).where(Job.kind == "notify_resident")
                                                .order_by(Job.id)).all()]
    dispatched_sms = [p["case_id"] for p in sms if p["status"] == "dispatched"]
    assert dispatched_sms == [first.id, second_call.id]  # the repeat caller is told once
    told = [(p["case"], p["chat_id"], p["status"]) for p in chat if p["status"] == "dispatched"]
    assert told == [(by_chat.number, "777001", "dispatched")]

    unmerge(engine, second_call)
    with session_scope(engine) as session:
        case = actions.get_case(session, first.id)
        actions.accept(session, case, actor="w")
        accepted = [j.payload for j in session.exec(select(Job).where(Job.kind == "notify_resident")).all()
                    if j.payload["status"] == "accepted"]
    assert [p["case"] for p in accepted] == [by_chat.number]
