"""The follow-up call's test rig: the hotline's district and server (``conftest``), the
follow-up webhooks and jobs on it, and the fake Twilio REST server that the real
``twilio`` client places the calls with and that plays each answered call against the
webhooks (``tests/support/fake_twilio.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from sqlmodel import select

from core import actions
from core.cases.models import Case, CaseEvent, Channel
from core.followup.models import Survey
from core.platform import clock
from core.platform.db import session_scope
from core.platform.models import Job, JobStatus
from core.platform.rules import reload_rules
from core.platform.runner import JobRunner
from core.platform.settings import Settings
from gridline.app import SERVICES, Services
from ivr.config import FlowConfig
from ivr.models import SurveyCall
from ivr.survey_twiml import SurveyFlowConfig
from ivr.survey_web import SURVEY_LANE
from ivr.survey_web import setup as setup_surveys
from ivr.web import setup
from tests.ivr.conftest import KNOWN_PHONE, TOKEN, build_district, wait_until
from tests.support.fake_twilio import FakeTwilio
from tests.support.waiting import bound_socket

RESIDENT_E164 = "+86" + KNOWN_PHONE.removeprefix("+86")


def local(*args) -> datetime:
    """A moment in the district's time zone, as the naive UTC the clock gives."""
    return datetime(*args, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


@dataclass
class SurveyRig:
    engine: object
    settings: Settings
    services: Services
    fake: FakeTwilio
    app: web.Application
    runner: web.AppRunner
    url: str
    district: dict

    @property
    def jobs(self) -> JobRunner:
        return self.services.jobs

    async def run_calls(self) -> int:
        """Run the due follow-up call jobs once (as the server's survey lane would)."""
        return await self.jobs.run_once(SURVEY_LANE)

    async def run_main(self) -> int:
        return await self.jobs.run_once("main")

    def verified_case(self, *, phone: str = KNOWN_PHONE, resident: bool = True, category: str = "light",
                      channel: Channel = Channel.hotline) -> Case:
        """A hotline case handled and verified: its follow-up is queued."""
        with session_scope(self.engine) as s:
            resident_id = None
            if resident:
                found = actions.find_resident_by_phone(s, phone)
                resident_id = found.id if found else None
            case, _ = actions.submit_petition(s, actions.Petition(
                channel=channel, description="小区门口的路灯坏了", contact_phone=phone, resident_id=resident_id,
                category_code=category), actor="test")
            actions.dispatch(s, case, actor="test", grid_id=self.district["micro"])
            actions.accept(s, case, actor="test")
            actions.report_done(s, case, actor="test", note="换了灯泡")
            actions.verify(s, case, actor="test")
            return case

    def case(self, case_id: int) -> Case:
        with session_scope(self.engine) as s:
            return s.get(Case, case_id)

    def survey(self, case_id: int) -> Survey:
        with session_scope(self.engine) as s:
            return s.exec(select(Survey).where(Survey.case_id == case_id).order_by(Survey.id.desc())).first()

    def attempts(self, survey_id: int) -> list[SurveyCall]:
        with session_scope(self.engine) as s:
            return list(s.exec(select(SurveyCall).where(SurveyCall.survey_id == survey_id)
                               .order_by(SurveyCall.attempt)).all())

    def events(self, case_id: int, *actions_: str) -> list[CaseEvent]:
        with session_scope(self.engine) as s:
            stmt = select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
            if actions_:
                stmt = stmt.where(CaseEvent.action.in_(actions_))
            return list(s.exec(stmt).all())

    def queued(self, kind: str = "survey_phone") -> list[Job]:
        with session_scope(self.engine) as s:
            return list(s.exec(select(Job).where(Job.kind == kind, Job.status == JobStatus.queued)
                               .order_by(Job.id)).all())

    async def call_over(self, survey_id: int, attempt: int, timeout: float = 30) -> SurveyCall:
        """Wait until the attempt's call was played and settled."""

        def settled():
            rows = [r for r in self.attempts(survey_id) if r.attempt == attempt]
            return rows[0] if rows and rows[0].ended_at is not None else None

        row = await wait_until(settled, timeout, what=f"attempt {attempt} of survey {survey_id} to end")
        if row.call_sid and row.call_sid in self.fake.calls:
            await self.fake.wait_played(row.call_sid, timeout)
            assert row.call_sid not in self.fake.play_errors, self.fake.play_errors[row.call_sid]
        return row

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_survey_rig(engine, tmp_path: Path, speech, fake: FakeTwilio, *,
                           survey_flow: SurveyFlowConfig | None = None, **settings_kw) -> SurveyRig:
    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(data_dir=tmp_path, public_url=url, twilio_auth_token=TOKEN,
                        twilio_account_sid=fake.account_sid, twilio_api_url=fake.base_url,
                        hotline_number=fake.phone_number,
                        operator_number=settings_kw.pop("operator_number", "+8657188880000"),
                        **settings_kw)
    with session_scope(engine) as s:
        district = build_district(s)
    flow = FlowConfig.load(stream={"hangup_grace_s": 0.3}, petition={"wait_s": 3.0})
    services = Services(settings=settings, engine=engine, jobs=JobRunner(engine), speech=speech,
                        extras={"ivr_flow": flow, **({"survey_flow": survey_flow} if survey_flow else {})})
    app = web.Application()
    app[SERVICES] = services
    setup_surveys(app, services, setup(app, services))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return SurveyRig(engine, settings, services, fake, app, runner, url, district)


MORNING = local(2026, 11, 17, 10, 0)  # a Tuesday, inside calling hours


# Fixtures (made available to tests/ivr by its conftest).

@pytest.fixture
def fast_calls(tmp_path, monkeypatch):
    """Calls per second high enough that tests never wait for a slot."""
    path = tmp_path / "rules.toml"
    path.write_text("[survey.phone]\ncalls_per_second = 100.0\n")
    monkeypatch.setenv("GRIDLINE_RULES", str(path))
    reload_rules()
    yield
    monkeypatch.delenv("GRIDLINE_RULES")
    reload_rules()


@pytest.fixture
def fake():
    with FakeTwilio(auth_token=TOKEN) as server:
        yield server


@pytest.fixture
async def srig(engine, tmp_path, fake_speech, fake, fast_calls):
    clock.freeze(MORNING)
    rig = await start_survey_rig(engine, tmp_path, fake_speech, fake)
    yield rig
    await rig.stop()
