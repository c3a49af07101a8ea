"""core.actions.intake: a case's files are Attachment rows, written with the case or with
an ``attach`` event, stored relative to the data directory."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core import actions
from core.cases.models import Attachment, CaseEvent, Channel
from core.cases.queries import case_files
from core.errors import InvalidInput
from core.platform.db import session_scope
from core.platform.storage import resolve, stored_path
from tests.core.district import build_district


@pytest.fixture
def district(engine):
    with session_scope(engine) as session:
        return build_district(session)


def _events(session, case_id):
    return session.exec(select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)).all()


def test_a_petition_of_only_a_recording_is_filed_with_it(engine, district):
    rec = actions.FileRef(kind="recording", path="recordings/20261201/CA1-petition-1.wav", mime_type="audio/wav")
    with session_scope(engine) as session:
        case, created = actions.submit_petition(
            session, actions.Petition(channel=Channel.hotline, description="", files=(rec,)), actor="hotline")
    assert created
    with session_scope(engine) as session:
        (att,) = case_files(session, case.id)
        assert (att.kind, att.path, att.mime_type) == ("recording", rec.path, "audio/wav")
        (submit,) = _events(session, case.id)
        assert submit.data == {"attachments": [{"id": att.id, "kind": "recording", "path": rec.path}]}


def test_files_kept_before_the_case_are_linked_in_the_same_transaction(engine, district):
    with session_scope(engine) as session:
        early = Attachment(kind="voice", path="chat/2026/12/voice-a.oga")
        session.add(early)
        session.flush()
        early_id = early.id
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(
            session, actions.Petition(channel=Channel.chat, description="", attachment_ids=(early_id,)))
    with session_scope(engine) as session:
        assert [a.id for a in case_files(session, case.id, "voice")] == [early_id]
    # a file of one case cannot be taken by another
    with pytest.raises(InvalidInput, match="another case"), session_scope(engine) as session:
        actions.submit_petition(session, actions.Petition(channel=Channel.chat, description="x",
                                                          attachment_ids=(early_id,)))
    with pytest.raises(InvalidInput, match="no attachment"), session_scope(engine) as session:
        actions.submit_petition(session, actions.Petition(channel=Channel.chat, description="x",
                                                          attachment_ids=(early_id + 999,)))


def test_attach_adds_a_file_once_with_an_event(engine, district):
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, actions.Petition(channel=Channel.hotline, description="灯坏了"))
    second = actions.FileRef(kind="recording", path="recordings/d/CA1-petition-2.wav")
    for _ in range(2):  # a retried webhook attaches nothing twice
        with session_scope(engine) as session:
            actions.attach(session, actions.get_case(session, case.id), actor="hotline", files=[second])
    with session_scope(engine) as session:
        assert [a.path for a in case_files(session, case.id)] == [second.path]
        assert [e.action for e in _events(session, case.id)] == ["submit", "attach"]


def test_paths_are_kept_relative_to_the_data_directory(tmp_path):
    inside = tmp_path / "recordings" / "x.wav"
    assert stored_path(inside, tmp_path) == "recordings/x.wav"
    assert resolve("recordings/x.wav", tmp_path) == inside
    outside = tmp_path.parent / "elsewhere.wav"
    assert stored_path(outside, tmp_path) == str(outside)  # never mis-recorded as relative
    assert resolve(str(outside), tmp_path) == outside
