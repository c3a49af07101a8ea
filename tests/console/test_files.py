"""console.views.files: recordings served with HTTP Range (206) to accounts that may see
the case, from paths relative to the data directory."""

from __future__ import annotations

from tests.console.conftest import login


async def test_range_requests_get_206_and_the_right_bytes(client, world):
    await login(client, "op")
    url = f"/console/cases/{world.triage_case}/files/{world.recording_id}"
    whole = await client.get(url)
    assert whole.status == 200 and whole.headers["Content-Type"] == "audio/wav"
    body = await whole.read()
    assert body[:4] == b"RIFF" and whole.headers["Accept-Ranges"] == "bytes"
    part = await client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(body)}"
    assert await part.read() == body[100:200]
    tail = await client.get(url, headers={"Range": "bytes=-44"})
    assert tail.status == 206 and await tail.read() == body[-44:]
    beyond = await client.get(url, headers={"Range": f"bytes={len(body) + 10}-"})
    assert beyond.status == 416
    assert "private" in part.headers["Cache-Control"]


async def test_a_file_of_another_case_or_a_missing_file_is_404(client, world):
    await login(client, "op")
    assert (await client.get(f"/console/cases/{world.other_grid_case}/files/{world.recording_id}")).status == 404
    (world.data_dir / "recordings/20261120/CA-test-petition-1.wav").unlink()
    missing = await client.get(f"/console/cases/{world.triage_case}/files/{world.recording_id}")
    assert missing.status == 404
