"""Hotline test rig: a small district, a real aiohttp server on 127.0.0.1, the simulator
playing Twilio, and the fake transcriber for Mandarin content."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from sqlmodel import select

from core.cases.models import CallSession, Case, Category
from core.people.models import Resident, Worker, WorkerGrid, WorkerRole
from core.places.models import GazetteerEntry, Grid, GridLevel, Household
from core.platform.db import session_scope
from core.platform.runner import JobRunner
from core.platform.settings import Settings
from gridline.app import SERVICES, Services
from ivr.config import FlowConfig
from ivr.simulator import Simulator
from ivr.web import HOTLINE, setup
from speech_models.audio import mulaw_encode
from tests.support.fake_transcriber import FakeTranscriber
from tests.support.waiting import bound_socket, until

TOKEN = "test-auth-token-0123456789abcdef"
KNOWN_PHONE = "+8613800000001"
UNKNOWN_PHONE = "+8613911112222"
FIXTURES = Path(__file__).parent / "fixtures"


def tone(seconds: float, amplitude: int = 6000, freq: float = 440.0) -> bytes:
    """µ-law audio loud enough to count as speech."""
    t = np.arange(int(seconds * 8000)) / 8000
    pcm = (amplitude * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype("<i2")
    return mulaw_encode(pcm.tobytes())


def silence(seconds: float) -> bytes:
    return b"\xff" * int(seconds * 8000)


def build_district(session) -> dict:
    district = Grid(code="D1", name="示范区", level=GridLevel.district)
    session.add(district)
    session.flush()
    street = Grid(code="D1S1", name="东街街道", level=GridLevel.street, parent_id=district.id)
    session.add(street)
    session.flush()
    community = Grid(code="D1S1C1", name="幸福社区", level=GridLevel.community, parent_id=street.id)
    session.add(community)
    session.flush()
    area = Grid(code="D1S1C1A1", name="幸福一片", level=GridLevel.area, parent_id=community.id)
    session.add(area)
    session.flush()
    micro = Grid(code="D1S1C1A1M1", name="幸福一片第一网格", level=GridLevel.micro, parent_id=area.id)
    session.add(micro)
    session.flush()
    for i, grid in enumerate((micro, area, community, street, district)):
        worker = Worker(code=f"W{i}", name=f"网格员{i}", role=WorkerRole.grid_worker, phone=f"1390000000{i}")
        session.add(worker)
        session.flush()
        session.add(WorkerGrid(worker_id=worker.id, grid_id=grid.id, is_leader=True))
    session.add(Category(code="light", name="路灯", keywords=["路灯", "灯不亮"]))
    household = Household(code="H1", address="阳光花园3幢101", grid_id=micro.id)
    session.add(household)
    session.flush()
    session.add(Resident(name="王阿姨", phone="13800000001", household_id=household.id))
    session.add(GazetteerEntry(name="幸福社区", kind="community", grid_id=community.id))
    session.add(GazetteerEntry(name="阳光花园", kind="building", grid_id=area.id))
    session.add(GazetteerEntry(name="阳光花园3幢", kind="building", grid_id=micro.id))
    session.flush()
    return {"micro": micro.id, "community": community.id}


async def wait_until(condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.05,
                     what: str = "the condition"):
    """``tests.support.waiting.until`` with this rig's longer deadline; returns the value."""
    return await until(condition, timeout=timeout, message=what, interval=interval)


@dataclass
class Rig:
    engine: object
    settings: Settings
    speech: FakeTranscriber | object
    app: web.Application
    runner: web.AppRunner
    url: str
    district: dict

    @property
    def hotline(self):
        return self.app[HOTLINE]

    def simulator(self, **kw) -> Simulator:
        kw.setdefault("speed", 0)
        return Simulator(self.url, TOKEN, **kw)

    def call_session(self, call_sid: str) -> CallSession:
        with session_scope(self.engine) as s:
            return s.exec(select(CallSession).where(CallSession.call_sid == call_sid)).one()

    def cases(self) -> list[Case]:
        with session_scope(self.engine) as s:
            return list(s.exec(select(Case).order_by(Case.id)).all())

    def path(self, stored: str) -> Path:
        """A recording on disk from the path the database keeps (relative to the data dir)."""
        from core.platform.storage import resolve

        assert not Path(stored).is_absolute(), f"stored absolute: {stored}"
        return resolve(stored, self.settings.data_dir)

    def case(self, case_id: int) -> Case:
        with session_scope(self.engine) as s:
            return s.get(Case, case_id)

    def jobs(self, kind: str = "transcribe_recording") -> list:
        from core.platform.models import Job

        with session_scope(self.engine) as s:
            return list(s.exec(select(Job).where(Job.kind == kind).order_by(Job.id)).all())

    def recordings(self, case: Case) -> list[Path]:
        """The case's recordings on disk, in the order they were attached."""
        from core.cases.queries import case_files
        from core.platform.storage import resolve

        with session_scope(self.engine) as s:
            return [resolve(a.path, self.settings.data_dir) for a in case_files(s, case.id, "recording")]

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_rig(engine, tmp_path, speech, *, flow: FlowConfig | None = None, district: dict | None = None,
                    **settings_kw) -> Rig:
    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # public_url: the URL in the TwiML (behind a balancer, every instance's is the balancer's)
    settings = Settings(data_dir=tmp_path, public_url=settings_kw.pop("public_url", url), twilio_auth_token=TOKEN,
                        operator_number=settings_kw.pop("operator_number", "+8657188880000"),
                        service_hours=settings_kw.pop("service_hours", "00:00-23:59"), **settings_kw)
    if district is None:
        with session_scope(engine) as s:
            district = build_district(s)
    flow = flow or FlowConfig.load(stream={"hangup_grace_s": 0.3}, petition={"wait_s": 3.0})
    services = Services(settings=settings, engine=engine, jobs=JobRunner(engine), speech=speech,
                        extras={"ivr_flow": flow})
    app = web.Application()
    app[SERVICES] = services
    setup(app, services)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return Rig(engine, settings, speech, app, runner, url, district)


@pytest.fixture
def fake_speech() -> FakeTranscriber:
    return FakeTranscriber(confidence=0.9)


@pytest.fixture
async def rig(engine, tmp_path, fake_speech):
    r = await start_rig(engine, tmp_path, fake_speech)
    yield r
    await r.stop()


# The follow-up call's rig and fixtures (fake Twilio, a server with the follow-up webhooks).
from tests.ivr.survey_rig import fake, fast_calls, srig  # noqa: E402, F401
