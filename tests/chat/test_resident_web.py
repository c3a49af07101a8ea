"""The web chat at /chat/ over real HTTP (SQLite and PostgreSQL): the dialog end to end, the
device cookie, CSRF, idempotency keys, rate limits, photos, voice notes, my cases, the
survey and the live progress stream."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from PIL import Image
from sqlmodel import select

from chat.resident_web import Signer
from chat.web_store import chat_key
from core import actions
from core.actions.survey import start_survey
from core.actions.transcription import TRANSCRIPT_PENDING
from core.cases.models import Attachment, Case, CaseStatus, Channel
from core.followup.models import Survey
from core.people.models import Resident
from core.platform.db import session_scope
from speech_models.pool import SpeechPool
from tests.chat.voice import voice_note
from tests.chat.webchat_support import Resident as Phone
from tests.chat.webchat_support import WebServer
from tests.support.fake_transcriber import FakeTranscriber


@pytest.fixture
async def server(engine, demo, tmp_path):
    s = WebServer(engine, tmp_path)
    s.extra = {"demo": demo}
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def phone(server):
    p = Phone(server.url)
    await p.open()
    yield p
    await p.close()


async def _to_confirm(phone: Phone, problem: str, building: str) -> dict:
    await phone.post({"kind": "start"})
    answer = await phone.say(problem)
    assert answer["state"] == "where"
    assert answer["replies"][-1].get("controls") == "where"
    answer = await phone.say(building)
    assert answer["state"] == "address_ok", answer
    await phone.press("ay")
    assert phone.last["state"] == "category"
    await phone.press("c:0")
    assert phone.last["state"] == "confirm"
    return phone.last


async def test_text_petition_end_to_end(server, phone, engine):
    demo = server.extra["demo"]
    confirm = await _to_confirm(phone, "楼道里的灯坏了，晚上看不见", demo.building)
    assert "楼道里的灯坏了" in confirm["replies"][-1]["text"]
    labels = [b["label"] for b in confirm["replies"][-1]["buttons"]]
    assert "✅ 确认提交" in labels
    filed = await phone.press("ok")
    number = filed["case"]
    assert number and number in filed["replies"][-1]["text"]
    assert filed["state"] is None
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        resident = session.get(Resident, case.resident_id)
        assert resident.chat_id.startswith("web:")
        assert case.channel.value == "chat"
        assert case.grid_id == demo.building_grid
    # the conversation is kept on the server: a reload shows it, and my cases lists the case
    state = await phone.state()
    assert any(m.get("case") == number for m in state["messages"])
    assert [c["number"] for c in await phone.cases()] == [number]


async def test_device_cookie_is_signed_and_http_only(server):
    p = Phone(server.url)
    try:
        async with p.http.get(f"{server.url}/chat/") as r:
            assert r.status == 200
            cookie = r.headers["Set-Cookie"]
            page = await r.text()
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/chat/" in cookie
        assert "Content-Security-Policy" in r.headers and "default-src 'self'" in r.headers["Content-Security-Policy"]
        assert len(page.encode()) < 150 * 1024
        assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in page
        # a tampered cookie is no device
        device = next(iter(p.http.cookie_jar)).value
        forged = Phone(server.url)
        forged.http.cookie_jar.update_cookies({"gl_device": device[:-1] + ("0" if device[-1] != "0" else "1")})
        async with forged.http.get(f"{server.url}/chat/api/state") as r:
            assert r.status == 403
        await forged.close()
    finally:
        await p.close()


async def test_forged_and_replayed_posts_are_refused(server, phone, engine):
    # no CSRF token, a wrong one, another device's, another site's Origin: refused, nothing done
    await phone.say("路灯坏了", headers={"X-CSRF-Token": ""}, expect=403)
    await phone.say("路灯坏了", headers={"X-CSRF-Token": "0" * 32}, expect=403)
    other = Phone(server.url)
    await other.open()
    await phone.say("路灯坏了", headers={"X-CSRF-Token": other.csrf}, expect=403)
    await other.close()
    refused = await phone.say("路灯坏了", headers={"Origin": "https://evil.example"}, expect=403)
    assert "刷新" in refused["text"]
    assert (await phone.state())["state"] is None
    # a replayed post (same key) answers as the first time and does nothing again
    first = await phone.say("路灯坏了", key="replay-key-0001")
    again = await phone.say("路灯坏了", key="replay-key-0001")
    assert again["replayed"] and again["replies"] == first["replies"]
    assert len([m for m in (await phone.state())["messages"] if m["from"] == "me"]) == 1
    # a button of an earlier dialog is refused as expired
    dialog = phone.dialog
    await phone.post({"kind": "cancel"})
    await phone.post({"kind": "start"})
    stale = await phone.post({"kind": "button", "action": "skip", "dialog": dialog}, expect=409)
    assert "失效" in stale["text"]
    # malformed posts: a clear error
    await phone.post({"kind": "button", "action": "../../etc"}, expect=400)
    await phone.post({"kind": "location", "lat": 999, "lon": 0}, expect=400)
    await phone.post({"kind": "nonsense"}, expect=400)


async def test_filing_twice_with_the_same_key_makes_one_case(server, phone, engine):
    demo = server.extra["demo"]
    await _to_confirm(phone, "井盖丢了", demo.building)
    press = {"kind": "button", "action": "ok", "label": "确认提交", "dialog": phone.dialog, "key": "submit-once-01"}

    async def send_until_answered() -> dict:
        # As the page does: a busy answer (admission's 503 on a loaded machine) is sent again, same key.
        while True:
            async with phone.http.post(f"{server.url}/chat/api/step", json=press,
                                       headers={"X-CSRF-Token": phone.csrf}) as r:
                if r.status != 503:
                    assert r.status == 200, (r.status, await r.text())
                    return await r.json()
            await asyncio.sleep(0.2)

    results = await asyncio.gather(*(send_until_answered() for _ in range(3)))
    numbers = {r["case"] for r in results}
    assert len(numbers) == 1
    with session_scope(engine) as session:
        assert len(session.exec(select(Case)).all()) == 1


async def test_two_hundred_petitions_a_minute_from_one_device_are_throttled(server, phone, engine):
    throttled = None
    for i in range(200):
        body = {"kind": "text", "text": f"第{i}个问题"} if i % 2 else {"kind": "start"}
        async with phone.http.post(f"{server.url}/chat/api/step", json={**body, "key": f"flood-{i:05d}"},
                                   headers={"X-CSRF-Token": phone.csrf}) as r:
            if r.status == 429:
                throttled = (await r.json(), r.headers.get("Retry-After"))
                break
            assert r.status == 200
    assert throttled is not None, "200 posts in a minute were all accepted"
    body, retry_after = throttled
    assert "太快" in body["text"] and int(retry_after) >= 1
    # the dialog on the server is intact: the last accepted step is there
    assert (await phone.state())["state"] in ("problem", "where")


def test_grid_codes_and_cookies_are_signed():
    signer = Signer(b"k")
    assert signer.grid_of(signer.grid_code("MG-001")) == "MG-001"
    assert signer.grid_of("MG-001.0000000000000000") is None
    assert Signer(b"other").grid_of(signer.grid_code("MG-001")) is None
    assert signer.device_of(signer.device_cookie("abcdefghij")) == "abcdefghij"
    assert signer.device_of("abcdefghij.00") is None


def _png(size: tuple[int, int] = (3000, 2000)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_photos_are_resized_and_filed(server, phone, engine):
    demo = server.extra["demo"]
    await phone.post({"kind": "start"})
    answer = await phone.upload("photo", _png(), "a.png", "image/png")
    assert "照片已收到" in answer["replies"][0]["text"]
    await phone.say("垃圾堆在楼下没人清理")
    await phone.upload("photo", _png((800, 600)), "b.png", "image/png")
    assert "共 2 张" in phone.text()
    await phone.say(demo.building)
    await phone.press("ay")
    await phone.press("c:x")
    assert "照片：2 张" in phone.text()
    number = (await phone.press("ok"))["case"]
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        photos = session.exec(select(Attachment).where(Attachment.case_id == case.id,
                                                       Attachment.kind == "photo")).all()
        assert len(photos) == 2
        for att in photos:
            with Image.open(server.services.settings.data_dir / att.path) as image:
                assert image.format == "JPEG" and max(image.size) <= 1600


async def test_a_20_mb_photo_gets_a_limit_message_and_loses_nothing(server, phone, engine):
    await phone.post({"kind": "start"})
    await phone.say("路灯不亮")
    before = await phone.state()
    big = _png((64, 64)) + b"\0" * (20 * 1024 * 1024 + 10)
    refused = await phone.upload("photo", big, "big.png", "image/png", expect=413)
    assert "20 MB" in refused["text"] and "都还在" in refused["text"]
    notimage = await phone.upload("photo", b"%PDF-1.4 not a photo", "x.pdf", "application/pdf", expect=415)
    assert "不是照片" in notimage["text"]
    after = await phone.state()
    assert after["state"] == before["state"] == "where" and after["version"] == before["version"]
    with session_scope(engine) as session:
        assert session.exec(select(Attachment)).all() == []


async def test_not_audio_as_a_voice_note_is_refused_and_nothing_is_lost(server, phone, engine):
    server.chat.speech = SpeechPool(FakeTranscriber(default="不会用到"), workers=1)
    await phone.post({"kind": "start"})
    await phone.say("下水道堵了")
    refused = await phone.upload("voice", b"this is not audio at all" * 100, "v.webm", "audio/webm", expect=415)
    assert "不是录音" in refused["text"]
    state = await phone.state()
    assert state["state"] == "where"
    with session_scope(engine) as session:
        assert session.exec(select(Attachment)).all() == []
    await phone.say(server.extra["demo"].building)  # the dialog goes on
    assert phone.last["state"] == "address_ok"


async def test_voice_note_is_transcribed_shown_and_correctable(server, phone, engine):
    note = voice_note("lu4 deng1 huai4 le5")
    server.chat.speech = SpeechPool(FakeTranscriber().script(note, "路灯坏了"), workers=1)
    await phone.post({"kind": "start"})
    heard = await phone.upload("voice", note, "voice.ogg", "audio/ogg")
    assert heard["state"] == "voice_ok" and "路灯坏了" in heard["replies"][0]["text"]
    corrected = await phone.say("路灯坏了三天了")  # a typed correction replaces what was heard
    assert corrected["state"] == "where"
    await phone.press("skip")
    await phone.press("c:x")
    assert "路灯坏了三天了" in phone.text() and "语音：已保存" in phone.text()
    number = (await phone.press("ok"))["case"]
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        assert case.description == "路灯坏了三天了"
        voices = session.exec(select(Attachment).where(Attachment.case_id == case.id,
                                                       Attachment.kind == "voice")).all()
        assert len(voices) == 1


async def test_without_a_speech_model_the_voice_note_is_filed_for_an_operator(server, phone, engine):
    note = voice_note("lu4 deng1 huai4 le5")
    await phone.post({"kind": "start"})
    kept = await phone.upload("voice", note, "voice.ogg", "audio/ogg")
    assert "工作人员会听录音" in kept["replies"][0]["text"] and kept["state"] == "where"
    await phone.press("skip")
    await phone.press("c:x")
    number = (await phone.press("ok"))["case"]
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        assert TRANSCRIPT_PENDING in (case.flags or [])
        assert session.exec(select(Attachment).where(Attachment.case_id == case.id)).one().kind == "voice"


async def test_my_cases_survey_unsatisfied_reopens(server, phone, engine):
    demo = server.extra["demo"]
    await _to_confirm(phone, "楼道灯坏了", demo.building)
    number = (await phone.press("ok"))["case"]
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == number)).one()
        case.status = CaseStatus.verified  # as after the check; the survey starts as the core does
        session.add(case)
        session.flush()
        survey = start_survey(session, case)
        assert survey.channel == "chat"
        survey_id = survey.id
    cases = await phone.cases()
    assert cases[0]["survey"] == survey_id
    # another device cannot answer it
    other = Phone(server.url)
    await other.open()
    async with other.http.post(f"{server.url}/chat/api/survey", headers={"X-CSRF-Token": other.csrf},
                               json={"survey": survey_id, "solved": "not", "satisfied": "not"}) as r:
        assert r.status == 409
    await other.close()
    async with phone.http.post(f"{server.url}/chat/api/survey", headers={"X-CSRF-Token": phone.csrf},
                               json={"survey": survey_id, "solved": "not", "satisfied": "not"}) as r:
        assert r.status == 200
        answer = await r.json()
    assert answer["status"] == "reopened" and "重新办理" in answer["text"]
    with session_scope(engine) as session:
        assert session.exec(select(Case).where(Case.number == number)).one().status == CaseStatus.reopened
        assert session.get(Survey, survey_id).satisfied == "not"
    async with phone.http.post(f"{server.url}/chat/api/survey", headers={"X-CSRF-Token": phone.csrf},
                               json={"survey": survey_id, "solved": "solved", "satisfied": "satisfied"}) as r:
        assert r.status == 409 and "记录过了" in (await r.json())["text"]


async def test_a_merged_duplicates_caller_answers_their_own_follow_up_in_my_cases(server, phone, engine):
    """Issue 26: the web chat resident's petition was merged into another caller's case; when
    that case reaches its follow-up, the resident finds it under their own case in 我的诉求
    and answers it there: recorded on the surviving case, which waits for its own caller."""
    demo = server.extra["demo"]
    await _to_confirm(phone, "楼道灯坏了", demo.building)
    number = (await phone.press("ok"))["case"]
    with session_scope(engine) as session:
        first, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description="楼道灯坏了", contact_phone="+8613911112222"), actor="test")
        mine = session.exec(select(Case).where(Case.number == number)).one()
        actions.merge(session, mine, first, actor="console:op")
        first.status = CaseStatus.verified  # as after the check; the survey starts as the core does
        session.add(first)
        session.flush()
        own = start_survey(session, first)
        theirs = session.exec(select(Survey).where(Survey.caller_case_id == mine.id)).one()
        assert (own.channel, theirs.channel, theirs.case_id) == ("phone", "chat", first.id)
        survey_id, first_id = theirs.id, first.id
    listed = {c["number"]: c for c in await phone.cases()}
    assert listed[number]["survey"] == survey_id  # under their own case, not the other caller's survey
    async with phone.http.post(f"{server.url}/chat/api/survey", headers={"X-CSRF-Token": phone.csrf},
                               json={"survey": survey_id, "solved": "solved", "satisfied": "satisfied"}) as r:
        assert r.status == 200
        answer = await r.json()
    assert answer["status"] == "answered" and answer["text"] == "感谢您的评价！您的意见已记录。"
    with session_scope(engine) as session:
        assert session.get(Case, first_id).status == CaseStatus.verified  # its own caller decides the close
        assert session.get(Survey, survey_id).satisfied == "satisfied"
    assert (await phone.cases())[0]["survey"] is None


async def test_progress_arrives_live(server, phone, engine):
    server.chat.rules["progress_every_s"] = 0.1
    demo = server.extra["demo"]
    await _to_confirm(phone, "楼道灯坏了", demo.building)
    number = (await phone.press("ok"))["case"]
    async with phone.http.get(f"{server.url}/chat/api/events") as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        await stream.content.readuntil(b"\n\n")  # retry:
        with session_scope(engine) as session:
            case = session.exec(select(Case).where(Case.number == number)).one()
            case.status = CaseStatus.in_progress
            session.add(case)
        async with asyncio.timeout(10):
            while True:
                line = (await stream.content.readline()).decode()
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    break
    assert event["number"] == number and number in event["text"]


async def test_grid_code_from_a_qr_code_is_a_hint(server, engine):
    demo = server.extra["demo"]
    await server.chat.start()  # the key is read on the first request; this test signs before one
    signed = server.chat.signer.grid_code(demo.micro_code)
    p = Phone(server.url)
    try:
        await p.open(f"?g={signed}")
        state = await p.state()
        assert demo.micro_name in state["grid"]
        await p.post({"kind": "start"})
        await p.say("路灯坏了")
        await p.press("skip")
        await p.press("c:x")
        assert demo.micro_name in p.text()  # the place, from the code, for staff to check
        number = (await p.press("ok"))["case"]
        with session_scope(engine) as session:
            case = session.exec(select(Case).where(Case.number == number)).one()
            assert demo.micro_name in (case.address_text or "")
        # a forged code is ignored
        q = Phone(server.url)
        await q.open(f"?g={demo.micro_code}.0000000000000000")
        assert (await q.state())["grid"] is None
        await q.close()
    finally:
        await p.close()


async def test_language_switch(server, phone):
    async with phone.http.post(f"{server.url}/chat/api/language", headers={"X-CSRF-Token": phone.csrf},
                               json={"language": "en"}) as r:
        assert r.status == 200 and (await r.json())["labels"]["send"] == "Send"
    answer = await phone.post({"kind": "start"})
    assert "What is the problem" in answer["replies"][0]["text"]


def test_chat_key_is_never_a_telegram_chat():
    assert not chat_key("abc").lstrip("-").isdigit()


async def test_grid_map_gives_the_outlines_and_a_picked_point_finds_its_grid(server, phone):
    demo = server.extra["demo"]
    async with phone.http.get(f"{server.url}/chat/api/map") as r:
        assert r.status == 200
        grid_map = await r.json()
    names = {g["name"] for g in grid_map["grids"]}
    assert demo.micro_name in names
    x0, y0, x1, y1 = grid_map["box"]
    lat, lon = demo.point
    assert x0 <= lon <= x1 and y0 <= lat <= y1
    await phone.post({"kind": "start"})
    await phone.say("垃圾没人清")
    answer = await phone.post({"kind": "location", "lat": lat, "lon": lon})
    assert demo.micro_name in answer["replies"][0]["text"] and answer["state"] == "category"


def test_answered_posts_are_forgotten_after_the_offline_window(engine):
    from datetime import timedelta

    from chat import web_store
    from chat.models import WebChatRequest
    from core.platform.clock import utcnow

    web_store.open_device(engine, "device-old-0001", "zh", None)
    assert web_store.save_step(engine, "device-old-0001", 0, None, None, [], "key-old-00001", {"ok": 1})
    assert web_store.save_step(engine, "device-old-0001", 1, None, None, [], "key-new-00001", {"ok": 2})
    with session_scope(engine) as session:
        row = session.get(WebChatRequest, ("device-old-0001", "key-old-00001"))
        row.at = utcnow() - web_store.REQUESTS_KEPT - timedelta(minutes=1)
        session.add(row)
    assert web_store.forget_requests(engine) == 1
    assert web_store.answered(engine, "device-old-0001", "key-old-00001") is None
    assert web_store.answered(engine, "device-old-0001", "key-new-00001") == {"ok": 2}
    # a stale version is refused: another instance moved the dialog on
    assert not web_store.save_step(engine, "device-old-0001", 1, None, None, [], "key-other-0001", {})
