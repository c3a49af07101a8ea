"""ivr.calls: a turn whose Media Streams socket died with the instance that held it (no
handover ever came) is made whole from the parts that instance sent while the caller spoke,
both when the webhook that waited for it gives up and when the hung-up call is filed."""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
from sqlmodel import select

from core.cases.models import Attachment, Case, CaseEvent
from core.cases.queries import case_files
from core.platform.db import session_scope
from core.platform.media import LocalStore
from core.platform.models import AudioPart
from ivr import calls
from ivr.spool import HEADER_BYTES, save_part
from ivr.state import Call, Recording

SPEECH_RMS = 300.0


def loud_pcm(seconds: float) -> bytes:
    t = np.arange(int(seconds * 8000)) / 8000
    return (6000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def a_turn_spoken_elsewhere(engine, seconds: float = 3.0) -> tuple[str, str, str, bytes]:
    """A call whose petition turn's socket was on instance "gone": the parts it held in the
    database (its spool and the bucket were away) are all that is left of the turn."""
    call_sid = "CA" + uuid.uuid4().hex
    calls.open_call(engine, call_sid, from_number="+8613900000123", to_number="+8601012345",
                    status="in-progress", holder="gone")
    call, (segment, _token) = calls.apply(engine, call_sid, Call.begin_turn, "petition")
    key = call.state.segments[segment].audio_path
    pcm = loud_pcm(seconds)
    half = len(pcm) // 2
    save_part(engine, key, 0, 0, pcm[:half])
    save_part(engine, key, 1, half, pcm[half:])
    return call_sid, segment, key, pcm


def test_the_webhook_that_waited_in_vain_gets_the_turn_from_its_parts(engine, tmp_path):
    call_sid, segment, key, pcm = a_turn_spoken_elsewhere(engine)
    store = LocalStore(tmp_path)

    rebuilt = calls.turn_from_parts(engine, call_sid, segment, store, SPEECH_RMS)

    assert rebuilt is not None and rebuilt.ended_by == "recovered" and rebuilt.deferred
    assert rebuilt.duration == 3.0 and rebuilt.speech_s >= 2.9
    whole = store.get_bytes(key)
    assert whole[HEADER_BYTES:] == pcm
    assert rebuilt.sha256 == hashlib.sha256(whole).hexdigest() and rebuilt.size == len(whole)
    with session_scope(engine) as s:  # the parts go once the whole file is kept
        assert s.exec(select(AudioPart).where(AudioPart.key == key)).all() == []


def test_a_turn_with_no_parts_anywhere_stays_without_audio(engine, tmp_path):
    call_sid = "CA" + uuid.uuid4().hex
    calls.open_call(engine, call_sid, from_number=None, to_number=None, status="in-progress", holder="gone")
    _, (segment, _token) = calls.apply(engine, call_sid, Call.begin_turn, "petition")
    assert calls.turn_from_parts(engine, call_sid, segment, LocalStore(tmp_path), SPEECH_RMS) is None
    assert calls.turn_from_parts(engine, "CA-never-seen", segment, LocalStore(tmp_path), SPEECH_RMS) is None


def test_a_hung_up_call_whose_turn_died_elsewhere_is_filed_with_its_recording(engine, tmp_path):
    """Before: only the crash recovery (``recovered``) assembled parts, so a caller who hung up
    while their turn's instance died was filed as "said nothing" and got no case."""
    call_sid, _segment, key, pcm = a_turn_spoken_elsewhere(engine)

    filed = calls.file_case(engine, call_sid, min_speech_s=2.0, hung_up=True, data_dir=tmp_path,
                            speech_rms=SPEECH_RMS, store=LocalStore(tmp_path))

    assert filed.number
    with session_scope(engine) as s:
        case = s.exec(select(Case).where(Case.number == filed.number)).one()
        (recording,) = case_files(s, case.id, "recording")
        assert isinstance(recording, Attachment) and recording.path == key
        assert recording.size == HEADER_BYTES + len(pcm)
    assert LocalStore(tmp_path).get_bytes(key)[HEADER_BYTES:] == pcm


def test_a_call_whose_words_and_recording_are_both_out_of_reach_is_still_a_case(engine, tmp_path):
    """The caller spoke (the instance that heard the turn said how much), but that instance is
    gone with its disk: no WAV, no parts, no words. Before: the core refused the petition
    ("a petition needs a description, a recording or a photo") at the webhook, the hang-up and
    every sweep, and the call never became a case. Now it is one, flagged, with the caller's
    number, for an operator to call back."""
    call_sid = "CA" + uuid.uuid4().hex
    calls.open_call(engine, call_sid, from_number="+8613900000124", to_number="+8601012345",
                    status="in-progress", holder="gone")
    call, (segment, _token) = calls.apply(engine, call_sid, Call.begin_turn, "petition")
    heard = Recording(kind="petition", audio_path=call.state.segments[segment].audio_path, speech_s=2.6,
                      duration=3.0, heard_s=3.0, ended_by="webhook")
    calls.apply(engine, call_sid, Call.turn_heard, segment, heard)

    filed = calls.file_case(engine, call_sid, min_speech_s=2.0, hung_up=True, data_dir=tmp_path,
                            speech_rms=SPEECH_RMS, store=LocalStore(tmp_path))

    assert filed.number and filed.created
    with session_scope(engine) as s:
        case = s.exec(select(Case).where(Case.number == filed.number)).one()
        assert case.contact_phone == "+8613900000124" and case.description == ""
        assert {"recording_incomplete", "caller_hung_up"} <= set(case.flags)
        assert case_files(s, case.id, "recording") == []
        submit = s.exec(select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.action == "submit")).one()
        assert submit.data["recording_incomplete"] == {segment: {"kept_s": 0.0, "heard_s": 3.0}}
