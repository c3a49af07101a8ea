"""core.platform.uploads on a real bucket (SeaweedFS): a file the bucket could not take waits in the
spool, /readyz says degraded with the count, and the media_upload job of the real app
uploads it when the bucket is back, confirms the sha256 and only then drops the spool copy."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select, update

from core import actions
from core.cases.models import Attachment, Channel
from core.people.models import AuditEntry
from core.platform import uploads
from core.platform.clock import utcnow
from core.platform.db import session_scope
from core.platform.media import keep
from core.platform.media_stores import media_store
from core.platform.models import Job, JobStatus
from core.platform.settings import Settings
from gridline.app import SERVICES, build_app

KEY = "recordings/2026/12/CA-upload-1.wav"
AUDIO = b"RIFF" + bytes(range(256)) * 40


@pytest.fixture
async def app_client(engine, s3_bucket, tmp_path):
    app = build_app(Settings(data_dir=tmp_path, media_url=s3_bucket.url), engine=engine, channels=(),
                    run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        yield app[SERVICES], client


def _file_while_down(services, engine, seaweed) -> int:
    """A petition filed while the bucket is away: its recording waits in the spool."""
    spooled = services.media.spool_path(KEY)
    spooled.parent.mkdir(parents=True, exist_ok=True)
    spooled.write_bytes(AUDIO)
    seaweed.stop()
    kept = keep(services.media, KEY)
    assert kept.pending and spooled.exists()
    with session_scope(engine) as session:
        case, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description="路灯坏了", idempotency_key="hotline|CA-upload",
            files=(actions.FileRef("recording", KEY, "audio/wav", kept.object.size, kept.object.sha256,
                                   waiting_in=services.spool),)), actor="hotline")
        return case.id


def _due_now(engine) -> None:
    """The job's retry wait (media.upload_retry_seconds) is over."""
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.kind == uploads.MEDIA_UPLOAD_JOB).values(run_at=utcnow()))


def _row(engine) -> Attachment:
    with session_scope(engine) as session:
        row = session.exec(select(Attachment).where(Attachment.path == KEY)).one()
        session.expunge(row)
        return row


async def test_a_waiting_file_is_uploaded_when_the_bucket_is_back(engine, seaweed, s3_bucket, app_client):
    services, client = app_client
    try:
        _file_while_down(services, engine, seaweed)
        ready = await client.get("/readyz")
        assert ready.status == 200
        assert await ready.json() == {"status": "degraded", "media": "uploads pending", "pending_uploads": 1}
        assert await services.jobs.run_once() == 1  # the bucket is still away: put back, not failed
        assert _row(engine).upload_pending and services.media.spool_path(KEY).exists()
        with session_scope(engine) as session:
            job = session.exec(select(Job).where(Job.kind == uploads.MEDIA_UPLOAD_JOB)).one()
            assert job.status == JobStatus.queued and job.attempts == 0 and job.run_at > utcnow() + timedelta(seconds=20)
    finally:
        seaweed.start()
    _due_now(engine)
    assert await services.jobs.run_once() == 1
    row = _row(engine)
    assert not row.upload_pending and row.sha256 == hashlib.sha256(AUDIO).hexdigest()
    assert s3_bucket.read(KEY) == AUDIO
    assert not services.media.spool_path(KEY).exists()  # dropped only after the read-back matched
    with session_scope(engine) as session:
        audited = session.exec(select(AuditEntry).where(AuditEntry.action == "media_uploaded")).one()
        assert audited.target_id == str(row.id) and audited.detail["sha256"] == row.sha256
    assert await (await client.get("/readyz")).json() == {"status": "ready", "pending_uploads": 0}


async def test_an_instance_without_the_spool_copy_leaves_the_job_to_its_owner(engine, seaweed, s3_bucket,
                                                                             app_client):
    services, _client = app_client
    try:
        _file_while_down(services, engine, seaweed)
    finally:
        seaweed.start()
    services.media.spool_path(KEY).rename(services.media.spool_path(KEY).with_suffix(".elsewhere"))
    with session_scope(engine) as session:  # as if another instance had taken the call
        job = session.exec(select(Job).where(Job.kind == uploads.MEDIA_UPLOAD_JOB)).one()
        job.payload = {**job.payload, "spool": "other-host:/srv/gridline"}
        session.add(job)
    assert await services.jobs.run_once() == 1
    assert _row(engine).upload_pending  # not given up, not marked lost: its owner will upload it
    assert KEY not in s3_bucket.objects()


async def test_a_file_shredded_while_waiting_leaves_no_spool_copy(engine, seaweed, s3_bucket, app_client):
    services, _client = app_client
    try:
        _file_while_down(services, engine, seaweed)
    finally:
        seaweed.start()
    with session_scope(engine) as session:
        session.delete(session.exec(select(Attachment).where(Attachment.path == KEY)).one())
    _due_now(engine)
    assert await services.jobs.run_once() == 1
    assert not services.media.spool_path(KEY).exists() and KEY not in s3_bucket.objects()


