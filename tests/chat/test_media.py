"""Downloads: a Bot API that names a file on our own disk (``file_path`` from getFile)
gets nothing from it unless a local Bot API server is configured explicitly."""

from __future__ import annotations

import pytest
from sqlmodel import select

from core.cases.models import Attachment
from core.platform.db import session_scope
from tests.chat.conftest import Harness, _fake_speech

USER = 8301
SECRET = b"root:$6$gridline-test$notarealhash:19000:0:99999:7:::\n"


def _stored_blobs(h) -> list[bytes]:
    data_dir = h.services.settings.data_dir
    return [p.read_bytes() for p in data_dir.rglob("*") if p.is_file()]


async def _send_photo_naming(h, path) -> None:
    h.fake.add_user(USER, "Qian", language_code="zh-hans")
    # The (malicious) Bot API's getFile answers with a path on the bot's machine.
    photo = h.fake.add_file(b"\xff\xd8 what the server would serve", kind="photo", file_path=str(path))
    await h.send(h.fake.make_photo_update(photo.file_id, caption="楼道堆满杂物", user_id=USER))


async def test_local_file_path_is_refused(harness, tmp_path):
    h = harness
    shadow = tmp_path / "shadow"
    shadow.write_bytes(SECRET)
    await _send_photo_naming(h, shadow)
    await h.reply(USER, "文件接收失败")
    with session_scope(h.engine) as session:
        assert session.exec(select(Attachment)).all() == []
    assert SECRET not in _stored_blobs(h)


@pytest.mark.parametrize("mode", ["webhook"])
async def test_local_mode_reads_the_path_it_is_given(mode, fake, engine, demo, tmp_path):
    """With GRIDLINE_TELEGRAM_LOCAL_MODE (a local Bot API server started with --local),
    the path is where the server put the file: it is read."""
    local_file = tmp_path / "telegram-bot-api" / "photos" / "file_7.jpg"
    local_file.parent.mkdir(parents=True)
    local_file.write_bytes(b"\xff\xd8 a photo on the local server's disk \xff\xd9")
    h = Harness(fake, engine, _fake_speech(), tmp_path, mode, settings_options={"telegram_local_mode": True})
    await h.start()
    try:
        await _send_photo_naming(h, local_file)
        await h.reply(USER, "问题发生在哪里")
        with session_scope(h.engine) as session:
            att = session.exec(select(Attachment)).one()
        assert (h.services.settings.data_dir / att.path).read_bytes() == local_file.read_bytes()
    finally:
        await h.stop()


async def test_a_stored_file_has_the_type_of_its_bytes_not_the_senders(harness):
    """The Bot API passes on whatever ``mime_type`` the sender's client declared: a page
    declared as a voice note, a script as audio/ogg, a PNG sent as a photo are stored as
    what their bytes are (core.platform.media_types), never as what they were called."""
    from tests.support.media_samples import audio, image

    h = harness
    h.fake.add_user(USER, "Qian", language_code="zh-hans")
    page = b"<!doctype html><script src='/console/cases/1/files/1'></script>"
    script = b"fetch('/console/users').then(r => r.text()).then(t => { document.title = t })"
    sent = [  # (what, bytes, the declared type, the stored type)
        ("voice", page, "text/html", "application/octet-stream"),
        ("voice", script, "audio/ogg", "application/octet-stream"),
        ("photo", image("png"), None, "image/png"),
        ("photo", page, None, "application/octet-stream"),
        ("voice", audio("ogg", 1.5), "text/html", "audio/ogg"),
    ]
    for kind, data, declared, _ in sent:
        note = h.fake.add_file(data, kind=kind, mime_type=declared)
        if kind == "voice":
            await h.send(h.fake.make_voice_update(note.file_id, duration=2, user_id=USER, mime_type=declared))
        else:
            await h.send(h.fake.make_photo_update(note.file_id, user_id=USER))
    await h.reply(USER, "没有听清楚")  # the real recording, whatever it was called, was decoded (a tone: no words)
    with session_scope(h.engine) as session:
        stored = {bytes((h.services.settings.data_dir / a.path).read_bytes()): a.mime_type
                  for a in session.exec(select(Attachment)).all()}
    assert stored == {data: expected for _, data, _, expected in sent}
