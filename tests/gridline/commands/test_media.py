"""`gridline media migrate` and `gridline media check` on a real bucket (SeaweedFS), and a
wrong bucket, key or endpoint at `gridline serve`: one line naming the setting."""

from __future__ import annotations

import hashlib

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from core.cases.models import Attachment
from core.platform.db import session_scope
from core.platform.settings import get_settings
from tests.gridline.test_cli import assert_short_error, gridline
from tests.support.serve import database_url

FILES = {
    "recordings/2026/12/CA1-1.wav": b"RIFF" + b"\x01" * 3000,
    "chat/2026/12/voice-a.oga": b"OggS" + b"\x02" * 500,
    "chat/2026/12/photo-b.jpg": b"\xff\xd8\xff" + b"\x03" * 800,
}


@pytest.fixture
def local_store(engine, tmp_path):
    """Three attachments whose files lie in the data directory, and one whose file is gone."""
    with session_scope(engine) as session:
        for key, data in FILES.items():
            (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / key).write_bytes(data)
            session.add(Attachment(kind="recording", path=key, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
        session.add(Attachment(kind="photo", path="chat/2026/12/gone.jpg", size=10, sha256="0" * 64))
    return tmp_path


@pytest.fixture
def cli(monkeypatch, engine, local_store, s3_bucket):
    from gridline.cli import app

    monkeypatch.setenv("GRIDLINE_DATABASE_URL", database_url(engine))
    monkeypatch.setenv("GRIDLINE_DATA_DIR", str(local_store))
    monkeypatch.setenv("GRIDLINE_MEDIA_URL", s3_bucket.url)
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(args))
    get_settings.cache_clear()


def test_migrate_moves_the_local_store_and_resumes(cli, s3_bucket, local_store):
    first = cli("media", "migrate")
    assert first.exit_code == 1, first.output  # one file is missing locally: said, and the status says so
    assert "3 uploaded, 0 already, 0 waiting, 1 missing, 0 mismatch" in first.output
    assert "chat/2026/12/gone.jpg is not in" in first.output
    assert {k: v for k, v in s3_bucket.objects().items() if k in FILES} == {k: len(v) for k, v in FILES.items()}
    for key, data in FILES.items():
        assert s3_bucket.read(key) == data
        assert (local_store / key).exists()  # left in place
    again = cli("media", "migrate")  # resumable: what is there with its sha256 is not sent again
    assert "0 uploaded, 3 already" in again.output


def test_migrate_sends_again_what_the_bucket_holds_wrongly(cli, s3_bucket):
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key=s3_bucket.object_key("chat/2026/12/voice-a.oga"),
                                         Body=b"half")
    result = cli("media", "migrate")
    assert "3 uploaded, 0 already" in result.output
    assert s3_bucket.read("chat/2026/12/voice-a.oga") == FILES["chat/2026/12/voice-a.oga"]


def test_check_lists_missing_and_wrong_sized_objects(cli, s3_bucket):
    cli("media", "migrate")
    client = s3_bucket.server.client()
    client.delete_object(Bucket=s3_bucket.name, Key=s3_bucket.object_key("recordings/2026/12/CA1-1.wav"))
    client.put_object(Bucket=s3_bucket.name, Key=s3_bucket.object_key("chat/2026/12/photo-b.jpg"), Body=b"short")
    result = cli("media", "check")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any("recordings/2026/12/CA1-1.wav: missing" in line for line in lines), result.output
    assert any("chat/2026/12/gone.jpg: missing" in line for line in lines), result.output
    assert any("chat/2026/12/photo-b.jpg: size 5, recorded 803" in line for line in lines), result.output
    assert not any("voice-a.oga" in line for line in lines)
    assert "4 attachment(s) checked" in result.output and "3 with a problem" in result.output


def test_check_with_everything_there_is_quiet_and_succeeds(cli, engine, s3_bucket):
    with session_scope(engine) as session:
        session.delete(session.get(Attachment, 4))  # the one whose file was never there
    cli("media", "migrate")
    result = cli("media", "check", "--sha256")
    assert result.exit_code == 0, result.output
    assert "3 attachment(s) checked" in result.output and "0 with a problem" in result.output


@pytest.mark.parametrize(("change", "fragment"), [
    ({"GRIDLINE_MEDIA_URL": "s3://no-such-bucket/m?addressing=path"}, "GRIDLINE_MEDIA_URL: no bucket 'no-such-bucket'"),
    ({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: refused by"),
    ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "AWS_ENDPOINT_URL=http://127.0.0.1:9: cannot reach it"),
    ({"GRIDLINE_MEDIA_URL": "s3://Bad_Bucket"}, "GRIDLINE_MEDIA_URL='s3://Bad_Bucket'"),
], ids=["missing-bucket", "refused-key", "unreachable-endpoint", "bad-url"])
@pytest.mark.one_database
def test_serve_with_a_wrong_store_is_one_line(tmp_path, engine, seaweed, s3_bucket, change, fragment):
    env = {**seaweed.env(), "GRIDLINE_DATA_DIR": str(tmp_path), "GRIDLINE_DATABASE_URL": database_url(engine),
           "GRIDLINE_MEDIA_URL": s3_bucket.url, **change}
    result = gridline("serve", "--port", "1", env=env, cwd=tmp_path)
    assert_short_error(result, fragment)


def test_migrate_also_takes_the_files_no_attachment_names(cli, s3_bucket, local_store):
    """A survey comment whose call never attached it, a turn of a call never filed: moved
    under their own keys (nothing a resident said stays on one machine). Temporary files
    and whatever lies outside the media folders stay where they are."""
    comment = "recordings/2026/12/CA9-survey-comment.wav"
    (local_store / comment).write_bytes(b"RIFF" + b"\x05" * 700)
    (local_store / "recordings/2026/12/.CA9-2.wav.123.tmp").write_bytes(b"half a write")
    (local_store / "notes.txt").write_bytes(b"not a resident's file")
    first = cli("media", "migrate")
    assert "3 uploaded" in first.output and "1 unattached" in first.output, first.output
    assert s3_bucket.read(comment) == (local_store / comment).read_bytes()
    held = set(s3_bucket.objects())
    assert not any(".tmp" in key or key.endswith("notes.txt") for key in held)
    again = cli("media", "migrate")
    assert "0 uploaded, 4 already" in again.output and "0 unattached" in again.output, again.output


def test_check_lists_a_file_whose_upload_was_given_up(cli, engine, s3_bucket):
    from core.platform import uploads
    from core.platform.models import Job, JobStatus

    cli("media", "migrate")
    with session_scope(engine) as session:
        att = Attachment(kind="survey_comment", path="recordings/2026/12/CA7-comment.wav", size=10, sha256="1" * 64)
        session.add(att)
        uploads.mark_waiting(session, att, "host-a:/srv/gridline")
    with session_scope(engine) as session:
        job = session.exec(select(Job).where(Job.kind == uploads.MEDIA_UPLOAD_JOB)).one()
        job.status = JobStatus.failed
        session.add(job)
    result = cli("media", "check")
    assert result.exit_code == 1
    assert ("recordings/2026/12/CA7-comment.wav: failed to upload; the file is kept in host-a:/srv/gridline"
            in result.output), result.output
