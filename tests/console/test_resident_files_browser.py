"""Issue 20's account takeover, replayed in Debian's Chromium: a resident sends two "voice
notes" through the real python-telegram-bot app (fake Bot API server), one a script that
reads ``/console/users`` and its CSRF token, one a page whose ``<script src>`` points at the
first. An administrator opens the page's file URL. Before the fix it ran the script in the
admin's session; now the file is a download and nothing of it runs, both as the chat stores
it today (its type read from its bytes) and as an older Gridline stored it (the sender's
``text/html`` and ``text/javascript`` on the rows, before migration 0011): the console
re-checks the type when it serves. The resident's real voice note still plays in the case
page (canplay, a 206 for its Range request)."""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from sqlmodel import select

from console.access import invalidate_grid_tree
from core.cases.models import Attachment
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline.app import build_app
from speech_models.pool import SpeechPool
from tests.chat.conftest import Harness, _fake_speech, demo  # noqa: F401  (demo: the chat tests' district)
from tests.conftest import IN_CI
from tests.console.conftest import PASSWORD
from tests.console.test_browser import CHROMIUM, FLAGS
from tests.support.fake_bot_api import FakeBotApi
from tests.support.fake_transcriber import FakeTranscriber
from tests.support.media_samples import audio
from tests.support.waiting import until

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not IN_CI,
                                reason="Debian's chromium is not installed (scripts/bootstrap.sh dev installs it)")

RESIDENT = 8901
# What the attacker's "voice note" does in an operator's session: read a page only staff
# may see, take its CSRF token, and show that it has them (and ask the server once more,
# so the theft is seen on the wire too).
STEAL = (b"fetch('/console/users').then(r => r.text()).then(t => {\n"
         b"  const token = (t.match(/name=\"_csrf\" value=\"([^\"]+)\"/) || [])[1] || t.length;\n"
         b"  document.title = 'stolen:' + token;\n"
         b"  fetch('/console/search?text=stolen-' + encodeURIComponent(token));\n"
         b"});\n")


def page_loading(script_id: int) -> bytes:
    # relative: from .../files/<page> it names .../files/<script> of the same case
    return (f"<!doctype html><html><head><title>voice</title><script src=\"{script_id}\"></script></head>"
            f"<body>语音</body></html>").encode()


def _attachment_id(engine, data: bytes) -> int:
    with session_scope(engine) as session:
        return session.exec(select(Attachment.id).where(
            Attachment.sha256 == hashlib.sha256(data).hexdigest())).one()


def _types(engine, ids: list[int]) -> list[str | None]:
    with session_scope(engine) as session:
        return [session.get(Attachment, i).mime_type for i in ids]


def _set_types(engine, types: dict[int, str]) -> None:
    with session_scope(engine) as session:
        for att_id, mime in types.items():
            att = session.get(Attachment, att_id)
            att.mime_type = mime
            session.add(att)


@pytest.fixture
async def fake():
    async with FakeBotApi() as api:
        yield api


async def _resident_files_the_attack(h: Harness, voice: bytes) -> tuple[str, int, int, int]:
    """The resident's side, over the Bot API: the script, the page that loads it, then a
    real voice note; the petition is filed with all three. Returns the case number and the
    three attachment ids."""
    h.fake.add_user(RESIDENT, "Mallory", language_code="zh-hans")
    await h.say(RESIDENT, "我要反映")
    await h.reply(RESIDENT, "遇到了什么问题")
    script = h.fake.add_file(STEAL, kind="voice", mime_type="text/javascript")
    await h.send(h.fake.make_voice_update(script.file_id, duration=2, user_id=RESIDENT, mime_type="text/javascript"))
    await h.reply(RESIDENT, "无法识别")
    script_id = _attachment_id(h.engine, STEAL)  # attachment ids are sequential: easy to guess
    page_bytes = page_loading(script_id)
    page = h.fake.add_file(page_bytes, kind="voice", mime_type="text/html")
    await h.send(h.fake.make_voice_update(page.file_id, duration=2, user_id=RESIDENT, mime_type="text/html"))
    await h.reply(RESIDENT, "无法识别")
    real = h.fake.add_file(voice, kind="voice", mime_type="audio/ogg")
    await h.send(h.fake.make_voice_update(real.file_id, duration=2, user_id=RESIDENT))
    await h.reply(RESIDENT, "我听到的是")
    await h.press(RESIDENT, "对，就是这样")
    await h.reply(RESIDENT, "问题发生在哪里")
    await h.say(RESIDENT, "跳过")
    await h.press(RESIDENT, "路灯故障")
    await h.reply(RESIDENT, "请确认")
    await h.press(RESIDENT, "✅ 确认提交")
    number = re.search(r"\d{10,}", (await h.reply(RESIDENT, "诉求已受理"))["text"]).group(0)
    return number, script_id, _attachment_id(h.engine, page_bytes), _attachment_id(h.engine, voice)


