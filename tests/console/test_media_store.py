"""The console serves a case's files from either media store (the data directory, or a real
S3 bucket on SeaweedFS) through the same view: ranges (206, Content-Range, 416), the
security headers of issue 20, a missing object said as such (never a 500), and a file
still waiting in the spool for the bucket."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from core.cases.models import Attachment
from core.platform.db import session_scope
from core.platform.media_stores import media_store
from core.platform.settings import Settings
from gridline.app import build_app
from tests.console.conftest import login

REC = "recordings/20261120/CA-test-petition-1.wav"


@pytest.fixture(params=["local", "s3"])
def settings(request, world) -> Settings:
    """The world's recording in the store under test; with a bucket, only there."""
    if request.param == "local":
        return Settings(data_dir=world.data_dir)
    bucket = request.getfixturevalue("s3_bucket")
    settings = Settings(data_dir=world.data_dir, media_url=bucket.url)
    store = media_store(settings)
    store.put_file(REC, world.data_dir / REC)
    (world.data_dir / REC).unlink()  # nothing local to fall back on
    return settings


@pytest.fixture
async def client(engine, world, settings):
    app = build_app(settings, engine=engine, channels=("console",), run_jobs=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_ranges_from_the_store(client, world, settings):
    await login(client, "op")
    url = f"/console/cases/{world.triage_case}/files/{world.recording_id}"
    whole = await client.get(url)
    body = await whole.read()
    assert whole.status == 200 and body[:4] == b"RIFF" and whole.headers["Accept-Ranges"] == "bytes"
    assert len(body) == media_store(settings).stat(REC) == int(whole.headers["Content-Length"])
    part = await client.get(url, headers={"Range": "bytes=100-40099"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 100-40099/{len(body)}"
    assert await part.read() == body[100:40100]
    assert part.headers["X-Content-Type-Options"] == "nosniff"
    assert part.headers["Content-Security-Policy"].endswith("sandbox")
    assert part.headers["Content-Type"] == "audio/wav"
    tail = await client.get(url, headers={"Range": "bytes=-44"})
    assert tail.status == 206 and await tail.read() == body[-44:]
    assert tail.headers["Content-Range"] == f"bytes {len(body) - 44}-{len(body) - 1}/{len(body)}"
    rest = await client.get(url, headers={"Range": f"bytes={len(body) - 10}-"})
    assert rest.status == 206 and await rest.read() == body[-10:]
    past = await client.get(url, headers={"Range": f"bytes={len(body) + 10}-"})
    assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{len(body)}"
    several = await client.get(url, headers={"Range": "bytes=0-1,5-6"})  # not served in part: whole
    assert several.status == 200 and await several.read() == body


async def test_a_range_asks_the_store_for_that_range_only(client, world, settings, monkeypatch):
    """Streamed from the store as asked, never the whole object read first."""
    store = media_store(settings)
    asked = []
    real = store.open_range

    def spy(key, start=0, end=None):
        asked.append((key, start, end))
        return real(key, start, end)

    monkeypatch.setattr(store, "open_range", spy)
    await login(client, "op")
    resp = await client.get(f"/console/cases/{world.triage_case}/files/{world.recording_id}",
                            headers={"Range": "bytes=1000-1999"})
    assert resp.status == 206 and len(await resp.read()) == 1000
    assert asked == [(REC, 1000, 2000)]


async def test_a_missing_object_is_said_on_the_page_and_the_file_is_404(client, world, settings):
    """The page does not ask the store about each file; the player's download finds the
    object missing ("录音文件缺失", 404), and from then on the page says so too."""
    media_store(settings).delete(REC)
    await login(client, "op")
    missing = await client.get(f"/console/cases/{world.triage_case}/files/{world.recording_id}")
    assert missing.status == 404 and "录音文件缺失" in await missing.text()
    page = await client.get(f"/console/cases/{world.triage_case}")
    assert page.status == 200
    html = await page.text()
    assert "录音文件缺失" in html and f"/files/{world.recording_id}\"></audio>" not in html
    en = await client.get(f"/console/cases/{world.triage_case}?lang=en")
    assert "Recording file missing" in await en.text()


async def test_a_case_page_asks_the_store_nothing(client, world, settings, monkeypatch):
    """Each file's state comes from the database (upload_pending, a given-up upload) and
    what downloads found: a page view is no round trip to the bucket per file."""
    store = media_store(settings)
    asked = []
    for name in ("stat", "open_range", "sha256", "recorded_sha256"):
        real = getattr(store, name)
        monkeypatch.setattr(store, name, lambda *a, _name=name, _real=real, **k: asked.append(_name) or _real(*a, **k))
    await login(client, "op")
    page = await client.get(f"/console/cases/{world.triage_case}")
    assert page.status == 200 and f"/files/{world.recording_id}\"></audio>" in await page.text()
    assert asked == []


async def test_a_file_waiting_for_the_bucket_is_said_and_played_from_the_spool(engine, client, world, settings):
    store = media_store(settings)
    spooled = store.spool_path(REC)
    if not spooled.exists():  # the bucket case: the object is not there yet, the spool has it
        store.get_to_file(REC, spooled)
        store.delete(REC)
    data = spooled.read_bytes()
    with session_scope(engine) as session:
        att = session.exec(select(Attachment).where(Attachment.id == world.recording_id)).one()
        att.upload_pending = True
        session.add(att)
    await login(client, "op")
    html = await (await client.get(f"/console/cases/{world.triage_case}")).text()
    assert "录音等待上传" in html and "录音文件缺失" not in html
    resp = await client.get(f"/console/cases/{world.triage_case}/files/{world.recording_id}",
                            headers={"Range": "bytes=0-99"})
    assert resp.status == 206 and await resp.read() == data[:100]


async def test_a_survey_comment_waiting_for_the_bucket_is_flagged_and_shown(engine, client, world, settings):
    """A follow-up call's comment filed while its WAV is still in a spool: the attachment is
    upload_pending with its media_upload job queued (as a petition's recordings are), the
    comment's event says so, and the case page shows the comment "waiting to be uploaded"."""
    from core import actions
    from core.cases.models import Case, CaseEvent
    from core.followup.models import Survey
    from core.platform import uploads
    from core.platform.models import Job

    comment_key = "recordings/20261120/CA-test-survey-comment.wav"
    spooled = media_store(settings).spool_path(comment_key)
    spooled.parent.mkdir(parents=True, exist_ok=True)
    spooled.write_bytes((world.data_dir / REC).read_bytes() if (world.data_dir / REC).exists()
                        else media_store(settings).get_bytes(REC))
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == world.triage_case)).one()
        survey = Survey(case_id=case.id, channel="phone")
        session.add(survey)
        session.flush()
        actions.survey_comment(session, survey, actor="resident", file=actions.FileRef(
            kind="survey_comment", path=comment_key, mime_type="audio/wav", size=spooled.stat().st_size,
            sha256="0" * 64, waiting_in="this-host:/data"))
    with session_scope(engine) as session:
        att = session.exec(select(Attachment).where(Attachment.path == comment_key)).one()
        assert att.upload_pending and att.kind == "survey_comment"
        job = session.exec(select(Job).where(Job.kind == uploads.MEDIA_UPLOAD_JOB)).one()
        assert job.payload == {"key": comment_key, "spool": "this-host:/data"}
        said = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                    CaseEvent.action == "survey_comment")).one()
        assert said.data["upload_pending"] is True
        comment_id = att.id
    await login(client, "op")
    html = await (await client.get(f"/console/cases/{world.triage_case}")).text()
    assert "回访评价录音" in html and f"/files/{comment_id}\"></audio>" in html
    assert f'class="file-state pending" data-file="{comment_id}">录音等待上传' in html
