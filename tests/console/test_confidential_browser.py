"""A confidential case's page in a real browser (Debian's Chromium via Playwright), as a
grid worker sees it: the 保密 badge, the masked words, no player and no request for the
recording; then as the operator, who hears it and lifts the mark with the page's button.
Screenshots are kept under tmp/artifacts/console/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from core.platform.settings import Settings
from gridline.app import build_app
from tests.conftest import IN_CI
from tests.console.conftest import PASSWORD, PHONE
from tests.console.test_browser import ARTIFACTS, CHROMIUM, FLAGS
from tests.console.test_confidential import leaked, secret  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not IN_CI,
                                reason="Debian's chromium is not installed (scripts/bootstrap.sh dev installs it)")


async def _login(page, base: str, name: str) -> None:
    await page.context.clear_cookies()
    await page.goto(f"{base}/console/login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()


async def test_a_worker_sees_the_badge_and_masked_words_and_no_recording_the_operator_lifts_it(
        engine, world, secret, request):  # noqa: F811
    from playwright.async_api import async_playwright

    number, recording = secret
    shots = ARTIFACTS / f"confidential-{request.node.callspec.id}"
    shots.mkdir(parents=True, exist_ok=True)
    app = build_app(Settings(data_dir=world.data_dir), engine=engine, channels=("console",), run_jobs=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            context = await browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
            page = await context.new_page()
            files: list[int] = []
            page.on("response", lambda r: files.append(r.status) if "/files/" in r.url else None)

            await _login(page, base, "w1")
            await page.goto(f"{base}/console/cases/{number}")
            badge = page.locator("h1 #confidential")
            assert await badge.is_visible() and (await badge.inner_text()).strip() == "保密"
            assert await page.locator("#confidential-notice").is_visible()
            assert await page.locator("#voice-withheld").is_visible()
            assert await page.locator("audio").count() == 0
            shown = await page.locator("main").inner_text()
            assert leaked(shown) == [] and "楼上每天半夜噪音" in shown
            await page.screenshot(path=str(shots / "01-worker.png"), full_page=True)
            # typed by hand, the recording's address answers 403 with words, not the voice
            await page.goto(f"{base}/console/cases/{number}/files/{recording}")
            assert "保密" in await page.locator("body").inner_text()
            assert files == [403]

            await _login(page, base, "op")
            await page.goto(f"{base}/console/cases/{number}")
            assert await page.locator("audio").count() == 1
            assert PHONE in await page.locator("#phone").inner_text()
            await page.screenshot(path=str(shots / "02-operator.png"), full_page=True)
            await page.fill("#act-confidential input[name=reason]", "居民同意公开")
            await page.click("#act-confidential button[type=submit]")
            await page.wait_for_url(re.compile(rf".*/console/cases/{number}\?done=confidential$"))
            assert await page.locator("h1 #confidential").count() == 0
            await browser.close()
    finally:
        await server.close()
