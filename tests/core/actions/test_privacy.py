"""Shredding a case past retention (core/actions/privacy.py and core/cases/privacy.py) on both
databases: files gone from disk with their rows, personal data gone from the case, its
events, survey, calls, audit rows and its chat-only resident; the figures of past periods
unchanged; open and recent cases untouched; every shredding audited."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from core import actions
from core.cases.models import Attachment, CallSession, Case, CaseEvent, Channel
from core.cases.privacy import parse_age, shred_older_than
from core.errors import IllegalTransition, InvalidInput
from core.followup.models import Survey
from core.people.models import AuditEntry, Resident
from core.platform import clock
from core.platform.db import session_scope
from core.reporting import reports
from tests.core.reports_world import NOW, ReportsWorld, build_reports_world

LATER = NOW + timedelta(days=400)  # November 2026 is past a year's retention by then
TZ = "Asia/Shanghai"
PHONE = "13955556666"


@dataclass
class PrivacyWorld:
    reports: ReportsWorld
    data_dir: Path
    hotline: str  # closed, with a recording, a call, a comment and a corrected text
    chat: str  # closed, a chat-only resident's, with a photo
    recent: str  # closed a month before LATER: kept
    files: list[Path]


def write(path: Path, content: bytes = b"RIFF....WAVEfmt ") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content * 10)
    return path


def build_privacy_world(engine, data_dir: Path) -> PrivacyWorld:
    world = build_reports_world(engine)
    micro1 = world.district.grids["micro1"].id
    clock.freeze(datetime(2026, 11, 18, 2, 0))
    recording = write(data_dir / "recordings/20261118/CA-shred-petition-1.wav")
    address_turn = write(data_dir / "recordings/20261118/CA-shred-address-1.wav")
    photo = write(data_dir / "chat/2026/11/photo-shred.jpg", b"\xff\xd8\xff")
    with session_scope(engine) as session:
        hotline, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description=f"我是陈阿婆，电话{PHONE}，9幢2单元301室楼下路灯坏了",
            idempotency_key="hotline|CA-shred", contact_phone=PHONE, category_code="streetlight",
            transcript=[{"text": f"我是陈阿婆电话{PHONE}", "start": 0, "end": 3}], address_text="洋坊新村9幢2单元",
            latitude=26.39051, longitude=117.79052,
            files=(actions.FileRef("recording", "recordings/20261118/CA-shred-petition-1.wav", "audio/wav"),)),
            actor="hotline")
        # the hotline's call row names its recordings by absolute path (as ivr/stream.py writes them)
        session.add(CallSession(call_sid="CA-shred", from_number=PHONE, to_number="+865981234567",
                                case_id=hotline.id, audio_path=str(recording), transcript=[{"text": PHONE}],
                                state={"segments": {"petition-1": {"audio_path": str(recording), "text": PHONE},
                                                    "address-1": {"audio_path": str(address_turn)}}}))
        actions.classify(session, hotline, actor="op", description="路灯坏了（已更正）")
        actions.annotate(session, hotline, actor="op", note=f"已回电 {PHONE}")
        chatter = Resident(name="微信用户小林", phone="13966667777", chat_id="tg-777")
        session.add(chatter)
        session.flush()
        chat, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.chat, description="楼道飞线", resident_id=chatter.id, category_code="flying_lead",
            files=(actions.FileRef("photo", "chat/2026/11/photo-shred.jpg", "image/jpeg"),)), actor="resident:chat")
        numbers = (hotline.number, chat.number, hotline.id, chat.id)
    hotline_id, chat_id = numbers[2], numbers[3]
    for case_id, grid in ((hotline_id, micro1), (chat_id, micro1)):
        with session_scope(engine) as session:
            case = actions.get_case(session, case_id)
            actions.dispatch(session, case, actor="op", grid_id=grid)
            actions.accept(session, case, actor="w")
            actions.report_done(session, case, actor="w", note="已修复，居民陈阿婆满意")
            actions.verify(session, case, actor="leader")
            survey = session.exec(select(Survey).where(Survey.case_id == case_id)).one()
            actions.record_survey(session, survey, solved="solved", satisfied="satisfied",
                                  comment=f"谢谢，有事打{PHONE}")
    clock.freeze(LATER - timedelta(days=30))
    with session_scope(engine) as session:
        recent, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description=f"最近的 {PHONE}", contact_phone=PHONE), actor="hotline")
        actions.close(session, recent, actor="op", reason="withdrawn")
        recent_number = recent.number
    clock.freeze(LATER)
    return PrivacyWorld(world, data_dir, numbers[0], numbers[1], recent_number, [recording, address_turn, photo])


def figures(engine) -> dict:
    """Everything the dashboard and the monthly report count for November 2026 and the quarter."""
    with session_scope(engine) as session:
        filters = reports.make_filters(session, level="micro")
        d = reports.dashboard(session, reports.parse_period("2026-11"), filters, tz=TZ, as_of=LATER)
        r = reports.report(session, "quarterly", reports.parse_period("2026Q4"), filters, tz=TZ, as_of=LATER)
        return {
            "totals": vars(d.totals), "by_category": d.by_category, "by_grid": d.by_grid, "trend": d.trend,
            "channels": d.channels, "loads": (d.most_open, d.most_overdue),
            "report": (vars(r.totals), [(c.code, vars(c.this)) for c in r.by_grid], r.overdue_total,
                       [x.number for x in r.overdue], r.escalated_total),
            "scores": [(s.code, s.assignments, s.response_on_time, s.resolution_on_time, s.closed, s.evaluated,
                        s.points) for s in r.scores],
        }


@pytest.fixture
def pw(engine, tmp_path) -> PrivacyWorld:
    return build_privacy_world(engine, tmp_path / "data")


def test_shredding_removes_files_and_personal_data_and_keeps_the_figures(engine, pw):
    before = figures(engine)
    dry = shred_older_than(engine, parse_age("365d"), data_dir=pw.data_dir, dry_run=True)
    assert pw.hotline in dry.numbers and pw.chat in dry.numbers and pw.recent not in dry.numbers
    assert dry.files == 3 and all(f.exists() for f in pw.files)  # a dry run changes nothing
    with session_scope(engine) as session:
        assert session.exec(select(Case).where(Case.shredded_at.is_not(None))).first() is None

    done = shred_older_than(engine, parse_age("365d"), data_dir=pw.data_dir, actor="cli")
    assert done.cases == dry.cases and done.files == 3 and done.missing == 0 and done.residents == 1
    assert not any(f.exists() for f in pw.files)
    assert figures(engine) == before

    with session_scope(engine) as session:
        case = actions.get_case(session, pw.hotline)
        assert case.shredded_at == LATER and case.status.value == "closed"
        assert (case.description, case.transcript, case.contact_phone, case.address_text, case.latitude,
                case.resident_id, case.idempotency_key, case.routing_reason) == ("", None, None, None, None, None,
                                                                                 None, None)
        assert (case.category_id, case.grid_id, case.responded_on_time, case.close_reason) != (None, None, None, None)
        assert case.close_reason == "survey:satisfied"
        assert session.exec(select(Attachment).where(Attachment.case_id == case.id)).all() == []
        call = session.exec(select(CallSession).where(CallSession.call_sid == "CA-shred")).one()
        assert (call.from_number, call.to_number, call.audio_path, call.transcript, call.state) == (None,) * 5
        survey = session.exec(select(Survey).where(Survey.case_id == case.id)).one()
        assert survey.comment is None and survey.satisfied == "satisfied"
        events = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)).all()
        assert events[-1].action == "shred" and events[-1].actor == "cli"
        assert events[-1].data == {"files": 2, "calls": 1, "resident_cleared": False}
        everything = json.dumps([[e.reason, e.data] for e in events] + [vars(case)], ensure_ascii=False,
                                default=str)
        for secret in (PHONE, "陈阿婆", "301", "CA-shred", "recordings/"):
            assert secret not in everything, secret
        assert [e.action for e in events][:4] == ["submit", "classify", "note", "dispatch"]
        assert [e.on_time for e in events if e.action == "accept"] == [True]

        chat = actions.get_case(session, pw.chat)
        chatter = session.exec(select(Resident).where(Resident.chat_id == "tg-777")).one()
        assert chat.shredded_at is not None and (chatter.name, chatter.phone) == (None, None)
        registered = session.get(Resident, pw.reports.district.resident.id)
        assert registered.phone == "+8613800138000"  # the household registry keeps its own
        audits = session.exec(select(AuditEntry).where(AuditEntry.action == "case.shred")).all()
        assert {a.target_id for a in audits} == set(done.numbers) and all(a.actor == "cli" for a in audits)
        recent = actions.get_case(session, pw.recent)
        assert recent.shredded_at is None and PHONE in recent.description
        open_case = actions.get_case(session, pw.reports.numbers["dec_new"])
        assert open_case.shredded_at is None and open_case.contact_phone

    again = shred_older_than(engine, parse_age("365d"), data_dir=pw.data_dir)
    assert again.cases == 0


def test_the_action_refuses_open_and_shredded_cases(engine, pw):
    with session_scope(engine) as session:
        open_case = actions.get_case(session, pw.reports.numbers["dec_new"])
        with pytest.raises(IllegalTransition):
            actions.shred(session, open_case, actor="t", data_dir=pw.data_dir)
    with session_scope(engine) as session:
        case = actions.get_case(session, pw.chat)
        actions.shred(session, case, actor="t", data_dir=pw.data_dir)
    with session_scope(engine) as session, pytest.raises(IllegalTransition):
        actions.shred(session, actions.get_case(session, pw.chat), actor="t", data_dir=pw.data_dir)


def test_a_missing_file_does_not_stop_the_shredding(engine, pw):
    pw.files[0].unlink()
    done = shred_older_than(engine, parse_age("52w"), data_dir=pw.data_dir)
    assert done.missing == 1 and done.files == 2 and done.cases >= 2


def test_ages():
    assert parse_age("365d") == timedelta(days=365) == parse_age("1y") == parse_age("365")
    assert parse_age("52w") == timedelta(weeks=52)
    for bad in ("", "0d", "year", "12m", "-5d"):
        with pytest.raises(InvalidInput):
            parse_age(bad)


def test_without_an_age_the_rules_retention_days_apply(engine, pw, override):
    # Packaged: 365 days, so the cases of November 2026 are due and last month's is not.
    packaged = shred_older_than(engine, data_dir=pw.data_dir, dry_run=True)
    assert packaged.cutoff == LATER - timedelta(days=365)
    assert {pw.hotline, pw.chat} <= set(packaged.numbers) and pw.recent not in packaged.numbers
    # A district that keeps personal data 20 days: last month's case is due too.
    override("[privacy]\nretention_days = 20\n")
    shorter = shred_older_than(engine, data_dir=pw.data_dir, dry_run=True)
    assert shorter.cutoff == LATER - timedelta(days=20)
    assert pw.recent in shorter.numbers and shorter.cases == packaged.cases + 1
