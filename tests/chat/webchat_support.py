"""A resident's browser for the web chat's API (``chat.resident_web``), over real HTTP, and
the Gridline app that serves it (SQLite or PostgreSQL, the Telegram bot off)."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from chat.resident_web import WEB_CHAT, WebChat
from chat.resident_web import setup as setup_web_chat
from core.platform.settings import Settings
from gridline.app import SERVICES, build_app


@dataclass
class WebServer:
    engine: Any
    tmp_path: Any
    speech: Any = None
    options: dict = field(default_factory=dict)
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    sock: socket.socket | None = None

    async def start(self) -> WebServer:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        settings = Settings(data_dir=self.tmp_path / "data", public_url=f"http://127.0.0.1:{port}")
        self.app = build_app(settings, engine=self.engine, speech=self.speech, channels=(), run_jobs=False)
        setup_web_chat(self.app, self.app[SERVICES], **self.options)
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    @property
    def url(self) -> str:
        return self.app[SERVICES].settings.public_url

    @property
    def chat(self) -> WebChat:
        return self.app[WEB_CHAT]

    @property
    def services(self) -> Any:
        return self.app[SERVICES]


class Resident:
    """One phone: its own cookie jar, the CSRF token the page reads, posts with fresh keys."""

    def __init__(self, url: str, language: str = "zh"):
        self.url, self.language = url, language
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""
        self.dialog: str | None = None
        self.last: dict = {}

    async def close(self) -> None:
        await self.http.close()

    async def open(self, query: str = "") -> str:
        async with self.http.get(f"{self.url}/chat/{query}") as r:
            assert r.status == 200, r.status
            page = await r.text()
        state = await self.state()
        self.csrf = state["csrf"]
        return page

    async def state(self) -> dict:
        async with self.http.get(f"{self.url}/chat/api/state") as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        self.dialog = body["dialog"]
        return body

    async def post(self, body: dict, *, key: str | None = None, expect: int = 200,
                   headers: dict | None = None) -> dict:
        body = {**body, "key": key or secrets.token_hex(8)}
        if body.get("kind") == "button":
            body.setdefault("dialog", self.dialog)
        sent = {"X-CSRF-Token": self.csrf, **(headers or {})}
        async with self.http.post(f"{self.url}/chat/api/step", json=body, headers=sent) as r:
            answer = await r.json()
            assert r.status == expect, (r.status, answer)
        if r.status == 200:
            self.dialog = answer.get("dialog")
            self.last = answer
        return answer

    async def say(self, text: str, **kw: Any) -> dict:
        return await self.post({"kind": "text", "text": text}, **kw)

    async def press(self, label_or_action: str, **kw: Any) -> dict:
        """Press a button of the last answer, by its label (or its action)."""
        for reply in reversed(self.last.get("replies") or []):
            for button in reply.get("buttons") or []:
                if label_or_action in (button["label"], button["action"]):
                    return await self.post({"kind": "button", "action": button["action"], "label": button["label"]},
                                           **kw)
        if label_or_action in ("skip",):
            return await self.post({"kind": "button", "action": label_or_action}, **kw)
        raise AssertionError(f"no button {label_or_action!r} in {self.last}")

    async def upload(self, kind: str, data: bytes, filename: str, content_type: str, *, key: str | None = None,
                     expect: int = 200) -> dict:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=filename, content_type=content_type)
        params = {"key": key or secrets.token_hex(8), "dialog": self.dialog or ""}
        async with self.http.post(f"{self.url}/chat/api/{kind}", data=form, params=params,
                                  headers={"X-CSRF-Token": self.csrf}) as r:
            answer = await r.json()
            assert r.status == expect, (r.status, answer)
        if r.status == 200:
            self.dialog = answer.get("dialog")
            self.last = answer
        return answer

    async def cases(self) -> list[dict]:
        async with self.http.get(f"{self.url}/chat/api/cases") as r:
            assert r.status == 200
            return (await r.json())["cases"]

    def text(self) -> str:
        return "\n".join(r["text"] for r in self.last.get("replies") or [])
