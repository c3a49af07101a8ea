"""A small deployment in one test: ``gridline serve`` instances (each with its own data
folder) behind HAProxy with the shipped ``deploy/haproxy.cfg``, on one PostgreSQL, with a
bucket (SeaweedFS) when one is given; the fake Bot API and the fake Twilio REST server play
Telegram and Twilio, and reach Gridline only through the balancer (``GRIDLINE_PUBLIC_URL``
is the balancer's address on every instance).

    async with FakeBotApi() as bot, FakeTwilio(auth_token=TOKEN) as twilio:
        deployment = Deployment(tmp_path, database_url(engine), bot, twilio, media_env=bucket_env)
        await deployment.start()
        ... load through deployment.url ...
        await deployment.kill(1, delete_data=True)
        deployment.close()

Used by tests/deploy/test_deployment.py and bench/deployment.py.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.chat_driver import WEBHOOK_SECRET
from tests.support.console_admin import ADMIN, PASSWORD, _csrf
from tests.support.fake_bot_api import FakeBotApi
from tests.support.fake_twilio import FakeTwilio
from tests.support.haproxy import HaproxyProcess
from tests.support.serve import ServeProcess

TOKEN = "test-auth-token-0123456789abcdef"  # the Twilio account's auth token (tests.ivr.conftest's)

# Every hour a calling hour (the instances run on the real clock); no pacing to wait for.
RULES = """
[survey.phone]
calling_hours = ["00:00", "23:59"]
on_holidays = true
calls_per_second = 1000.0
"""


class Deployment:
    """``instances`` × ``gridline serve`` + HAProxy. ``media_env`` (``GRIDLINE_MEDIA_URL``
    and the ``AWS_*`` variables) is given to every instance; ``env`` adds settings and
    ``rules`` TOML of its own to the rules file."""

    def __init__(self, root: Path, database_url: str, bot: FakeBotApi | None, twilio: FakeTwilio | None, *,
                 instances: int = 2, media_env: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = (), rules: str = ""):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        rules_file = self.root / "rules.toml"
        rules_file.write_text(RULES + rules)
        self.servers = [ServeProcess(self.root / f"instance{i}", database_url, args=args)
                        for i in range(1, instances + 1)]
        self.balancer = HaproxyProcess([s.port for s in self.servers], self.root / "haproxy")
        common = {
            "GRIDLINE_PUBLIC_URL": self.balancer.url,
            "GRIDLINE_RULES": str(rules_file),
            "GRIDLINE_TRUSTED_PROXIES": "127.0.0.1/32",
            "GRIDLINE_TWILIO_AUTH_TOKEN": TOKEN,
            "GRIDLINE_SERVICE_HOURS": "00:00-23:59",
            **(media_env or {}),
            **(env or {}),
        }
        if twilio is not None:
            common.update({"GRIDLINE_TWILIO_ACCOUNT_SID": twilio.account_sid, "GRIDLINE_TWILIO_API_URL": twilio.base_url,
                           "GRIDLINE_HOTLINE_NUMBER": twilio.phone_number})
        if bot is not None:
            common.update({"GRIDLINE_TELEGRAM_TOKEN": bot.token, "GRIDLINE_TELEGRAM_API_URL": bot.root_url,
                           "GRIDLINE_TELEGRAM_SECRET": WEBHOOK_SECRET, "GRIDLINE_TELEGRAM_MODE": "webhook"})
        for server in self.servers:
            server.extra_env.update(common)
        self.bot = bot
        self.killed: list[int] = []

    @property
    def url(self) -> str:
        return self.balancer.url

    def server(self, number: int) -> ServeProcess:
        """Instance ``number`` (1-based, as HAProxy names them gridline1, gridline2, …)."""
        return self.servers[number - 1]

    async def start(self, *, together: bool = False, timeout: float = 180) -> None:
        """Start the instances (one after another, or all at the same moment on the empty
        database), then the balancer, and wait until HAProxy sees every instance up."""
        await asyncio.to_thread(self.balancer.start)
        if together:
            await asyncio.gather(*(asyncio.to_thread(s.start, timeout) for s in self.servers))
        else:
            for server in self.servers:
                await asyncio.to_thread(server.start, timeout)
        await asyncio.to_thread(self.balancer.wait_servers_up, timeout)

    async def kill(self, number: int, *, delete_data: bool = False) -> None:
        """SIGKILL instance ``number``; with ``delete_data`` the machine is gone: its data
        folder goes too, and so does its port. (The rig keeps each instance's listening
        socket, as a supervisor would for a restart; left open, a vanished machine would
        take connections into its backlog and never answer, which a machine that is gone
        does not do: HAProxy's requests sent there before the health check marked it down
        waited out their timeout instead of being sent to the other instance.)"""
        server = self.server(number)
        await asyncio.to_thread(server.kill)
        self.killed.append(number)
        if delete_data:
            server.listener.close()
            shutil.rmtree(server.data_dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"===== instance {i} =====\n{s.output}" for i, s in enumerate(self.servers, 1))

    def close(self) -> None:
        for server in self.servers:
            server.close()
        self.balancer.close()


@dataclass
class Fetched:
    status: int
    body: bytes
    content_type: str
    content_range: str


class ConsoleReader:
    """An administrator reading the console over HTTP (through the balancer: every request
    may land on another instance), with a cookie jar of its own."""

    def __init__(self, url: str):
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def login(self) -> None:
        with self.opener.open(f"{self.url}/console/login", timeout=30) as resp:
            token = _csrf(resp.read().decode())
        form = urllib.parse.urlencode({"_csrf": token, "name": ADMIN, "password": PASSWORD}).encode()
        with self.opener.open(f"{self.url}/console/login", data=form, timeout=60) as resp:
            assert resp.status == 200

    def get(self, path: str, *, byte_range: str | None = None) -> Fetched:
        request = urllib.request.Request(f"{self.url}{path}")
        if byte_range:
            request.add_header("Range", f"bytes={byte_range}")
        try:
            with self.opener.open(request, timeout=60) as resp:
                return Fetched(resp.status, resp.read(), resp.headers.get("Content-Type", ""),
                               resp.headers.get("Content-Range", ""))
        except urllib.error.HTTPError as err:
            return Fetched(err.code, err.read(), err.headers.get("Content-Type", ""), "")
