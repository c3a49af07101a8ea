"""Staff chats: invitations (signed, expiring, single use), linking rules, who checks and
who hears about a case change (rules data), and the jobs queued with the change."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from core import actions
from core.errors import InvalidInput
from core.people import staff
from core.people.models import AuditEntry, Resident, StaffChat, StaffInvite
from core.places.models import GridLevel
from core.platform import clock
from core.platform.db import session_scope
from core.platform.models import Job
from tests.core.district import build_district
from tests.core.staffing import dispatched, link

KEY = b"k" * 32
T0 = datetime(2026, 11, 17, 1, 0)  # Tuesday 09:00 Shanghai


@pytest.fixture
def district(engine):
    with session_scope(engine) as session:
        return build_district(session)


def _jobs(engine) -> list[dict]:
    with session_scope(engine) as session:
        return [j.payload for j in session.exec(select(Job).where(Job.kind == staff.MESSAGE_JOB).order_by(Job.id))]


def test_invite_token_is_compact_signed_and_tamper_evident():
    who = staff.Staff("worker", 12345, "W0001", "王")
    expires = datetime(2026, 12, 1, 8, 0)
    token = staff.invite_token(KEY, who, expires, "a1b2c3d4e5")
    assert len(f"w-{token}") <= 64 and all(c.isalnum() or c == "_" for c in token)
    claim = staff.read_invite(KEY, token)
    assert (claim.kind, claim.id, claim.expires_at, claim.nonce) == ("worker", 12345, expires, "a1b2c3d4e5")
    assert staff.read_invite(b"another key", token) is None
    body, _, sig = token.rpartition("_")
    other_id = staff.invite_token(KEY, staff.Staff("worker", 12346, "W0002", "李"), expires, "a1b2c3d4e5")
    assert staff.read_invite(KEY, other_id.rpartition("_")[0] + "_" + sig) is None  # a signature moved over
    for garbage in ("", "_", "w1_2_3", token + "x", "d" * 80):
        assert staff.read_invite(KEY, garbage) is None


def test_invitation_is_single_use_and_expires(engine, district):
    clock.freeze(T0)
    with session_scope(engine) as session:
        token, expires = staff.issue_invite(session, staff.staff_by_code(session, "W-M2"), KEY, actor="cli")
    assert expires == T0 + timedelta(days=7)
    with session_scope(engine) as session:
        assert staff.redeem_invite(session, token, KEY, 501).code == "W-M2"
    with session_scope(engine) as session:  # the same chat again (a redelivered update): fine
        assert staff.redeem_invite(session, token, KEY, 501).code == "W-M2"
    with pytest.raises(staff.LinkRefused) as used, session_scope(engine) as session:
        staff.redeem_invite(session, token, KEY, 502)
    assert used.value.why == "used"
    with session_scope(engine) as session:
        late, _ = staff.issue_invite(session, staff.staff_by_code(session, "W-A"), KEY, actor="cli")
    clock.freeze(T0 + timedelta(days=7, seconds=1))
    with pytest.raises(staff.LinkRefused) as expired, session_scope(engine) as session:
        staff.redeem_invite(session, late, KEY, 503)
    assert expired.value.why == "expired"
    with pytest.raises(staff.LinkRefused) as forged, session_scope(engine) as session:
        staff.redeem_invite(session, late, b"wrong", 503)
    assert forged.value.why == "forged"
    with session_scope(engine) as session:
        invites = {i.nonce: i for i in session.exec(select(StaffInvite))}
        assert [i.used_by_chat for i in invites.values() if i.used_at] == ["501"]
        actions_audited = sorted(a.action for a in session.exec(select(AuditEntry)))
    assert actions_audited == ["staff.invite", "staff.invite", "staff.link_chat"]


def test_a_resident_chat_never_becomes_a_staff_chat(engine, district):
    with session_scope(engine) as session:
        session.add(Resident(chat_id="601", language="zh"))
    with pytest.raises(staff.LinkRefused) as refused, session_scope(engine) as session:
        staff.link_chat(session, 601, staff.staff_by_code(session, "W-M1"), via="contact", actor="chat:601")
    assert refused.value.why == "resident_chat"
    with session_scope(engine) as session:
        token, _ = staff.issue_invite(session, staff.staff_by_code(session, "W-M1"), KEY, actor="cli")
    with pytest.raises(staff.LinkRefused), session_scope(engine) as session:
        staff.redeem_invite(session, token, KEY, 601)
    with session_scope(engine) as session:  # the refused invitation is still unused
        assert session.exec(select(StaffInvite)).one().used_at is None


def test_a_new_chat_replaces_the_old_one_and_a_chat_holds_one_person(engine, district):
    link(engine, 701, "W-M1")
    link(engine, 702, "W-M1")  # a new phone
    with session_scope(engine) as session:
        assert session.get(StaffChat, "701") is None
        assert staff.staff_of_chat(session, 702).code == "W-M1"
        with pytest.raises(staff.LinkRefused) as taken:
            staff.link_chat(session, 702, staff.staff_by_code(session, "W-A"), via="test", actor="test")
        assert taken.value.why == "taken"
        audited = [(a.action, a.detail["chat_id"]) for a in session.exec(select(AuditEntry).order_by(AuditEntry.id))]
    assert audited == [("staff.link_chat", "701"), ("staff.unlink_chat", "701"), ("staff.link_chat", "702")]
    with session_scope(engine) as session:
        assert staff.unlink(session, staff.staff_by_code(session, "W-M1"), actor="cli") == "702"
        assert staff.unlink(session, staff.staff_by_code(session, "W-M1"), actor="cli") is None
        notices = session.exec(select(Job).where(Job.kind == staff.UNLINKED_JOB)).all()
        assert [n.payload["chat_id"] for n in notices] == ["702"]


def test_staff_by_phone_in_any_form(engine, district):
    with session_scope(engine) as session:
        phone = district.workers["W-M2"].phone  # +8613900000001
        assert staff.staff_by_phone(session, phone.lstrip("+")).code == "W-M2"
        assert staff.staff_by_phone(session, phone[3:]).code == "W-M2"
        assert staff.staff_by_phone(session, "+8613800000000") is None


def test_checker_is_the_community_leader_but_never_the_owner(engine, district):
    number = dispatched(engine, district.grids["micro2"])
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        assert staff.checker(session, case).code == "W-C"
        # climbed to the community: its only officer is the leader, who then does not check themself
        actions.escalate(session, case, actor="t", reason="r")
        actions.escalate(session, case, actor="t", reason="r")
        assert case.owner_level == GridLevel.community and case.worker_id == district.workers["W-C"].id
        assert staff.checker(session, case).code == "W-S"
        assert staff.recipients(session, case, ["leader:up"])[0].code == "W-S"
        assert [s.code for s in staff.owners(session, case)] == ["W-C", "chengguan"]


def test_dispatch_report_and_failed_check_queue_messages_for_linked_staff(engine, district):
    link(engine, 801, "W-M2")
    link(engine, 802, "W-C")
    number = dispatched(engine, district.grids["micro2"])
    assert [(j["send"], j["to"], j["case"]) for j in _jobs(engine)] == [
        ("dispatch", f"worker:{district.workers['W-M2'].id}", number)]
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        actions.accept(session, case, actor="w")
        actions.report_done(session, case, actor="w", note="修好了")
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        actions.verify(session, case, actor="l", passed=False, note="没修好")
    sent = [(j["send"], j["to"], j["reason"]) for j in _jobs(engine)][1:]
    assert sent == [("check", f"worker:{district.workers['W-C'].id}", "修好了"),
                    ("check_failed", f"worker:{district.workers['W-M2'].id}", "没修好")]


def test_nobody_linked_nothing_queued(engine, district):
    dispatched(engine, district.grids["micro2"])
    assert _jobs(engine) == []


def test_who_hears_what_is_rules_data(engine, district, monkeypatch):
    from core.platform import rules

    changed = rules.load_rules().copy()
    changed["worker"] = {**changed.get("worker", {}),
                         "messages": {"dispatch": {"send": "dispatch", "to": ["leader:area"]}}}
    monkeypatch.setattr(staff, "load_rules", lambda: changed)
    link(engine, 801, "W-M2")
    link(engine, 803, "W-A")
    dispatched(engine, district.grids["micro2"])
    assert [j["to"] for j in _jobs(engine)] == [f"worker:{district.workers['W-A'].id}"]
    changed["worker"]["messages"] = {"dispatch": {"send": "dispatch", "to": ["nobody"]}}
    with pytest.raises(InvalidInput):
        dispatched(engine, district.grids["micro2"])


def test_photos_a_report_needs_per_category(engine, district, monkeypatch):
    from core.platform import rules

    number = dispatched(engine, district.grids["micro2"])
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        assert staff.required_photos(session, case) == 1
        changed = {**rules.load_rules(), "worker": {"report": {"min_photos": 2,
                                                               "min_photos_by_category": {"streetlight": 0}}}}
        monkeypatch.setattr(staff, "load_rules", lambda: changed)
        assert staff.required_photos(session, case) == 0
