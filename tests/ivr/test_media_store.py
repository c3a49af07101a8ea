"""A call's recordings reach the media store when the case is filed: with a bucket they are
uploaded, confirmed by sha256 and taken out of the spool; with the bucket away the case is
filed all the same and the recordings wait in the spool for the media_upload job."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlmodel import select

from core.cases.models import Attachment
from core.platform.db import session_scope
from core.platform.uploads import MEDIA_UPLOAD_JOB, upload_handler
from gridline.app import SERVICES
from ivr.simulator import CallScript, Turn

from .conftest import KNOWN_PHONE, silence, start_rig, tone


def _attachments(engine) -> list[Attachment]:
    with session_scope(engine) as s:
        rows = list(s.exec(select(Attachment).order_by(Attachment.id)).all())
        for row in rows:
            s.expunge(row)
        return rows


async def test_recordings_are_kept_in_the_bucket(engine, tmp_path, fake_speech, s3_bucket):
    rig = await start_rig(engine, tmp_path, fake_speech, media_url=s3_bucket.url)
    try:
        fake_speech.say("", "小区 门口 的 路灯 坏 了")
        result = await rig.simulator().call(CallScript(
            from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(tone(2.5)), Turn(tone(3) + silence(0.5))]))
        (case,) = rig.cases()
        assert result.case_number == case.number
    finally:
        await rig.stop()
    rows = _attachments(engine)
    assert [a.kind for a in rows] == ["recording", "recording"]
    for att in rows:
        data = s3_bucket.read(att.path)
        assert data[:4] == b"RIFF" and len(data) > 2 * 8000 * 2
        assert att.sha256 == hashlib.sha256(data).hexdigest() and att.size == len(data)
        assert not att.upload_pending
        assert not (tmp_path / att.path).exists()  # the spool copy went once the bucket had it


async def test_with_the_bucket_away_the_case_is_filed_and_its_recording_waits(engine, tmp_path, fake_speech,
                                                                               seaweed, s3_bucket):
    rig = await start_rig(engine, tmp_path, fake_speech, media_url=s3_bucket.url)
    try:
        fake_speech.say("小区 门口 的 路灯 坏 了")
        seaweed.stop()
        result = await rig.simulator().call(CallScript(
            from_number=KNOWN_PHONE, digits=["1", "1"], turns=[Turn(tone(3) + silence(0.5))]))
        (case,) = rig.cases()
        assert result.case_number == case.number and any("编号是" in h for h in result.heard)
        (att,) = _attachments(engine)
        spooled = tmp_path / att.path
        assert att.upload_pending and att.sha256 == hashlib.sha256(spooled.read_bytes()).hexdigest()
    finally:
        seaweed.start()
    services = rig.app[SERVICES]  # the rig serves the hotline alone: its runner gets the upload job here
    services.jobs.register(MEDIA_UPLOAD_JOB, upload_handler(engine, services.media, services.spool, timedelta(0)))
    assert await services.jobs.run_once() == 1
    (att,) = _attachments(engine)
    assert not att.upload_pending and not spooled.exists()
    assert hashlib.sha256(s3_bucket.read(att.path)).hexdigest() == att.sha256
    await rig.stop()
