"""console.views.files: recordings served with HTTP Range (206) to accounts that may see
the case, from paths relative to the data directory."""

from __future__ import annotations

import re

from sqlmodel import select

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


# ---------------------------------------------------------------- a resident's file is never trusted

FILE_CSP = "default-src 'none'; media-src 'self'; img-src 'self'; sandbox"


def _attach_raw(engine, world, kind: str, name: str, data: bytes, mime: str | None) -> int:
    """An Attachment row as an older Gridline stored it: the sender's type, unchecked
    (written past core's actions, which no longer record a type off the allow-list)."""
    from core.cases.models import Attachment, Case
    from core.platform.db import session_scope

    path = world.data_dir / "chat" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    with session_scope(engine) as session:
        case_id = session.exec(select(Case.id).where(Case.number == world.triage_case)).one()
        att = Attachment(case_id=case_id, kind=kind, path=f"chat/{name}", mime_type=mime, size=len(data))
        session.add(att)
        session.flush()
        return att.id


async def test_every_file_goes_out_with_nosniff_its_own_sandbox_csp_and_a_safe_disposition(client, engine, world):
    from tests.support.media_samples import audio, image

    voice = _attach_raw(engine, world, "voice", "voice-real.oga", audio("ogg", 2.0), "audio/ogg")
    photo = _attach_raw(engine, world, "photo", "photo-real.jpg", image("jpeg"), "image/jpeg")
    page = _attach_raw(engine, world, "voice", "voice-page.oga", b"<!doctype html><script>alert(1)</script>",
                       "text/html")
    script = _attach_raw(engine, world, "voice", "voice-script.oga", b"document.title = 'ran'", "text/javascript")
    svg = _attach_raw(engine, world, "photo", "photo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                      "image/svg+xml")
    unknown = _attach_raw(engine, world, "voice", "voice-none.oga", b"\x00" * 64, None)
    await login(client, "op")
    base = f"/console/cases/{world.triage_case}/files"
    # (attachment, the type served, shown in place)
    expected = [(world.recording_id, "audio/wav", True), (voice, "audio/ogg", True), (photo, "image/jpeg", True),
                (page, "application/octet-stream", False), (script, "application/octet-stream", False),
                (svg, "application/octet-stream", False), (unknown, "application/octet-stream", False)]
    for att, served, inline in expected:
        resp = await client.get(f"{base}/{att}")
        assert resp.status == 200, att
        assert resp.headers["Content-Type"] == served, att
        assert resp.headers.getall("X-Content-Type-Options") == ["nosniff"]
        # the file's own policy, not the console's page CSP added beside or over it
        assert resp.headers.getall("Content-Security-Policy") == [FILE_CSP], att
        assert resp.headers["Cross-Origin-Resource-Policy"] == "same-origin"
        assert "private" in resp.headers["Cache-Control"]
        if inline:
            assert "Content-Disposition" not in resp.headers, att
        else:
            assert resp.headers["Content-Disposition"] == (
                f'attachment; filename="case-{world.triage_case}-file-{att}.bin"'), att
    # the real voice note still plays in place: seekable, 206 for a range, the right bytes
    whole = await (await client.get(f"{base}/{voice}")).read()
    part = await client.get(f"{base}/{voice}", headers={"Range": "bytes=0-99"})
    assert part.status == 206 and part.headers["Content-Type"] == "audio/ogg"
    assert part.headers.getall("Content-Security-Policy") == [FILE_CSP]
    assert await part.read() == whole[:100]
    # the case page plays and shows what may be, and offers the rest as downloads only
    html = await (await client.get(f"/console/cases/{world.triage_case}")).text()
    for att in (world.recording_id, voice):  # each recording in its own player
        assert re.search(rf'<audio [^>]*class="player" controls preload="metadata" src="{base}/{att}">', html), att
    assert f'<img src="{base}/{photo}"' in html
    for att in (page, script, svg, unknown):
        assert f'<a href="{base}/{att}" download>' in html
        assert f'src="{base}/{att}"' not in html
