"""core.actions.residents: a resident's contact changes leave an audit row."""

from __future__ import annotations

from sqlmodel import select

from core import actions
from core.people.models import AuditEntry, Resident
from core.platform.db import session_scope


def test_linking_a_chat_and_setting_a_phone_are_audited(engine):
    with session_scope(engine) as session:
        resident = Resident(name="王阿姨", phone="13800000001")
        session.add(resident)
        session.flush()
        actions.link_chat(session, resident, "4242", actor="resident:chat:4242", language="zh")
        actions.link_chat(session, resident, "4242", actor="resident:chat:4242")  # no change, no row
        actions.set_phone(session, resident, "13900000002", actor="operator:li")
        rid = resident.id
    with session_scope(engine) as session:
        rows = session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(r.actor, r.action, r.target_type, r.target_id) for r in rows] == [
            ("resident:chat:4242", "resident.link_chat", "resident", str(rid)),
            ("operator:li", "resident.set_phone", "resident", str(rid)),
        ]
        assert rows[0].detail == {"chat_id": "4242", "before": None}
        assert rows[1].detail == {"phone": "13900000002", "before": "13800000001"}
        assert session.get(Resident, rid).chat_id == "4242"


def test_a_chat_resident_and_their_language_are_audited(engine):
    with session_scope(engine) as session:
        resident = actions.create_for_chat(session, 5151, actor="resident:chat:5151", language="zh", name="小王")
        actions.set_language(session, resident, "zh", actor="resident:chat:5151")  # no change, no row
        actions.set_language(session, resident, "en", actor="resident:chat:5151")
        rid = resident.id
    with session_scope(engine) as session:
        rows = session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(r.actor, r.action, r.target_id, r.detail) for r in rows] == [
            ("resident:chat:5151", "resident.create", str(rid), {"chat_id": "5151", "language": "zh"}),
            ("resident:chat:5151", "resident.set_language", str(rid), {"language": "en", "before": "zh"}),
        ]
        resident = session.get(Resident, rid)
        assert (resident.chat_id, resident.language, resident.name) == ("5151", "en", "小王")


def test_unlinking_a_verified_number_undoes_only_what_linking_did(engine):
    """A hotline caller (no household) linked by a verified number is detached and keeps the
    number; the chat's own resident that got the number loses it; each change is audited."""
    chat = "web:device-0001"
    with session_scope(engine) as session:
        own = actions.create_for_chat(session, chat, actor="resident", language="zh")
        actions.link_verified_phone(session, chat, "13900000009", actor="resident", language="zh")
        assert own.phone == "13900000009"  # nobody had it: the chat's own resident took it
        caller = actions.resident_for_phone(session, "13800000007", actor="hotline")
        assert actions.link_verified_phone(session, chat, "+8613800000007", actor="resident", language="zh") is caller
        caller_id, own_id = caller.id, own.id
    with session_scope(engine) as session:
        assert actions.unlink_verified_phone(session, chat, "+8613800000007", actor="resident") == [caller_id]
        assert actions.unlink_verified_phone(session, chat, "13900000009", actor="resident") == [own_id]
        assert actions.unlink_verified_phone(session, chat, "13900000009", actor="resident") == []  # done already
    with session_scope(engine) as session:
        caller, own = session.get(Resident, caller_id), session.get(Resident, own_id)
        assert (caller.chat_id, caller.phone) == (None, "13800000007")
        assert (own.chat_id, own.phone) == (chat, None)
        rows = session.exec(select(AuditEntry).where(AuditEntry.action == "resident.unlink_phone")
                            .order_by(AuditEntry.id)).all()
        assert [(r.target_type, r.target_id, r.detail["change"]) for r in rows] == [
            ("resident", str(caller_id), "detached"), ("resident", str(own_id), "phone_cleared"), ("chat", chat, None)]
