"""The console at a desk and on a phone (issue 26), in Debian's Chromium driven by Playwright:
each role walks its pages at 1366×768 and at 390×844; no page scrolls sideways on the phone,
no page shows a code or an English sentence in Mandarin, and the worker takes a case with
the button at the bottom of the screen. Screenshots are kept under
tmp/artifacts/console/layout/; one desk and one phone picture go to docs/screenshots/."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from core.platform.settings import Settings
from gridline.app import build_app
from tests.conftest import IN_CI
from tests.console.conftest import PASSWORD
from tests.console.test_browser import ARTIFACTS, CHROMIUM, FLAGS
from tests.console.test_words_zh import ACCOUNTS, foreign_words

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not IN_CI,
                                reason="Debian's chromium is not installed (scripts/bootstrap.sh dev installs it)")

DESK = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Who works in the field (a worker, a leader who checks): every page of theirs must fit a phone.
ROLES = ("w2", "sup", "op", "viewer", "dept")


async def _login(page, base: str, name: str) -> None:
    await page.context.clear_cookies()
    await page.goto(f"{base}/console/login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("load")
    assert "/console/login" not in page.url, name


async def _paths(page, base: str, cases: list[str]) -> list[str]:
    await page.goto(f"{base}/console/search")
    menu = await page.eval_on_selector_all("header nav a", "links => links.map(a => a.getAttribute('href'))")
    return [*menu, "/console/account", "/console/queues/mine", *[f"/console/cases/{n}" for n in cases]]


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1200, 900), (90, 140, 200)).save(out, "PNG")
    return out.getvalue()


async def _sideways(page) -> int:
    """How far the page is wider than the screen (0: no sideways scrolling)."""
    return await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


@pytest.mark.one_database
async def test_every_role_at_a_desk_and_on_a_phone(engine, world, request):
    from playwright.async_api import async_playwright

    shots = ARTIFACTS / "layout" / request.node.callspec.id
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nlayout screenshots: {shots}")
    app = build_app(Settings(data_dir=world.data_dir), engine=engine, channels=("console",), run_jobs=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    cases = [world.triage_case, world.other_grid_case]
    problems: dict[str, object] = {}
    walked = 0
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            for size_name, viewport in (("desk", DESK), ("phone", PHONE)):
                context = await browser.new_context(locale="zh-CN", viewport=viewport,
                                                    is_mobile=size_name == "phone", has_touch=size_name == "phone")
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))  # noqa: B023
                for role in ROLES:
                    await _login(page, base, role)
                    for path in await _paths(page, base, cases):
                        response = await page.goto(f"{base}{path}")
                        await page.wait_for_load_state("load")
                        walked += 1
                        where = f"{size_name} {role} {path}"
                        if response.status == 403:
                            continue  # out of this role's scope: the refusal page is styled like any other
                        assert response.status == 200, (where, response.status)
                        shot = shots / f"{size_name}-{role}-{re.sub(r'[^a-z0-9]+', '-', path)}.png"
                        await page.screenshot(path=str(shot), full_page=True)
                        bad = foreign_words(await page.content(), set(ACCOUNTS))
                        if bad:
                            problems[where] = bad
                        if size_name == "phone":
                            over = await _sideways(page)
                            if over > 0:
                                problems[where] = f"{over} px wider than the phone"
                            small = await page.evaluate("""() => [...document.querySelectorAll(
                                'main button, main select, main input:not([type=hidden]):not([type=checkbox]), .thumbbar a, .thumbbar button')]
                                .filter(e => e.offsetParent !== null)
                                .map(e => e.getBoundingClientRect()).filter(r => r.height < 40).length""")
                            if small:
                                problems[f"{where} touch"] = f"{small} controls lower than 40 px"
                assert errors == [], errors
                await context.close()

            # The worker, on the phone, takes the case with the button at the bottom of the screen.
            context = await browser.new_context(locale="zh-CN", viewport=PHONE, is_mobile=True, has_touch=True)
            page = await context.new_page()
            await _login(page, base, "w2")
            await page.goto(f"{base}/console/cases/{world.other_grid_case}")
            bar = page.locator("#thumbbar")
            box = await bar.bounding_box()
            assert box and box["y"] + box["height"] >= PHONE["height"] - 2 and box["y"] > PHONE["height"] / 2
            await page.screenshot(path=str(shots / "phone-worker-case.png"))
            shot_phone = shots / "phone-worker-case.png"
            await bar.locator("button:has-text('签收')").tap()
            await page.wait_for_url(re.compile(r".*done=accept$"))
            assert "已签收" in await page.inner_text("h1")
            assert await _sideways(page) == 0
            # ... and photographs the spot with the phone's camera (a file stands in for it)
            camera = page.locator("#add-photos input[capture=environment]")
            await camera.set_input_files([{"name": "IMG_0001.png", "mimeType": "image/png", "buffer": _png()}])
            await page.locator("#add-photos button[type=submit]").tap()
            await page.wait_for_url(re.compile(r".*done=photos$"))
            assert await page.locator(".photos img").count() == 1
            assert await _sideways(page) == 0
            await page.screenshot(path=str(shots / "phone-worker-photo.png"), full_page=True)
            await context.close()

            context = await browser.new_context(locale="zh-CN", viewport=DESK)
            page = await context.new_page()
            await _login(page, base, "op")
            await page.goto(f"{base}/console/cases/{world.triage_case}")
            shot_desk = shots / "desk-operator-case.png"
            await page.screenshot(path=str(shot_desk), full_page=True)
            await context.close()
            await browser.close()
    finally:
        await server.close()
    assert walked > 40
    assert problems == {}
    if request.node.callspec.id == "sqlite" and os.environ.get("GRIDLINE_WRITE_SCREENSHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)  # the README's pictures, on asking
        shutil.copy(shot_desk, DOCS / "console-desk.png")
        shutil.copy(shot_phone, DOCS / "console-phone.png")
