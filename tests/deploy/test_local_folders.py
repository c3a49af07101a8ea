"""Two `gridline serve` instances on one PostgreSQL and NO bucket: each keeps residents' files
in its own data folder (the default store). A user who runs them so must still never lose a
petition.

Each call's Media Streams socket is on instance 1 while its webhooks alternate between the
instances, request by request (what a round-robin balancer does; here made certain: the
caller's "#" webhook always lands on instance 2, which cannot read instance 1's disk). Every
call is filed once, the caller hears its number, and every recording is attached with its
size and sha256, kept on the disk of the instance that filed it (instance 2, from the copy
instance 1 put in the database) and played by that instance's console. Both instances say
at start (or as soon as they see each other) that they share the database with a local folder."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import pytest
from sqlmodel import select

from core.cases.models import Attachment, CallSession
from core.cases.queries import case_files
from core.platform.db import session_scope
from core.platform.models import AudioPart
from ivr.simulator import CallScript, Simulator, Turn
from tests.deploy.rig import TOKEN, ConsoleReader, Deployment
from tests.ivr.conftest import silence, tone
from tests.ivr.load import demo_phones, known_caller
from tests.support.console_admin import add_admin
from tests.support.serve import database_url

pytestmark = pytest.mark.slow

LOCAL_MEDIA_WARNING = "keeps residents' files in a local folder of its own"


class AlternatingSimulator(Simulator):
    """Twilio with its requests spread over the instances: the Media Streams socket always to
    the first, a turn's end always to the second, the other webhooks in turn to each (a
    balancer whose order is known)."""

    def __init__(self, public_url: str, servers: list[str], **kw):
        super().__init__(servers[0], TOKEN, public_url=public_url, **kw)
        self.servers = servers
        self.turns: dict[str, int] = {}
        self.served: dict[str, list[tuple[str, str]]] = {}  # call → (path, server) of each webhook
        self._webhook_server = servers[1]

    def _target(self, url: str) -> str:
        target = super()._target(url)
        if target.startswith("http") and target.startswith(self.server_url):
            # a webhook: to the instance chosen for it (read at once by post, no await between)
            return self._webhook_server + target[len(self.server_url):]
        return target  # the socket: always the first instance

    async def post(self, http, url, params, result):
        call_sid = params.get("CallSid", "")
        n = self.turns.get(call_sid, 0)
        self.turns[call_sid] = n + 1
        # a turn's end ('#') always to the second: never the instance holding the socket, so
        # the turn's audio must come over from the first; the other webhooks in turn
        done = url.split("?")[0].endswith("/done")
        self._webhook_server = self.servers[1] if done else self.servers[(n + 1) % len(self.servers)]
        self.served.setdefault(call_sid, []).append((url.split("?")[0].rsplit("/twilio", 1)[-1],
                                                     self._webhook_server))
        return await super().post(http, url, params, result)


def recordings_of(engine, call_sid: str) -> tuple[int | None, list[Attachment]]:
    with session_scope(engine) as s:
        call = s.exec(select(CallSession).where(CallSession.call_sid == call_sid)).one()
        return call.case_id, (list(case_files(s, call.case_id, "recording")) if call.case_id else [])


async def test_two_instances_without_a_bucket_file_every_petition_with_its_recording(engine, tmp_path):
    if engine.dialect.name != "postgresql":
        pytest.skip("instances share one PostgreSQL")
    deployment = Deployment(tmp_path / "deployment", database_url(engine), None, None,
                            env={"GRIDLINE_SPEECH_MODEL": str(tmp_path / "no-model")})
    try:
        await deployment.start(together=True)
        add_admin(engine)
        first, second = deployment.servers
        phones = demo_phones(engine, 3)
        scripts = [known_caller(phone, f"CA{uuid.uuid4().hex}", tone(3 + i) + silence(0.3))
                   for i, phone in enumerate(phones)]
        # an unknown caller: the petition (filed at once: no speech model), never asked the address
        scripts.append(CallScript(from_number="+8613922223333", digits=["1", "1", "1"],
                                  turns=[Turn(tone(4) + silence(0.3)), Turn(tone(2))],
                                  call_sid=f"CA{uuid.uuid4().hex}", default_digit="1"))
        sim = AlternatingSimulator(deployment.url, [first.url, second.url], speed=1.0)
        results = await asyncio.gather(*(sim.call(script) for script in scripts))

        reader = ConsoleReader(second.url)  # the instance that filed the calls
        await asyncio.to_thread(reader.login)
        for script, result in zip(scripts, results, strict=True):
            sid = script.call_sid
            served = dict(sim.served[sid])
            # the '#' of the turn that was the petition: the open question's (a caller who talks at
            # once) or the petition prompt's (a caller who pressed 1)
            done = served.get("/petition/done") or served.get("/open/done")
            assert done == second.url, f"{sid}: the '#' webhook went to {served}"
            case_id, recordings = recordings_of(engine, sid)
            assert case_id and result.case_number, f"{sid}: not filed ({result.heard[-2:]})"
            assert len(recordings) == 1, f"{sid}: {len(recordings)} recordings attached"
            (att,) = recordings
            kept = second.data_dir / att.path
            assert kept.is_file(), f"{sid}: {att.path} is not on the disk of the instance that filed it"
            data = kept.read_bytes()
            assert att.size == len(data) and att.sha256 == hashlib.sha256(data).hexdigest()
            assert data == (first.data_dir / att.path).read_bytes(), "the copy is the WAV the socket's instance heard"
            assert not att.upload_pending
            whole = await asyncio.to_thread(reader.get, f"/console/cases/{result.case_number}/files/{att.id}")
            assert whole.status == 200 and hashlib.sha256(whole.body).hexdigest() == att.sha256
        with session_scope(engine) as s:  # every copy went with its call
            assert s.exec(select(AudioPart)).all() == []
        for server in deployment.servers:
            assert LOCAL_MEDIA_WARNING in server.output, f"no warning from {server.url}:\n{server.output[-2000:]}"
    finally:
        await asyncio.to_thread(deployment.close)
