"""core.actions.transcription: the transcript of a case filed while recognition was busy
or absent arrives later, with one event, and never overwrites what an operator wrote."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core import actions
from core.cases.models import CaseEvent, Channel
from core.platform.db import session_scope
from tests.core.district import build_district

REC = actions.FileRef(kind="recording", path="recordings/20261201/CA1-petition-1.wav", mime_type="audio/wav")
WORDS = [{"text": "路灯坏了", "start": 0.0, "end": 1.2, "confidence": 0.9,
          "words": [{"word": "路灯", "start": 0.0, "end": 0.6, "conf": 0.9}]}]


@pytest.fixture
def pending_case(engine):
    with session_scope(engine) as session:
        build_district(session)
        case, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description="", files=(REC,), flags=(actions.TRANSCRIPT_PENDING,)),
            actor="hotline")
        return case.id


def _events(session, case_id, action):
    return session.exec(select(CaseEvent).where(CaseEvent.case_id == case_id, CaseEvent.action == action)).all()


def test_transcript_fills_the_description_and_clears_the_flag(engine, pending_case):
    with session_scope(engine) as session:
        case = actions.get_case(session, pending_case)
        ev = actions.set_transcript(session, case, actor="speech", text="路灯坏了", segments=WORDS,
                                    confidence=0.9, address_text="阳光花园3幢")
        assert ev is not None
    with session_scope(engine) as session:
        case = actions.get_case(session, pending_case)
        assert case.description == "路灯坏了" and case.transcript == WORDS and case.transcript_confidence == 0.9
        assert case.address_text == "阳光花园3幢"
        assert not case.flags
        (ev,) = _events(session, case.id, "transcribe")
        assert ev.actor == "speech" and ev.to_status == case.status
        assert ev.data["description"] is True and ev.data["text"] == "路灯坏了"


def test_an_operators_description_is_kept(engine, pending_case):
    with session_scope(engine) as session:
        case = actions.get_case(session, pending_case)
        actions.classify(session, case, actor="op:li", description="3幢门口路灯不亮（听录音）")
    with session_scope(engine) as session:
        case = actions.get_case(session, pending_case)
        actions.set_transcript(session, case, actor="speech", text="路灯坏了", segments=WORDS, confidence=0.95)
    with session_scope(engine) as session:
        case = actions.get_case(session, pending_case)
        assert case.description == "3幢门口路灯不亮（听录音）"
        assert case.transcript == WORDS
        assert "description" not in _events(session, case.id, "transcribe")[0].data


@pytest.mark.parametrize(("text", "confidence"), [("路灯坏了", 0.3), ("", None)])
def test_doubtful_words_are_flagged_for_review(engine, pending_case, text, confidence):
    with session_scope(engine) as session:
        case = actions.get_case(session, pending_case)
        actions.set_transcript(session, case, actor="speech", text=text, segments=[], confidence=confidence)
    with session_scope(engine) as session:
        case = actions.get_case(session, pending_case)
        assert case.flags == [actions.LOW_CONFIDENCE]
        assert case.description == text


def test_a_second_run_changes_nothing(engine, pending_case):
    with session_scope(engine) as session:
        case = actions.get_case(session, pending_case)
        actions.set_transcript(session, case, actor="speech", text="路灯坏了", segments=WORDS, confidence=0.9)
    with session_scope(engine) as session:
        case = actions.get_case(session, pending_case)
        assert actions.set_transcript(session, case, actor="speech", text="别的", segments=[],
                                      confidence=0.1) is None
    with session_scope(engine) as session:
        case = actions.get_case(session, pending_case)
        assert case.description == "路灯坏了" and len(_events(session, case.id, "transcribe")) == 1
