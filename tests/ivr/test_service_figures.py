"""Real calls through the hotline (signed webhooks from the simulator, the Media Streams socket
with real audio) are counted in its service figures (core/reporting/hotline.py): each is
offered, answered when its greeting went out, and what became of it is counted once."""

from __future__ import annotations

from datetime import timedelta

from core.platform import clock
from core.platform.db import session_scope
from core.reporting import hotline
from ivr.simulator import CallScript, Turn

from .conftest import KNOWN_PHONE, tone
from .test_flow import local


def figures_now(rig) -> hotline.CallFigures:  # noqa: ANN001
    """The figures of the local day so far and the next (a call that began just now)."""
    now = clock.utcnow()
    with session_scope(rig.engine) as session:
        return hotline.hotline_figures(session, now - timedelta(days=1), now + timedelta(days=1),
                                       rig.settings.timezone).total


async def test_a_call_that_files_a_case_is_offered_answered_in_time_and_timed(rig, fake_speech):
    fake_speech.say("小区 门口 的 路灯 坏 了")
    before = clock.utcnow()
    result = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["1", "1"],
                                                   turns=[Turn(tone(2.5))]))
    assert result.case_number
    row = rig.call_session(result.call_sid)
    # arrival: when /twilio/voice reached us; answered: when its greeting went back
    assert before <= row.started_at <= row.answered_at <= row.ended_at
    assert (row.answered_at - row.started_at).total_seconds() < 15
    assert row.transferred_at is None and row.outcome == "case_filed"
    got = figures_now(rig)
    assert (got.offered, got.answered, got.answered_in_time, got.ended_before_case, got.transfers) == (1, 1, 1, 0, 0)
    assert got.connection_rate == 1.0 and got.average_handling_s == float(row.duration_s) >= 1
    assert got.meets_connection(hotline.targets()) and got.meets_wait(hotline.targets())


async def test_a_retried_voice_webhook_is_one_call_answered_once(rig):
    call_sid = "CA" + "7" * 32
    first = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, call_sid=call_sid,
                                                  hangup_after_prompts=1))
    answered = rig.call_session(first.call_sid).answered_at
    await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, call_sid=call_sid, hangup_after_prompts=1))
    assert rig.call_session(call_sid).answered_at == answered
    assert figures_now(rig).offered == 1


async def test_a_hang_up_mid_petition_ended_before_a_case_and_became_one_from_its_audio(rig, fake_speech):
    fake_speech.say("楼上 漏水 很 严重")
    result = await rig.simulator().call(CallScript(
        from_number=KNOWN_PHONE, digits=["1"], turns=[Turn(tone(6), end="hangup", hangup_after_s=3)]))
    assert rig.call_session(result.call_sid).outcome == "hung_up_case"
    got = figures_now(rig)
    assert (got.offered, got.ended_before_case, got.filed_from_audio) == (1, 1, 1)


async def test_transfers_to_a_person_answered_and_not(rig, fake_speech):
    clock.freeze(local(2026, 11, 23, 10, 0))  # a Monday morning: the operator line is open
    answered = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["0"], operator_answers=True))
    fake_speech.say("路灯 坏 了")
    busy = await rig.simulator().call(CallScript(from_number=KNOWN_PHONE, digits=["0", "1"], turns=[Turn(tone(2.5))]))
    rows = {sid: rig.call_session(sid) for sid in (answered.call_sid, busy.call_sid)}
    assert rows[answered.call_sid].transfer_status == "completed"
    assert rows[busy.call_sid].transfer_status not in (None, "completed", "answered")
    assert all(r.transferred_at is not None for r in rows.values())
    got = figures_now(rig)
    assert (got.offered, got.transfers, got.transfers_answered, got.transfers_not_answered) == (2, 2, 1, 1)
    assert got.ended_before_case == 0  # a person took one; the other left a petition