def test_uploaded_before_a_crash_is_recognised(engine, seaweed, s3_bucket, tmp_path):
    """The upload went through but the process died before the row said so: the spool copy
    is gone, the bucket has the recorded bytes."""
    store = media_store(Settings(data_dir=tmp_path, media_url=s3_bucket.url))
    store.put_bytes(KEY, AUDIO)
    with session_scope(engine) as session:
        att = Attachment(kind="recording", path=KEY, size=len(AUDIO), sha256=hashlib.sha256(AUDIO).hexdigest())
        session.add(att)
        uploads.mark_waiting(session, att, "here")
    assert uploads.upload_one(engine, store, KEY, "here", "here") == "already"
    assert not _row(engine).upload_pending


async def test_an_upload_that_never_gets_through_is_given_up_and_its_file_kept(engine, seaweed, s3_bucket,
                                                                                override, tmp_path):
    """[media] upload_attempts bounds the job: the waits double from upload_retry_seconds
    up to upload_retry_longest_seconds; then the job fails, the attachment stays
    upload_pending with its file in the spool, and the case page, /readyz and `gridline
    media check` say it failed."""
    override("[media]\nupload_retry_seconds = 30\nupload_retry_longest_seconds = 50\nupload_attempts = 3\n")
    app = build_app(Settings(data_dir=tmp_path, media_url=s3_bucket.url), engine=engine, channels=(),
                    run_jobs=False)
    async with TestClient(TestServer(app)) as client:
        services = app[SERVICES]
        try:
            _file_while_down(services, engine, seaweed)
            waits = []
            for _ in range(3):
                _due_now(engine)
                before = utcnow()
                assert await services.jobs.run_once() == 1
                with session_scope(engine) as session:
                    job = session.exec(select(Job).where(Job.kind == uploads.MEDIA_UPLOAD_JOB)).one()
                    waits.append((job.status, round((job.run_at - before).total_seconds() / 10) * 10))
        finally:
            seaweed.start()
        # two waits (30 s, then 50 s: doubled, capped), then given up at the third try
        assert [w for w in waits[:2]] == [(JobStatus.queued, 30), (JobStatus.queued, 50)]
        assert waits[2][0] == JobStatus.failed
        row = _row(engine)
        assert row.upload_pending and services.media.spool_path(KEY).read_bytes() == AUDIO  # never deleted
        assert KEY not in s3_bucket.objects()
        with session_scope(engine) as session:
            audited = session.exec(select(AuditEntry).where(AuditEntry.action == "media_upload_failed")).one()
            assert audited.target_id == str(row.id) and audited.detail["tries"] == 3
            assert uploads.failed_keys(session) == {KEY: services.spool}
        assert await (await client.get("/readyz")).json() == {
            "status": "degraded", "media": "uploads failed", "pending_uploads": 1, "failed_uploads": 1}
        _due_now(engine)
        assert await services.jobs.run_once() == 0  # failed is final: nothing tries it again


def test_the_parts_of_a_recording_go_once_the_whole_file_is_confirmed(engine, seaweed, s3_bucket, tmp_path):
    """A bucket that went away mid-call leaves ``<key>.parts/`` objects (and parts held in
    the database): the upload that confirms the whole WAV removes them."""
    from core.platform.models import AudioPart
    from ivr.spool import part_key

    store = media_store(Settings(data_dir=tmp_path, media_url=s3_bucket.url))
    for seq in range(3):
        store.put_bytes(part_key(KEY, seq), AUDIO[seq * 100:(seq + 1) * 100])
    spooled = store.spool_path(KEY)
    spooled.parent.mkdir(parents=True, exist_ok=True)
    spooled.write_bytes(AUDIO)
    with session_scope(engine) as session:
        session.add(AudioPart(key=KEY, seq=3, start=300, data=AUDIO[300:400]))
        att = Attachment(kind="recording", path=KEY, size=len(AUDIO), sha256=hashlib.sha256(AUDIO).hexdigest())
        session.add(att)
        uploads.mark_waiting(session, att, "here")
    assert {k for k in s3_bucket.objects() if k.startswith(KEY)} == {part_key(KEY, n) for n in range(3)}
    assert uploads.upload_one(engine, store, KEY, "here", "here") == "uploaded"
    assert {k for k in s3_bucket.objects() if k.startswith(KEY)} == {KEY}
    assert s3_bucket.read(KEY) == AUDIO and not spooled.exists()
    with session_scope(engine) as session:
        assert session.exec(select(AudioPart).where(AudioPart.key == KEY)).all() == []
        # its job has nothing left to do
        assert session.exec(select(Job.status).where(Job.kind == uploads.MEDIA_UPLOAD_JOB)).one() == JobStatus.done
