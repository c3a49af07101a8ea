"""A database that does not answer in the middle of a call (a restart, a failover, a pool
that refuses work): the step's retries (``ivr/database.py``) run out, and the caller is asked
to hold (请稍候) while the same step is taken again, instead of hearing 系统繁忙 and being let
go. Signed webhooks from the simulator, the Media Streams socket, the fake transcriber; the
database fails where the hotline meets it (a dropped connection raised inside the step's
transaction) for as long as the test says."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from core.cases.models import CallSession, CaseEvent
from core.platform.db import session_scope
from ivr import calls
from ivr.flow import Flow
from ivr.simulator import CallScript, Turn
from ivr.state import Call
from tests.support.waiting import until

from .conftest import KNOWN_PHONE, tone

WAIT = "请稍候。"
ERROR = "系统繁忙，请稍后再拨。再见。"


class Outage:
    """The database drops the connection under ``name`` (a function the hotline runs in a
    transaction) until the caller has been asked to hold ``heal_after_holds`` times."""

    def __init__(self, monkeypatch, owner, name: str, heal_after_holds: int | None):
        self.failed = 0
        self.holds = 0
        self.heal_after_holds = heal_after_holds
        real = getattr(owner, name)

        def failing(*args, **kw):
            if self.down:
                self.failed += 1
                raise OperationalError(name, {}, ConnectionError("server closed the connection unexpectedly"),
                                       connection_invalidated=True)
            return real(*args, **kw)

        monkeypatch.setattr(owner, name, failing)
        real_hold = Flow.hold

        def hold(flow, path, **query):
            self.holds += 1
            self.held_urls.append((path, dict(query)))
            return real_hold(flow, path, **query)

        self.held_urls: list[tuple[str, dict]] = []
        monkeypatch.setattr(Flow, "hold", hold)

    @property
    def down(self) -> bool:
        return self.heal_after_holds is None or self.holds < self.heal_after_holds


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr("ivr.database.RETRY_FOR_S", 0.3)  # 8 s in production: the test need not wait


def known_caller() -> CallScript:
    """Talks at once, and confirms the read-back with key 1 (a key the hold must carry)."""
    return CallScript(from_number=KNOWN_PHONE, digits=[None, "1"], turns=[Turn(tone(3), end="silence")])


async def test_a_caller_whose_case_the_database_cannot_take_holds_and_hears_its_number(rig, fake_speech,
                                                                                       monkeypatch):
    outage = Outage(monkeypatch, calls, "file_case", heal_after_holds=1)
    fake_speech.say("小区 门口 的 路灯 坏 了")
    result = await rig.simulator().call(known_caller())

    assert outage.failed >= 2  # the step's own retries ran out first
    (path, query), = outage.held_urls
    assert path == "/twilio/petition/confirm" and query["held"] == "1" and query["held_digits"] == "1"
    # the caller held once, then heard the number; nothing asked again
    after_readback = result.heard[[i for i, h in enumerate(result.heard) if "您反映的是" in h][-1] + 1:]
    assert after_readback[0] == WAIT and "编号是" in after_readback[1], result.heard
    assert ERROR not in result.heard and not any("没有听到您按键" in h for h in result.heard)
    (case,) = rig.cases()
    assert result.case_number == case.number and case.description == "小区门口的路灯坏了"
    assert "transcript_unconfirmed" not in (case.flags or [])  # the key 1 counted, carried through the hold
    with session_scope(rig.engine) as s:
        events = s.exec(select(CaseEvent.action).where(CaseEvent.case_id == case.id)).all()
    assert events.count(events[0]) == 1 and len(events) >= 1, events  # filed once: one creating row
    assert rig.call_session(result.call_sid).outcome == "case_filed"


async def test_the_open_questions_end_taken_again_after_a_hold_keeps_the_words(rig, fake_speech, monkeypatch):
    """The database drops the very write that claims the turn's end: the step taken again is
    still that turn's end (its first try's claim, if any, is its own), and reads back the words."""
    outage = Outage(monkeypatch, Call, "claim_end", heal_after_holds=2)
    fake_speech.say("楼道 灯 不亮 三 天 了")
    result = await rig.simulator().call(known_caller())

    assert [path for path, _ in outage.held_urls] == ["/twilio/open/done", "/twilio/open/done"]
    assert [q["held"] for _, q in outage.held_urls] == ["1", "2"] and outage.held_urls[0][1]["seg"] == "petition-1"
    assert result.heard.count(WAIT) == 2
    assert sum("您反映的是：楼道灯不亮三天了" in h for h in result.heard) == 1
    (case,) = rig.cases()
    assert result.case_number == case.number and case.description == "楼道灯不亮三天了"
    (recording,) = rig.recordings(case)
    assert recording.name.endswith("petition-1.wav")


def test_a_claim_left_by_a_first_try_is_taken_again_only_by_that_turns_hold():
    call = Call.of(CallSession(call_sid="CA" + "d1" * 16, from_number=KNOWN_PHONE))
    assert call.claim_end("petition-1") is True  # the first try claimed, then the database went away
    assert call.claim_end("petition-1") is False  # another end of the same turn waits for its answer
    assert call.claim_end("petition-1", retaking=True) is True  # the first try, taken again after a hold
    call.replied("petition-1", "<Response/>")
    assert call.claim_end("petition-1", retaking=True) is False  # answered: nobody takes it again


async def test_after_the_last_hold_the_caller_is_let_go_and_their_words_are_filed_when_the_database_is_back(rig, fake_speech,
                                                                                       monkeypatch):
    outage = Outage(monkeypatch, calls, "file_case", heal_after_holds=None)  # down for the whole call
    fake_speech.say("井盖 丢 了")
    result = await rig.simulator().call(known_caller())

    rounds = int(rig.hotline.config["hold"]["rounds"])
    assert [q["held"] for _, q in outage.held_urls] == [str(n) for n in range(1, rounds + 1)]
    assert result.heard.count(WAIT) == rounds and result.heard[-1] == ERROR
    assert rig.cases() == [] and not result.case_number
    # The call's end (Twilio's status callback, which Twilio never sends again) found the
    # database away too: the instance keeps trying, and files the words once it is back.
    assert rig.call_session(result.call_sid).case_id is None
    outage.heal_after_holds = 0
    await until(lambda: rig.cases(), timeout=10, message="the call filed once the database is back")
    (case,) = rig.cases()
    assert case.description == "井盖丢了" and "caller_hung_up" in case.flags
    assert rig.call_session(result.call_sid).outcome == "hung_up_case"
