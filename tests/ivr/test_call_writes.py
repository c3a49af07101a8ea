"""ivr.calls.apply from what a webhook already read (``known``): one conditional UPDATE when
nobody wrote the call since, and the transition run again on the locked row when somebody
did, so that no change is lost and a turn's end is still claimed once (``Call.claim_end``)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

from sqlalchemy import event, update

from core.cases.models import CallSession
from core.platform import clock
from core.platform.clock import utcnow
from ivr import calls
from ivr.simulator import CallScript, Turn
from ivr.state import Call, Recording

from .conftest import KNOWN_PHONE, tone


def a_call(engine) -> str:
    call_sid = "CA" + uuid.uuid4().hex
    calls.open_call(engine, call_sid, from_number="+8613900000123", to_number="+8601012345", status="in-progress")
    return call_sid


class Statements:
    """The SQL statements run on ``engine`` while the block runs (their first words)."""

    def __init__(self, engine):
        self.engine = engine
        self.seen: list[str] = []

    def _count(self, conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        self.seen.append(" ".join(statement.split()[:3]).upper())

    def __enter__(self):
        event.listen(self.engine, "after_cursor_execute", self._count)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "after_cursor_execute", self._count)


def test_a_change_to_a_call_read_before_is_one_update_and_is_stored(engine):
    call_sid = a_call(engine)
    known = calls.load_call(engine, call_sid)

    with Statements(engine) as sql:
        call, (segment, _token) = calls.apply(engine, call_sid, Call.begin_turn, "petition", holder="here",
                                              known=known)

    assert [s for s in sql.seen if not s.startswith(("BEGIN", "COMMIT"))] == ["UPDATE CALLSESSION SET"]
    stored = calls.load_call(engine, call_sid)
    assert segment == "petition-1" and stored.state.petition.segment == "petition-1"
    assert stored.row.audio_path == call.row.audio_path and stored.row.instance_id == "here"
    assert stored.row.updated_at == call.row.updated_at > known.row.updated_at
    assert known.state.petition.segment == ""  # what the webhook read is left as it was


def test_a_change_from_a_read_someone_wrote_after_runs_on_the_row_as_it_is(engine):
    call_sid = a_call(engine)
    stale = calls.load_call(engine, call_sid)
    calls.apply(engine, call_sid, Call.begin_turn, "petition")  # another request, meanwhile

    call, (segment, _token) = calls.apply(engine, call_sid, Call.begin_turn, "petition", known=stale)

    assert segment == "petition-2"  # not petition-1 a second time: the first change is not lost
    assert set(calls.load_call(engine, call_sid).state.segments) == {"petition-1", "petition-2"}


def test_a_read_made_stale_in_the_same_microsecond_is_still_refused(engine):
    call_sid = a_call(engine)
    clock.freeze(datetime(2026, 12, 7, 9, 0))  # every write at the same instant
    try:
        stale = calls.load_call(engine, call_sid)
        calls.apply(engine, call_sid, Call.claim_end, "petition-1")
        _, first = calls.apply(engine, call_sid, Call.claim_end, "petition-1", known=stale)
    finally:
        clock.freeze(None)

    assert first is False  # the claim made meanwhile stands; this end answers as that one did
    assert list(calls.load_call(engine, call_sid).state.replies) == ["petition-1"]


def test_two_ends_of_a_turn_from_the_same_read_claim_it_once(engine):
    call_sid = a_call(engine)
    calls.apply(engine, call_sid, Call.begin_turn, "petition")
    read = calls.load_call(engine, call_sid)
    heard = [Recording(kind="petition", text="路灯坏了", final=True, speech_s=3.0, duration=4.0, ended_by="eos"),
             Recording(kind="petition", text="路灯", final=True, speech_s=2.0, duration=3.0, ended_by="webhook")]
    claimed: list[bool] = []
    start = threading.Barrier(2)

    def end(recording: Recording) -> None:
        start.wait()
        claimed.append(calls.apply(engine, call_sid, Call.claim_end, "petition-1", recording, known=read)[1])

    threads = [threading.Thread(target=end, args=(r,)) for r in heard]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(claimed) == [False, True]
    kept = calls.load_call(engine, call_sid).state.segments["petition-1"]
    winner = heard[0] if kept.ended_by == "eos" else heard[1]
    assert kept.text == winner.text and kept.speech_s == winner.speech_s  # the winner's words, whole


def test_a_column_written_by_someone_else_meanwhile_is_kept(engine):
    call_sid = a_call(engine)
    read = calls.load_call(engine, call_sid)
    with engine.begin() as conn:  # answered_at alone, updated_at left (as an older instance wrote it)
        conn.execute(update(CallSession).where(CallSession.call_sid == call_sid).values(answered_at=utcnow()))

    calls.apply(engine, call_sid, Call.callback, "completed", "12", known=read)

    stored = calls.load_call(engine, call_sid)
    assert stored.row.answered_at is not None and stored.row.status == "completed" and stored.row.duration_s == 12


async def test_a_talk_only_call_locks_its_row_only_to_file_it(rig, fake_speech):
    """Each webhook reads the call once and writes its changes from that read: the only
    locking read of the call is the filing's, which must see the row as it is."""
    call_sid = "CA" + uuid.uuid4().hex
    fake_speech.say("小区 门口 的 路灯 坏 了")
    fake_speech.say_in_grammar("对")
    reads: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        said = statement.upper()
        if said.lstrip().startswith("SELECT") and "FROM CALLSESSION" in said and call_sid in str(parameters):
            reads.append("locked" if "FOR UPDATE" in said else "read")

    event.listen(rig.engine, "after_cursor_execute", note)
    try:
        result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, call_sid=call_sid, turns=[
            Turn(tone(3), end="silence"), Turn(tone(0.6), end="silence")]))
    finally:
        event.remove(rig.engine, "after_cursor_execute", note)

    assert result.case_number and rig.call_session(call_sid).outcome == "case_filed"
    webhooks = len(result.webhook_paths)  # voice, open/done, petition/confirm, status
    if rig.engine.dialect.name == "postgresql":  # SQLite has no FOR UPDATE: its writer lock is the database's
        assert reads.count("locked") == 1
    assert len(reads) <= webhooks + 2 + 1  # and the two streams' token checks, and the filing's
