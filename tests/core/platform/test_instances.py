"""core.platform.instances: an instance that keeps files in a local folder tells, once and
clearly, that it shares the database with instances keeping theirs elsewhere; the processes
of one machine sharing its folder are not such instances."""

from __future__ import annotations

import logging

import pytest

from core.platform import instances
from core.platform.instances import InstanceLease


@pytest.fixture(autouse=True)
def _not_warned_yet(monkeypatch):
    monkeypatch.setattr(instances, "_local_media_warned", False)


async def test_a_colleague_with_another_folder_is_warned_about_once(engine, tmp_path, caplog):
    here = tmp_path / "here"
    sibling = InstanceLease(engine, local_folder=here)  # another process of this machine
    other = InstanceLease(engine)  # another machine, its files elsewhere (its own folder, or a bucket)
    me = InstanceLease(engine, local_folder=here)
    caplog.set_level(logging.WARNING, logger="core.platform.instances")
    try:
        await sibling.start()
        await me.start()
        assert instances.elsewhere(instances.others_alive(engine, me.id), here) == []
        assert not [r for r in caplog.records if "local folder of its own" in r.getMessage()]

        await other.start()
        assert instances.elsewhere(instances.others_alive(engine, me.id), here) == [other.id]
        await me._look_for_colleagues()  # what each heartbeat does until it has warned
        await me._look_for_colleagues()
        warnings = [r.getMessage() for r in caplog.records if "local folder of its own" in r.getMessage()]
        assert len(warnings) == 1 and str(here) in warnings[0] and "GRIDLINE_MEDIA_URL=s3://" in warnings[0]
    finally:
        for lease in (me, other, sibling):
            await lease.stop()
    assert not (here / instances.MARKS / me.id).exists(), "a stopped instance takes its mark away"


async def test_an_instance_with_a_bucket_says_nothing(engine, tmp_path, caplog):
    other = InstanceLease(engine, local_folder=tmp_path / "there")  # started first: it sees nobody
    me = InstanceLease(engine)  # a bucket: no local folder of its own
    caplog.set_level(logging.WARNING, logger="core.platform.instances")
    try:
        await other.start()
        await me.start()
        await me._look_for_colleagues()
        assert [r.getMessage() for r in caplog.records if "local folder of its own" in r.getMessage()] == []
    finally:
        await me.stop()
        await other.stop()
