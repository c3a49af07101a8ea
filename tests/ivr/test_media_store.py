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


def test_a_recovered_turn_is_filed_first_and_uploaded_after_the_commit(engine, tmp_path, s3_bucket):
    """A turn that never ended in a live process (the recovery files it from its spool WAV):
    the case is filed with the recording as waiting in this spool, committed, and only then
    uploaded, so no call or case row is held while the bucket answers; the spool copy goes
    once the bucket's copy is confirmed."""
    from sqlalchemy import text

    from core.cases.models import CallSession, Case
    from core.platform import uploads
    from core.platform.media_stores import media_store
    from core.platform.settings import Settings
    from ivr import calls
    from ivr.spool import wav_bytes
    from ivr.state import CallState, Recording
    from speech_models.audio import mulaw_decode

    call_sid = "CA" + "7" * 32
    key = f"recordings/2026/12/{call_sid}-petition-1.wav"
    store = media_store(Settings(data_dir=tmp_path, media_url=s3_bucket.url))
    spooled = store.spool_path(key)
    spooled.parent.mkdir(parents=True, exist_ok=True)
    spooled.write_bytes(wav_bytes(mulaw_decode(tone(3.0))))
    state = CallState()
    state.petition.segment = "petition-1"
    state.petition.attempt = 1
    state.segments["petition-1"] = Recording(kind="petition", audio_path=key)
    with session_scope(engine) as s:
        s.add(CallSession(call_sid=call_sid, from_number=KNOWN_PHONE, state=state.model_dump(mode="json")))

    seen = []
    real_put = store.put_file

    def put_file(k, path):
        # from another connection: is the case there (committed), is the call's row free?
        with engine.connect() as conn:
            filed = conn.execute(text("SELECT case_id FROM callsession WHERE call_sid = :sid"),
                                 {"sid": call_sid}).scalar()
        free = True
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn, conn.begin():
                conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                try:
                    conn.execute(text("SELECT id FROM callsession WHERE call_sid = :sid FOR UPDATE"),
                                 {"sid": call_sid})
                except Exception:
                    free = False
        seen.append((k, filed is not None, free))
        return real_put(k, path)

    store.put_file = put_file
    try:
        filed = calls.file_case(engine, call_sid, min_speech_s=0.5, recovered=True, data_dir=tmp_path,
                                store=store, spool="this-spool")
        assert filed.created and filed.to_upload == (key,) and seen == []  # nothing sent while filing
        (att,) = _attachments(engine)
        assert att.upload_pending and spooled.exists()
        uploads.upload_after_commit(engine, store, list(filed.to_upload), "this-spool")
    finally:
        del store.put_file
    assert seen == [(key, True, True)]
    (att,) = _attachments(engine)
    data = s3_bucket.read(key)
    assert not att.upload_pending and att.sha256 == hashlib.sha256(data).hexdigest() and not spooled.exists()
    with session_scope(engine) as s:
        assert "recovered_after_restart" in s.get(Case, att.case_id).flags
