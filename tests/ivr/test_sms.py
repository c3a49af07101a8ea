"""Progress SMS to hotline callers, sent with the real twilio client to the fake REST server:
dispatched (grid, due date) and closed, to mobiles only, once per case and status; 退订/TD
by SMS (signed webhook) stops them."""

from __future__ import annotations

import aiohttp
from sqlalchemy import update
from sqlmodel import select

from core import actions
from core.cases.models import Channel
from core.people.models import AuditEntry, Resident
from core.platform import clock
from core.platform.db import session_scope
from core.platform.models import Job, JobStatus
from ivr.sms import ProgressSms
from tests.support.fake_twilio import Callee
from tests.support.twilio_signing import signed_headers

from .conftest import KNOWN_PHONE, TOKEN
from .survey_rig import RESIDENT_E164


def sms_jobs(rig) -> list[Job]:
    with session_scope(rig.engine) as s:
        return list(s.exec(select(Job).where(Job.kind == "sms_progress").order_by(Job.id)).all())


def filed(rig, phone: str = KNOWN_PHONE, *, resident: bool = True):
    with session_scope(rig.engine) as s:
        found = actions.find_resident_by_phone(s, phone) if resident else None
        case, _ = actions.submit_petition(s, actions.Petition(
            channel=Channel.hotline, description="路灯坏了", contact_phone=phone,
            resident_id=found.id if found else None, category_code="light"), actor="test")
        return case


def dispatched(rig, case_id: int):
    with session_scope(rig.engine) as s:
        case = actions.get_case(s, case_id)
        actions.dispatch(s, case, actor="test", grid_id=rig.district["micro"])


async def reply(rig, fake, phone: str, body: str, *, token: str = TOKEN) -> tuple[int, str]:
    url = f"{rig.url}/twilio/sms"
    params = {"MessageSid": "SM" + "1" * 32, "AccountSid": fake.account_sid, "From": phone,
              "To": fake.phone_number, "Body": body, "NumMedia": "0"}
    async with aiohttp.ClientSession() as http, http.post(url, data=params,
                                                          headers=signed_headers(token, url, params)) as resp:
        return resp.status, await resp.text()


async def test_dispatched_and_closed_by_sms_once_each(srig, fake):
    case = filed(srig)
    dispatched(srig, case.id)
    (job,) = sms_jobs(srig)
    assert job.payload == {"case_id": case.id, "status": "dispatched"} and job.dedupe_key == f"sms:{case.id}:dispatched"
    assert await srig.run_main() >= 1
    (sent,) = fake.messages.values()
    assert sent["to"] == RESIDENT_E164 and sent["from"] == fake.phone_number
    assert sent["body"].startswith(f"【网格服务】您反映的路灯问题（编号{case.number}）已交幸福一片第一网格办理，预计")
    assert "前办结" in sent["body"] and sent["body"].endswith("回复TD退订")
    with session_scope(srig.engine) as s:  # handled, verified, answered by phone: closed
        c = actions.get_case(s, case.id)
        actions.accept(s, c, actor="test")
        actions.report_done(s, c, actor="test", note="好了")
        actions.verify(s, c, actor="test")
    fake.callee(RESIDENT_E164, Callee("human", digits=["1", "1"]))
    await srig.run_calls()
    await srig.call_over(srig.survey(case.id).id, 1)
    await srig.run_main()
    bodies = [m["body"] for m in fake.messages.values()]
    assert len(bodies) == 2 and bodies[1] == f"【网格服务】您反映的路灯问题（编号{case.number}）已办结，谢谢您的支持。回复TD退订"
    # reopened and dispatched again: no second "dispatched" SMS for the case
    with session_scope(srig.engine) as s:
        actions.reopen(s, actions.get_case(s, case.id), actor="operator:li", reason="居民来电说又坏了")
    dispatched(srig, case.id)
    await srig.run_main()
    assert len(fake.messages) == 2 and len(sms_jobs(srig)) == 2


async def test_landlines_get_no_sms(srig, fake):
    case = filed(srig, "05987512301", resident=False)
    dispatched(srig, case.id)
    assert sms_jobs(srig) == []


async def test_from_the_messaging_service_when_one_is_set(srig, fake):
    srig.settings.twilio_messaging_service_sid = "MG" + "a" * 32
    case = filed(srig)
    dispatched(srig, case.id)
    await srig.run_main()
    (sent,) = fake.messages.values()
    assert sent["messaging_service_sid"] == "MG" + "a" * 32
    assert [r.params.get("From") for r in fake.requests if r.operation == "send_sms"] == [None]


async def test_unsubscribe_by_sms_stops_them(srig, fake):
    status, body = await reply(srig, fake, RESIDENT_E164, " 退订 ")
    assert status == 200 and "您已退订办理进度短信。" in body
    with session_scope(srig.engine) as s:
        resident = actions.find_resident_by_phone(s, KNOWN_PHONE)
        assert resident.sms_opted_out_at == clock.utcnow()
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "resident.sms_opt_out")).one().target_id == str(
            resident.id)
    case = filed(srig)
    dispatched(srig, case.id)
    assert sms_jobs(srig) == []
    # an unknown caller's TD is kept on a resident of their own
    status, body = await reply(srig, fake, "+8613977776666", "td")
    assert status == 200 and "您已退订" in body
    with session_scope(srig.engine) as s:
        (unknown,) = s.exec(select(Resident).where(Resident.phone == "13977776666")).all()
        assert unknown.sms_opted_out_at is not None and unknown.household_id is None
    # other replies are not an opt-out; forged ones are refused
    status, body = await reply(srig, fake, "+8613955554444", "谢谢")
    assert status == 200 and "退订" not in body
    assert (await reply(srig, fake, "+8613955554444", "TD", token="forged"))[0] == 403
    with session_scope(srig.engine) as s:
        assert s.exec(select(Resident).where(Resident.phone == "13955554444")).first() is None


async def test_a_send_that_was_not_recorded_is_not_sent_again(srig, fake):
    case = filed(srig)
    dispatched(srig, case.id)
    await srig.run_main()
    assert len(fake.messages) == 1
    # The process died after Twilio took the SMS and before the job was done: it runs again.
    with session_scope(srig.engine) as s:
        s.execute(update(Job).where(Job.kind == "sms_progress").values(status=JobStatus.queued, attempts=1))
        job = s.exec(select(Job).where(Job.kind == "sms_progress")).one()
    sender: ProgressSms = srig.jobs.handlers["sms_progress"].__self__
    job.attempts = 2
    await sender.handle(job)
    assert len(fake.messages) == 1  # found at Twilio, not sent twice