async def test_a_residents_script_never_runs_in_an_admins_session(fake, engine, demo, tmp_path):  # noqa: F811
    voice = audio("ogg", 2.0)
    h = Harness(fake, engine, _fake_speech(), tmp_path, "webhook")
    await h.start()
    try:
        heard = FakeTranscriber()
        heard.script(voice, "三 号 楼 门口 的 路灯 坏 了")
        h.services.speech = SpeechPool(heard, workers=1)
        number, script_id, page_id, voice_id = await _resident_files_the_attack(h, voice)
    finally:
        await h.stop()
    # stored as what the bytes are, whatever the sender declared
    assert _types(engine, [script_id, page_id, voice_id]) == [
        "application/octet-stream", "application/octet-stream", "audio/ogg"]

    with session_scope(engine) as session:
        from console.auth import add_user

        add_user(session, "admin", PASSWORD, "admin")
    invalidate_grid_tree()
    app = build_app(Settings(data_dir=tmp_path / "data"), engine=engine, channels=("console",), run_jobs=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    files = f"{base}/console/cases/{number}/files"
    try:
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeout
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            context = await browser.new_context(locale="zh-CN", accept_downloads=True)
            requested: list[str] = []
            context.on("request", lambda r: requested.append(r.url))
            page = await context.new_page()
            await page.goto(f"{base}/console/login")
            await page.fill("input[name=name]", "admin")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(re.compile(r".*/console/(?!login).*"))

            async def admin_opens(url: str):
                """The admin opens a file's URL, as from a link in a message; the download
                it became, or None when it opened as a page."""
                try:
                    async with page.expect_download(timeout=10_000) as info:
                        # "Download is starting": it did not open as a page
                        with contextlib.suppress(PlaywrightError):
                            await page.goto(url)
                    return await info.value
                except PlaywrightTimeout:
                    return None

            async def nothing_ran(label: str) -> None:
                await page.wait_for_timeout(1_000)  # time for a script's fetches, had one run
                stolen = [u for u in requested if "/console/users" in u or "stolen" in u]
                assert stolen == [], f"{label}: the resident's script ran in the admin's session: {stolen}"
                for p in context.pages:
                    assert not (await p.title()).startswith("stolen"), label

            # 1. as the chat stores them now
            for att in (page_id, script_id):
                download = await admin_opens(f"{files}/{att}")
                assert download is not None, f"file {att} opened in the browser instead of downloading"
                assert download.suggested_filename == f"case-{number}-file-{att}.bin"
            await nothing_ran("types read from the bytes")

            # 2. as an older Gridline stored them: the sender's types on the rows, the
            # migration not yet run; the console re-checks the type when it serves
            _set_types(engine, {script_id: "text/javascript", page_id: "text/html"})
            download = await admin_opens(f"{files}/{page_id}")
            await nothing_ran("the sender's types still on the rows")
            assert download is not None and download.suggested_filename.endswith(".bin")
            assert Path(await download.path()).read_bytes() == page_loading(script_id)

            # the real voice note still plays in the case page, seeking with Range (206)
            media: list[tuple[str, int, str]] = []
            page.on("response", lambda r: media.append((r.url, r.status, r.headers.get("content-type", "")))
                    if "/files/" in r.url else None)
            await page.goto(f"{base}/console/cases/{number}")
            player = f"audio[src='/console/cases/{number}/files/{voice_id}']"
            # page.evaluate, not wait_for_function: its polling needs eval, which the console's CSP refuses
            await until(lambda: page.evaluate(f"document.querySelector(\"{player}\").readyState >= 3"), timeout=30, message=f"document.querySelector(\"{player}\").readyState >= 3")
            assert (f"{files}/{voice_id}", 206, "audio/ogg") in media, media
            # and the two others are offered as downloads, never as a player
            assert await page.locator(f"audio[src$='/files/{page_id}'], audio[src$='/files/{script_id}']").count() == 0
            assert await page.locator("#downloads a[download]").count() == 2
            await nothing_ran("the case page")
            await browser.close()
    finally:
        await server.close()
