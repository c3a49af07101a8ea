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
from core.platform.media import media_store
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
    media_store(settings).delete(REC)
    await login(client, "op")
    page = await client.get(f"/console/cases/{world.triage_case}")
    assert page.status == 200
    html = await page.text()
    assert "录音文件缺失" in html and f"/files/{world.recording_id}\"></audio>" not in html
    missing = await client.get(f"/console/cases/{world.triage_case}/files/{world.recording_id}")
    assert missing.status == 404 and "录音文件缺失" in await missing.text()
    en = await client.get(f"/console/cases/{world.triage_case}?lang=en")
    assert "Recording file missing" in await en.text()


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
