"""Phone verification in the web chat (SQLite and PostgreSQL, real HTTP): the code goes out
through the hotline's SMS sender with the real twilio client to the fake REST server; wrong,
expired and too many codes are refused; a verified number shows the resident's hotline cases
and, while the page is closed, progress goes by SMS through the progress-SMS policy."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlmodel import select

from chat.models import WebChatDevice, WebChatPhoneCode
from core import actions
from core.cases.models import Case, Channel
from core.people.models import AuditEntry, Resident
from core.platform import clock
from core.platform.db import session_scope
from core.platform.models import Job
from ivr.config import load_prompts
from ivr.sms import ProgressSms, TextSms
from ivr.twilio_api import TwilioApi
from tests.chat.webchat_support import Resident as Phone
from tests.chat.webchat_support import WebServer
from tests.support.fake_twilio import FakeTwilio

MOBILE = "13912345678"


@pytest.fixture
def twilio():
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
async def server(engine, demo, tmp_path, twilio):
    s = WebServer(engine, tmp_path)
    s.extra = {"demo": demo}
    await s.start()
    s.sms_settings = SimpleNamespace(hotline_number=twilio.phone_number, twilio_messaging_service_sid="",
                                     timezone=s.services.settings.timezone)
    s.api = TwilioApi(twilio.account_sid, twilio.auth_token, api_url=twilio.base_url)
    s.services.extras["send_sms"] = TextSms(s.api, s.sms_settings).send
    yield s
    await s.stop()
    clock.freeze(None)


@pytest.fixture
async def phone(server):
    p = Phone(server.url)
    await p.open()
    yield p
    await p.close()


async def post(phone: Phone, path: str, body: dict, expect: int) -> dict:
    async with phone.http.post(f"{phone.url}/chat/api/{path}", json=body,
                               headers={"X-CSRF-Token": phone.csrf}) as r:
        answer = await r.json()
        assert r.status == expect, (r.status, answer)
        return answer


def codes_sent(twilio: FakeTwilio, to: str) -> list[str]:
    bodies = [m["body"] for m in twilio.messages.values() if m["to"] == to]
    return [re.search(r"验证码是(\d{6})", b).group(1) for b in bodies]


def e164(number: str) -> str:
    return "+86" + number


async def test_code_arrives_by_sms_and_verifies_the_number(server, phone, twilio, engine):
    sent = await post(phone, "phone", {"phone": MOBILE}, 200)
    assert "139****5678" in sent["text"]
    (code,) = codes_sent(twilio, e164(MOBILE))
    with session_scope(engine) as session:
        row = session.exec(select(WebChatPhoneCode)).one()
        assert row.phone == e164(MOBILE) and code not in row.code_hash and len(row.code_hash) == 64
    wrong = "000000" if code != "000000" else "111111"
    refused = await post(phone, "phone/code", {"code": wrong}, 400)
    assert refused["error"] == "web.code_wrong" and "4" in refused["text"]
    await post(phone, "phone/code", {"code": "12ab"}, 400)
    ok = await post(phone, "phone/code", {"code": code}, 200)
    assert "已验证" in ok["text"]
    assert (await phone.state())["phone"] == "+86139****5678"
    again = await post(phone, "phone/code", {"code": code}, 400)  # a code works once
    assert again["error"] == "web.code_expired"
    with session_scope(engine) as session:
        device = session.exec(select(WebChatDevice)).one()
        resident = session.get(Resident, device.resident_id)
        assert resident.chat_id == f"web:{device.id}" and resident.phone == MOBILE
        audit = session.exec(select(AuditEntry).where(AuditEntry.action == "resident.verify_phone")).one()
        assert audit.target_id == str(resident.id) and audit.detail["chat_id"] == resident.chat_id


async def test_bad_numbers_expired_codes_and_limits(server, phone, twilio):
    assert (await post(phone, "phone", {"phone": "12345"}, 400))["error"] == "web.phone_invalid"
    assert (await post(phone, "phone", {"phone": "010-62345678"}, 400))["error"] == "web.phone_not_mobile"
    assert (await post(phone, "phone", {"phone": ["x"]}, 400))["error"] == "web.phone_invalid"
    assert twilio.messages == {}
    # expired: the code is refused after verify_code_minutes
    await post(phone, "phone", {"phone": MOBILE}, 200)
    (code,) = codes_sent(twilio, e164(MOBILE))
    # a second send within a minute waits
    assert (await post(phone, "phone", {"phone": MOBILE}, 429))["error"] == "web.phone_wait"
    clock.freeze(clock.utcnow() + timedelta(minutes=server.chat.rules["verify_code_minutes"], seconds=1))
    assert (await post(phone, "phone/code", {"code": code}, 400))["error"] == "web.code_expired"
    # within the hour, the number's limit (3) holds
    for _ in range(2):
        await post(phone, "phone", {"phone": MOBILE}, 200)
        clock.freeze(clock.utcnow() + timedelta(minutes=2))
    assert (await post(phone, "phone", {"phone": MOBILE}, 429))["error"] == "web.phone_too_many"
    assert len(codes_sent(twilio, e164(MOBILE))) == 3
    # another phone may not use this number either, but may use its own
    other = Phone(server.url)
    await other.open()
    try:
        assert (await post(other, "phone", {"phone": MOBILE}, 429))["error"] == "web.phone_too_many"
        await post(other, "phone", {"phone": "13800001111"}, 200)
    finally:
        await other.close()
    # too many wrong codes lock the code, even the right one
    last = codes_sent(twilio, e164(MOBILE))[-1]
    wrong = "000000" if last != "000000" else "111111"
    for _ in range(server.chat.rules["verify_attempts"] - 1):
        await post(phone, "phone/code", {"code": wrong}, 400)
    assert (await post(phone, "phone/code", {"code": wrong}, 429))["error"] == "web.code_locked"
    assert (await post(phone, "phone/code", {"code": last}, 429))["error"] == "web.code_locked"
    assert (await phone.state())["phone"] is None


async def test_the_per_device_limit_and_an_unsent_sms(server, phone, twilio):
    for n in range(server.chat.rules["verify_sends_per_device"]):
        clock.freeze(clock.utcnow() + timedelta(minutes=2))
        await post(phone, "phone", {"phone": f"1380000{n:04d}"}, 200)
    clock.freeze(clock.utcnow() + timedelta(minutes=2))
    assert (await post(phone, "phone", {"phone": "13800009999"}, 429))["error"] == "web.phone_too_many"
    # Twilio refusing: a clear message, and the code that never went out does not work
    other = Phone(server.url)
    await other.open()
    try:
        server.api.client.messages.create = _refuse
        failed = await post(other, "phone", {"phone": "13700001111"}, 503)
        assert failed["error"] == "web.phone_send_failed"
    finally:
        await other.close()


def _refuse(**_kw):
    raise RuntimeError("Twilio said no")


async def test_a_verified_number_brings_hotline_cases_and_progress_by_sms_when_closed(server, phone, twilio,
                                                                                      engine):
    demo = server.extra["demo"]
    with session_scope(engine) as session:
        registered = actions.find_resident_by_phone(session, demo.household_phone)
        registered.phone = MOBILE  # the demo household's resident has this mobile
        session.add(registered)
        hotline, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description="小区门口的路灯不亮", contact_phone=MOBILE,
            resident_id=registered.id), actor="test")
        hotline_number, registered_id = hotline.number, registered.id
    assert await phone.cases() == []
    await post(phone, "phone", {"phone": MOBILE}, 200)
    ok = await post(phone, "phone/code", {"code": codes_sent(twilio, e164(MOBILE))[-1]}, 200)
    assert demo.household_address in ok["text"]
    assert [c["number"] for c in await phone.cases()] == [hotline_number]
    with session_scope(engine) as session:
        assert session.get(Resident, registered_id).chat_id.startswith("web:")
    # a web case filed with no progress stream open (the page closed at once): routing
    # dispatches it, and the progress-SMS policy queues the SMS to the verified number
    web_number = await _file(phone, demo, "楼道里的灯坏了，晚上看不见")
    with session_scope(engine) as session:
        case = session.exec(select(Case).where(Case.number == web_number)).one()
        assert case.channel == Channel.chat and case.status.value == "dispatched"
        (job,) = session.exec(select(Job).where(Job.kind == "sms_progress")).all()
        assert job.payload == {"case_id": case.id, "status": "dispatched"}
    progress = ProgressSms(engine, server.api, settings=server.sms_settings, prompts=load_prompts("zh"),
                           db=server.services.db.run)
    await progress.handle(job)
    bodies = [m["body"] for m in twilio.messages.values() if m["to"] == e164(MOBILE) and web_number in m["body"]]
    assert len(bodies) == 1 and "已交" in bodies[0], bodies
    # with the page open (its progress stream running) the page tells it: no SMS
    server.chat.rules["progress_every_s"] = 0.1
    async with phone.http.get(f"{phone.url}/chat/api/events") as stream:
        await stream.content.readline()
        for _ in range(200):
            with session_scope(engine) as session:
                if session.exec(select(WebChatDevice)).one().live_until is not None:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the open stream never marked the page live")
        second = await _file(phone, demo, "垃圾没人清运")
        with session_scope(engine) as session:
            case = session.exec(select(Case).where(Case.number == second)).one()
            assert case.status.value == "dispatched"
            jobs = session.exec(select(Job).where(Job.kind == "sms_progress")).all()
            assert [j.payload["case_id"] for j in jobs] == [job.payload["case_id"]]
    for _ in range(200):  # the stream closed: the mark is taken off
        with session_scope(engine) as session:
            if session.exec(select(WebChatDevice)).one().live_until is None:
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the closed stream left the page marked live")


async def _file(phone: Phone, demo, problem: str) -> str:
    await phone.post({"kind": "start"})
    await phone.say(problem)
    await phone.say(demo.building)
    await phone.press("ay")
    await phone.press("c:0")
    return (await phone.press("ok"))["case"]


async def _verify(phone: Phone, twilio: FakeTwilio, number: str) -> dict:
    await post(phone, "phone", {"phone": number}, 200)
    return await post(phone, "phone/code", {"code": codes_sent(twilio, e164(number))[-1]}, 200)


async def test_unlinking_the_number_lets_the_registered_resident_go(server, phone, twilio, engine):
    demo = server.extra["demo"]
    with session_scope(engine) as session:
        registered = actions.find_resident_by_phone(session, demo.household_phone)
        registered.phone = MOBILE
        session.add(registered)
        hotline, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description="小区门口的路灯不亮", contact_phone=MOBILE,
            resident_id=registered.id), actor="test")
        hotline_number, registered_id = hotline.number, registered.id
    assert (await post(phone, "phone/unlink", {}, 409))["error"] == "web.phone_none"
    await _verify(phone, twilio, MOBILE)
    assert [c["number"] for c in await phone.cases()] == [hotline_number]

    gone = await post(phone, "phone/unlink", {}, 200)
    assert "139****5678" in gone["text"] and "解除" in gone["text"]
    assert (await phone.state())["phone"] is None
    assert await phone.cases() == []  # the hotline case is the registered resident's again, not this page's
    with session_scope(engine) as session:
        device = session.exec(select(WebChatDevice)).one()
        assert device.phone is None and device.phone_verified_at is None
        resident = session.get(Resident, registered_id)
        assert resident.chat_id is None and resident.phone == MOBILE  # the registry keeps its number
        (entry,) = session.exec(select(AuditEntry).where(AuditEntry.action == "resident.unlink_phone")).all()
        assert entry.target_id == str(registered_id)
        assert entry.detail == {"chat_id": f"web:{device.id}", "phone": MOBILE, "change": "detached"}
        hotline_case = session.exec(select(Case).where(Case.number == hotline_number)).one()
        assert hotline_case.resident_id == registered_id  # nothing the resident said is lost
    # linking again needs a new code: the old one does not work twice
    again = await post(phone, "phone/code", {"code": codes_sent(twilio, e164(MOBILE))[-1]}, 400)
    assert again["error"] == "web.code_expired"
    clock.freeze(clock.utcnow() + timedelta(minutes=2))
    await _verify(phone, twilio, MOBILE)
    assert [c["number"] for c in await phone.cases()] == [hotline_number]


async def test_a_new_number_replaces_the_old_one_only_with_its_own_code(server, phone, twilio, engine):
    demo = server.extra["demo"]
    first = await _file(phone, demo, "楼道里的灯坏了")  # the page's own resident files a case
    await _verify(phone, twilio, MOBILE)
    with session_scope(engine) as session:
        device = session.exec(select(WebChatDevice)).one()
        own = session.get(Resident, device.resident_id)
        assert own.phone == MOBILE and own.chat_id == f"web:{device.id}"
        own_id = own.id
    new_number = "13700002222"
    clock.freeze(clock.utcnow() + timedelta(minutes=2))
    await post(phone, "phone", {"phone": new_number}, 200)
    # until the new code comes back, the old number is still the verified one
    assert (await phone.state())["phone"] == "+86139****5678"
    await post(phone, "phone/code", {"code": codes_sent(twilio, e164(new_number))[-1]}, 200)
    assert (await phone.state())["phone"] == "+86137****2222"
    assert [c["number"] for c in await phone.cases()] == [first]  # the page's own cases stay
    with session_scope(engine) as session:
        own = session.get(Resident, own_id)
        assert own.phone == new_number and own.chat_id.startswith("web:")
        changes = [(e.action, (e.detail or {}).get("change")) for e in session.exec(
            select(AuditEntry).where(AuditEntry.target_id == str(own_id)).order_by(AuditEntry.id)).all()
            if e.action in ("resident.unlink_phone", "resident.verify_phone")]
        assert changes == [("resident.verify_phone", None), ("resident.unlink_phone", "phone_cleared"),
                           ("resident.verify_phone", None)]
