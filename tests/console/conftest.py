"""The console over a real aiohttp server on both databases: the small district of
tests/core, one account per role, a hotline case waiting in triage with its recording."""

from __future__ import annotations

import math
import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from console.access import invalidate_grid_tree
from console.models import ConsoleUser
from core import actions
from core.cases.models import Channel
from core.followup.models import Survey
from core.people.models import Department
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline.app import build_app
from tests.core.district import District, build_district

PASSWORD = "correct horse battery"
PHONE = "+8613800138000"  # the district's registered resident


@dataclass
class World:
    district: District
    data_dir: Path
    triage_case: str  # a hotline case with a recording, no grid, doubtful transcript
    other_grid_case: str  # dispatched to micro grid 2 (W-M2)
    recording_id: int


def write_wav(path: Path, seconds: float = 3.0, rate: int = 8000) -> int:
    """A real, playable PCM WAV: a soft tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = b"".join(struct.pack("<h", int(3000 * math.sin(2 * math.pi * 440 * i / rate)))
                      for i in range(int(seconds * rate)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return path.stat().st_size


TRANSCRIPT = [{
    "text": "洋坊新村九号楼路灯坏了", "start": 0.2, "end": 2.6, "final": True, "confidence": 0.55,
    "words": [
        {"word": "洋坊新村", "start": 0.2, "end": 0.9, "conf": 0.9},
        {"word": "九号楼", "start": 0.9, "end": 1.5, "conf": 0.35},
        {"word": "路灯", "start": 1.5, "end": 2.0, "conf": 0.8},
        {"word": "坏了", "start": 2.0, "end": 2.6, "conf": 0.2},
    ],
}]


def add_users(session, district: District) -> None:
    from console.auth import add_user

    dept = session.exec(select(Department)).first()
    micro1, micro2 = district.grids["micro1"], district.grids["micro2"]
    add_user(session, "admin", PASSWORD, "admin")
    add_user(session, "op", PASSWORD, "operator")
    add_user(session, "sup", PASSWORD, "supervisor")
    add_user(session, "viewer", PASSWORD, "viewer")
    add_user(session, "w1", PASSWORD, "worker", worker_code="W-M1")
    add_user(session, "w2", PASSWORD, "worker", worker_code="W-M2", grid_codes=[micro2.code])
    add_user(session, "dept", PASSWORD, "department", department_code=dept.code)
    assert micro1 and micro2


@pytest.fixture(scope="session")
def _one_hash() -> str:
    from console.auth import hash_password

    return hash_password(PASSWORD)


@pytest.fixture(autouse=True)
def _hash_once(monkeypatch, _one_hash):
    """argon2 is slow on purpose; the accounts of a test share one real hash of PASSWORD."""
    import console.auth

    real = console.auth.hash_password
    monkeypatch.setattr(console.auth, "hash_password", lambda pw: _one_hash if pw == PASSWORD else real(pw))


@pytest.fixture
def world(engine, tmp_path) -> World:
    invalidate_grid_tree()
    data_dir = tmp_path / "data"
    rel = "recordings/20261120/CA-test-petition-1.wav"
    size = write_wav(data_dir / rel)
    with session_scope(engine) as session:
        district = build_district(session)
        add_users(session, district)
        case, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description="洋坊新村九号楼路灯坏了", idempotency_key="hotline|CA-test",
            contact_phone=PHONE, transcript=TRANSCRIPT, transcript_confidence=0.55,
            files=(actions.FileRef("recording", rel, "audio/wav", size),),
            flags=("low_confidence", "transcript_unconfirmed")), actor="hotline")
        other, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.chat, description="楼道飞线充电", category_code="flying_lead",
            contact_phone="+8613911112222"), actor="resident:chat")
        actions.dispatch(session, other, actor="system", grid_id=district.grids["micro2"].id)
        session.flush()
        recording = actions.get_case(session, case.number)
        from core.cases.queries import case_files

        rec_id = case_files(session, recording.id, "recording")[0].id
        return World(district, data_dir, case.number, other.number, rec_id)


@pytest.fixture
async def client(engine, world):
    app = build_app(Settings(data_dir=world.data_dir), engine=engine, channels=("console",), run_jobs=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def login(client: TestClient, name: str, password: str = PASSWORD, *, expect: int = 303):
    """Log in through the form, as a browser does (its CSRF cookie and field included); a
    new browser each time (the cookies of an earlier login are dropped)."""
    client.session.cookie_jar.clear()
    page = await client.get("/console/login")
    html = await page.text()
    token = html.split('name="_csrf" value="', 1)[1].split('"', 1)[0]
    resp = await client.post("/console/login", data={"_csrf": token, "name": name, "password": password},
                             allow_redirects=False)
    assert resp.status == expect, await resp.text()
    return resp


async def csrf_of(client: TestClient, path: str = "/console/search") -> str:
    html = await (await client.get(path)).text()
    return html.split('name="_csrf" value="', 1)[1].split('"', 1)[0]


def manual_survey(engine, number: str) -> int:
    """A verified case whose follow-up waits on the manual-call list (as issue 11 will route
    cases that have neither a phone line nor a chat)."""
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        for step in ("accept", "report_done"):
            if step == "accept":
                actions.accept(session, case, actor="worker:W-M2")
            else:
                actions.report_done(session, case, actor="worker:W-M2", note="已拆除飞线")
        case.status = case.status  # verified below writes its own survey (chat/phone); ours is manual
        actions.verify(session, case, actor="leader")
        for survey in session.exec(select(Survey).where(Survey.case_id == case.id)).all():
            survey.channel = "manual"
            session.add(survey)
        session.flush()
        return session.exec(select(Survey.id).where(Survey.case_id == case.id)).first()


def user_id(engine, name: str) -> int:
    with session_scope(engine) as session:
        return session.exec(select(ConsoleUser.id).where(ConsoleUser.name == name)).one()
