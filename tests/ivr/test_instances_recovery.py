"""Which calls the recovery sweep may take when several instances share the database:
only those nobody is moving on (their instance's lease ran out, or they are stale), never
one with a stream open on a live instance."""

from __future__ import annotations

from datetime import timedelta

from core.cases.models import CallSession
from core.platform import instances
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.models import Instance, StreamSegment
from ivr.recovery import pending_calls


def call(session, sid: str, *, holder: str | None, age_s: float) -> None:
    session.add(CallSession(call_sid=sid, audio_path=f"recordings/{sid}.wav", instance_id=holder,
                            updated_at=utcnow() - timedelta(seconds=age_s)))


def test_the_sweep_takes_only_calls_nobody_is_moving_on(engine):
    now = utcnow()
    lease = instances.lease_length()
    instances.beat(engine, "live")
    with session_scope(engine) as s:
        s.add(Instance(id="gone", heartbeat_at=now - lease - timedelta(seconds=1)))
        call(s, "CA-live", holder="live", age_s=60)  # moved on a minute ago by a live instance
        call(s, "CA-gone", holder="gone", age_s=1)  # its instance stopped beating
        call(s, "CA-left", holder="left", age_s=1)  # its instance left (lease released)
        call(s, "CA-old", holder=None, age_s=60)  # from before instances kept leases
        call(s, "CA-stale", holder="live", age_s=3600)  # untouched for an hour
        call(s, "CA-streaming", holder="gone", age_s=3600)  # ... but its caller speaks on a live socket
        s.add(StreamSegment(call_sid="CA-streaming", segment="petition-1", instance_id="live"))
        call(s, "CA-closed", holder="gone", age_s=1)  # its stream on the live instance is over
        s.add(StreamSegment(call_sid="CA-closed", segment="petition-1", instance_id="live", audio_closed=True))
        # moved on by a live instance, its socket died with "gone": taken once no webhook came for a lease
        quiet = lease.total_seconds() + 5
        call(s, "CA-socket-died", holder="live", age_s=quiet)
        s.add(StreamSegment(call_sid="CA-socket-died", segment="petition-1", instance_id="gone"))
        call(s, "CA-socket-died-just-now", holder="live", age_s=1)  # its caller's webhook may still come
        s.add(StreamSegment(call_sid="CA-socket-died-just-now", segment="petition-1", instance_id="gone"))
    taken = pending_calls(engine, now - timedelta(seconds=30), stale_before=now - timedelta(minutes=15))
    assert sorted(taken) == ["CA-closed", "CA-gone", "CA-left", "CA-old", "CA-socket-died", "CA-stale"]

    instances.release(engine, "live")  # the live instance stops: its calls are free at once
    taken = pending_calls(engine, now - timedelta(seconds=30))
    assert "CA-live" in taken and "CA-streaming" in taken


def test_a_lease_lives_while_it_beats(engine):
    instances.beat(engine, "a", host="h", pid=1)
    assert instances.alive(engine, "a")
    assert not instances.alive(engine, "a", now=utcnow() + instances.lease_length() + timedelta(seconds=1))
    instances.release(engine, "a")
    assert not instances.alive(engine, "a")
