"""The shipped deploy/haproxy.cfg, run by the fixture in front of two small aiohttp servers:
requests alternate between them (nothing sticky), each is told the client's address in
X-Forwarded-For, a websocket stays on the server it connected to for as long as it lives,
and a server whose /readyz fails, or that is gone, is taken out of rotation."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from tests.support.haproxy import DEPLOY_CONFIG, HaproxyProcess, render_config
from tests.support.waiting import bound_socket, until


class Backend:
    def __init__(self, name: str):
        self.name = name
        self.ready = True
        self.forwarded: list[str] = []
        self.sock = bound_socket()
        self.port = self.sock.getsockname()[1]
        self.runner: web.AppRunner | None = None

    async def start(self) -> Backend:
        app = web.Application()
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/who", self.who)
        app.router.add_post("/who", self.who)
        app.router.add_get("/twilio/stream", self.stream)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()
        return self

    async def readyz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"}, status=200 if self.ready else 503)

    async def who(self, request: web.Request) -> web.Response:
        self.forwarded.append(request.headers.get("X-Forwarded-For", ""))
        return web.Response(text=self.name)

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"{self.name}:{message.data}")
        return ws

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def test_render_keeps_the_shipped_settings_and_replaces_only_addresses(tmp_path):
    shipped = DEPLOY_CONFIG.read_text()
    rendered = render_config(shipped, listen_fd=7, servers=[("127.0.0.1", 1001), ("127.0.0.1", 1002)],
                             admin_socket=tmp_path / "a.sock")
    assert "bind fd@7" in rendered and "bind :8080" not in rendered
    assert "server gridline1 127.0.0.1:1001" in rendered and "server gridline2 127.0.0.1:1002" in rendered
    assert "10.0.0.11" not in rendered
    for kept in ("balance roundrobin", "http-check send meth GET uri /readyz", "option forwardfor",
                 "timeout tunnel 2h", "option redispatch"):
        assert kept in shipped and kept in rendered
    directives = [line.split()[0] for line in shipped.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not {"stick", "stick-table", "cookie", "hash-type"} & set(directives)  # nothing sticky


async def test_round_robin_forwarded_for_websocket_and_health_checks(tmp_path):
    a, b = Backend("a"), Backend("b")
    await a.start()
    await b.start()
    balancer = HaproxyProcess([a.port, b.port], tmp_path / "haproxy")
    await asyncio.to_thread(balancer.start)
    try:
        await asyncio.to_thread(balancer.wait_servers_up)
        async with aiohttp.ClientSession() as http:
            async def who(method: str = "GET") -> str:
                async with http.request(method, f"{balancer.url}/who") as resp:
                    assert resp.status == 200
                    return await resp.text()

            # Round-robin, request by request, even on one kept-alive client connection.
            answers = [await who("POST" if i % 2 else "GET") for i in range(8)]
            assert answers.count("a") == 4 and answers.count("b") == 4, answers
            assert set(a.forwarded + b.forwarded) == {"127.0.0.1"}

            # A websocket stays where it connected, while other requests keep alternating.
            async with http.ws_connect(f"{balancer.url}/twilio/stream") as ws:
                homes = set()
                for i in range(6):
                    await ws.send_str(str(i))
                    homes.add((await ws.receive_str()).split(":")[0])
                    await who()
                assert len(homes) == 1

            # Not ready: out of rotation after the health checks say so.
            a.ready = False
            await asyncio.to_thread(balancer.wait_servers, "DOWN", ["gridline1"], 30)
            assert {await who() for _ in range(6)} == {"b"}
            a.ready = True
            await asyncio.to_thread(balancer.wait_servers_up, 30)

            # Gone (killed between two checks): the requests that still meet it are retried
            # on the other server, none fails.
            await b.stop()
            assert {await who() for _ in range(6)} == {"a"}
            await asyncio.to_thread(balancer.wait_servers, "DOWN", ["gridline2"], 30)
        await until(lambda: balancer.requests_by_server("/who").get("gridline2"), message="log lines")
        counts = balancer.requests_by_server("/who")
        assert counts["gridline1"] >= 4 and counts["gridline2"] >= 4, counts
    finally:
        await asyncio.to_thread(balancer.close)
        await a.stop()
        await b.stop()
