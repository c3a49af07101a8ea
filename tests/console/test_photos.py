"""Photos added on the case page (a worker's phone camera or album): kept upright as a
bounded JPEG without metadata, attached by the core's ``attach`` with an audit row; a file
too big, not a photo, or a post without the page's token is refused with words, and nothing
is attached — over a real aiohttp server on both databases."""

from __future__ import annotations

import io

import aiohttp
from PIL import Image
from sqlmodel import select

from core.cases.models import Attachment, Case, CaseEvent
from core.people.models import AuditEntry
from core.platform.db import session_scope
from tests.console.conftest import csrf_of, login


def _photo(width: int = 3000, height: int = 2000, fmt: str = "PNG") -> bytes:
    image = Image.new("RGB", (width, height), (200, 120, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # taken with the phone turned: it is to be turned upright
    out = io.BytesIO()
    image.save(out, fmt, exif=exif) if fmt == "JPEG" else image.save(out, fmt)
    return out.getvalue()


def _form(token: str | None, *photos: tuple[str, bytes, str], note: str = "") -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    if token is not None:
        data.add_field("_csrf", token)
    data.add_field("note", note)
    for name, body, mime in photos:
        data.add_field("photo", body, filename=name, content_type=mime)
    return data


def _photos_of(engine, number: str) -> list[Attachment]:
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        return list(session.exec(select(Attachment).where(Attachment.case_id == case.id,
                                                          Attachment.kind == "photo")).all())


async def test_a_worker_adds_photos_from_the_phone(client, engine, world):
    number = world.other_grid_case
    await login(client, "w2")
    token = await csrf_of(client, f"/console/cases/{number}")
    page = await (await client.get(f"/console/cases/{number}")).text()
    assert 'capture="environment"' in page and 'id="add-photos"' in page
    resp = await client.post(f"/console/cases/{number}/photos", allow_redirects=False, data=_form(
        token, ("IMG_0001.JPG", _photo(fmt="JPEG"), "image/jpeg"), ("lamp.png", _photo(800, 600), "image/png"),
        note="修好后的路灯"))
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"].endswith(f"/console/cases/{number}?done=photos")
    kept = _photos_of(engine, number)
    assert len(kept) == 2
    for att in kept:
        assert att.mime_type == "image/jpeg" and att.path.startswith("console/")
        with Image.open(world.data_dir / att.path) as image:
            assert image.format == "JPEG" and max(image.size) <= 1600
            assert not image.getexif()  # where and how it was taken: dropped
    sizes = set()
    for att in kept:
        with Image.open(world.data_dir / att.path) as image:
            sizes.add(image.size)
    # 3000×2000 turned upright (EXIF 6), then bounded; the small one as it was
    assert sizes == {(1067, 1600), (800, 600)}
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        [attach] = session.exec(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                        CaseEvent.action == "attach")).all()
        assert attach.actor == "console:w2" and attach.reason == "修好后的路灯"
        assert len(attach.data["attachments"]) == 2
        audit = session.exec(select(AuditEntry).where(AuditEntry.action == "case.photos")).one()
        assert audit.target_id == number and audit.detail["photos"] == 2
    shown = await (await client.get(f"/console/cases/{number}?done=photos")).text()
    assert "上传照片" in shown and shown.count(f"/console/cases/{number}/files/") >= 2


async def test_bad_photos_are_refused_with_words_and_nothing_is_attached(client, engine, world, monkeypatch):
    number = world.other_grid_case
    await login(client, "w2")
    token = await csrf_of(client, f"/console/cases/{number}")
    post = lambda form: client.post(f"/console/cases/{number}/photos", data=form, allow_redirects=False)  # noqa: E731

    resp = await post(_form(token, ("voice.jpg", b"OggS\x00not an image at all", "image/jpeg")))
    assert resp.status == 415 and "这不是照片" in await resp.text()
    resp = await post(_form(token))
    assert resp.status == 400 and "请先拍照或选择照片" in await resp.text()

    import console.views.photos as photos

    small = dict(photos.console_rules(), photo_upload_mb=0.01, photos_at_once=1)
    monkeypatch.setattr(photos, "console_rules", lambda: small)
    resp = await post(_form(token, ("big.png", _photo(), "image/png")))
    assert resp.status == 413 and "照片太大" in await resp.text()
    monkeypatch.setattr(photos, "console_rules", lambda: dict(small, photo_upload_mb=20))
    resp = await post(_form(token, ("a.png", _photo(50, 50), "image/png"), ("b.png", _photo(50, 50), "image/png")))
    assert resp.status == 413 and "一次最多上传 1 张照片" in await resp.text()

    resp = await post(_form("forged", ("a.png", _photo(50, 50), "image/png")))
    assert resp.status == 403
    resp = await post(_form(None, ("a.png", _photo(50, 50), "image/png")))
    assert resp.status == 403
    assert _photos_of(engine, number) == []


async def test_a_worker_cannot_add_photos_to_a_case_outside_their_grids(client, engine, world):
    await login(client, "w2")
    token = await csrf_of(client)
    resp = await client.post(f"/console/cases/{world.triage_case}/photos", allow_redirects=False,
                             data=_form(token, ("a.png", _photo(50, 50), "image/png")))
    assert resp.status == 403
    assert _photos_of(engine, world.triage_case) == []
    await login(client, "viewer")
    token = await csrf_of(client)
    resp = await client.post(f"/console/cases/{world.other_grid_case}/photos", allow_redirects=False,
                             data=_form(token, ("a.png", _photo(50, 50), "image/png")))
    assert resp.status == 403
