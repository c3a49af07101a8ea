"""The case page's steps in Debian's Chromium (issue 26), at a desk (1366×768) and on a phone
(390×844): merge → the confirm page → undo; words typed when the session has ended come back
after the login, on the same page; a button shows it is working and takes no second press;
nothing in Mandarin shows a code or an English sentence; no page scrolls sideways on the
phone. Screenshots under tmp/artifacts/console/casework/."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from sqlmodel import delete, select

from console.models import ConsoleSession
from core import actions
from core.cases.models import CaseEvent, CaseStatus
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline.app import build_app
from tests.conftest import IN_CI
from tests.console.conftest import PASSWORD
from tests.console.test_browser import ARTIFACTS, CHROMIUM, FLAGS
from tests.console.test_words_zh import ACCOUNTS, foreign_words
from tests.support.waiting import until

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not IN_CI,
                                reason="Debian's chromium is not installed (scripts/bootstrap.sh dev installs it)")

SIZES = {"desk": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}


async def _login(page, base: str, name: str) -> None:
    await page.context.clear_cookies()
    await page.goto(f"{base}/console/login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("load")
    assert "/console/login" not in page.url, name


def _status(engine, number: str) -> CaseStatus:
    with session_scope(engine) as session:
        return actions.get_case(session, number).status


def _actions(engine, number: str) -> list[str]:
    with session_scope(engine) as session:
        case = actions.get_case(session, number)
        return list(session.exec(select(CaseEvent.action).where(CaseEvent.case_id == case.id)
                                 .order_by(CaseEvent.id)).all())


class Checks:
    """What every page the test lands on must satisfy; problems are gathered, then shown at once."""

    def __init__(self, page, size: str, shots: Path):
        self.page, self.size, self.shots = page, size, shots
        self.problems: dict[str, object] = {}

    async def __call__(self, name: str) -> None:
        await self.page.screenshot(path=str(self.shots / f"{self.size}-{name}.png"), full_page=True)
        bad = foreign_words(await self.page.content(), set(ACCOUNTS))
        if bad:
            self.problems[f"{self.size} {name}"] = bad
        if self.size == "phone":
            over = await self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            if over > 0:
                self.problems[f"{self.size} {name} sideways"] = f"{over} px wider than the phone"


@pytest.mark.parametrize("size", list(SIZES))
async def test_merge_confirm_undo_session_and_busy_buttons(engine, world, request, size):
    from playwright.async_api import async_playwright

    shots = ARTIFACTS / "casework" / request.node.callspec.id
    shots.mkdir(parents=True, exist_ok=True)
    app = build_app(Settings(data_dir=world.data_dir), engine=engine, channels=("console",), run_jobs=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    dup, original = world.triage_case, world.other_grid_case
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            phone = size == "phone"
            context = await browser.new_context(locale="zh-CN", viewport=SIZES[size], is_mobile=phone, has_touch=phone)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            check = Checks(page, size, shots)
            await _login(page, base, "op")

            # ---- merge → a page that says what will happen → confirm → undo
            await page.goto(f"{base}/console/cases/{dup}")
            await page.fill("#act-merge input[name=into]", original)
            await page.click("#act-merge button[type=submit]")
            await page.wait_for_selector("#confirm")
            assert _status(engine, dup) == CaseStatus.received  # asking wrote nothing
            said = await page.inner_text("#confirm")
            assert dup in said and original in said and "24 小时内" in said
            await check("merge-confirm")
            await page.click("#confirm-yes")
            await page.wait_for_url(re.compile(r".*done=merge$"))
            assert _status(engine, dup) == CaseStatus.merged
            assert await page.locator("#act-unmerge").count() == 1
            merged_callers = await page.inner_text("#callers")  # the other case and its caller, and its own
            assert original in merged_callers and "+8613911112222" in merged_callers and "（本件）" in merged_callers
            await check("merged")
            await page.goto(f"{base}/console/cases/{original}")
            callers = await page.inner_text("#callers")
            assert dup in callers and original in callers
            await check("surviving")
            await page.goto(f"{base}/console/cases/{dup}")
            await page.click("#act-unmerge button[type=submit]")
            await page.wait_for_url(re.compile(r".*done=unmerge$"))
            assert _status(engine, dup) == CaseStatus.received
            assert _actions(engine, original)[-2:] == ["absorb", "unabsorb"]
            await check("unmerged")

            # ---- a button shows it is working and cannot be pressed twice
            sent: list[str] = []

            async def slow(route):
                sent.append(route.request.url)
                await asyncio.sleep(1.5)  # a slow server: the answer takes its time
                await route.continue_()

            await page.route("**/act/annotate", slow)
            # While a navigation is pending Playwright cannot evaluate in the page, so the page
            # itself looks at the button just after the press, presses again, and keeps what it
            # saw in sessionStorage (same tab, read after the answer has come).
            await page.evaluate("""() => document.addEventListener("submit", (event) => {
                if (sessionStorage.getItem("probe")) return;
                const form = event.target, button = form.querySelector("button[type=submit]");
                setTimeout(() => {
                    sessionStorage.setItem("probe", JSON.stringify({disabled: button.disabled,
                        busy: button.classList.contains("busy"), aria: button.getAttribute("aria-busy")}));
                    button.click();  // a second press while the first is on its way
                    form.requestSubmit();  // and a script's, too
                }, 100);
            })""")
            await page.fill("#act-annotate input[name=note]", "已电话联系居民")
            await page.locator("#act-annotate button[type=submit]").click(no_wait_after=True)
            await page.wait_for_url(re.compile(r".*done=annotate$"))
            probe = json.loads(await page.evaluate("sessionStorage.getItem('probe')"))
            assert probe == {"disabled": True, "busy": True, "aria": "true"}
            await page.unroute("**/act/annotate")
            assert len(sent) == 1
            assert _actions(engine, dup).count("note") == 1

            # ---- the session ends while a correction is being typed
            typed = "洋坊新村9号楼门口路灯坏了三天，晚上很黑"
            await page.fill("#description", typed)
            await page.fill("#act-annotate input[name=note]", "回电时说")
            with session_scope(engine) as session:  # the session ends (idle, or ended elsewhere)
                session.execute(delete(ConsoleSession))
            await page.click("#act-edit_text button[type=submit]")
            await page.wait_for_selector("#errorpage")
            assert "登录已过期" in await page.inner_text("#errorpage")
            await check("session-ended")
            await page.click("#login-again")
            await page.wait_for_selector("input[name=password]")
            await page.fill("input[name=name]", "op")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(re.compile(rf".*/console/cases/{dup}$"))
            await page.wait_for_selector("#restored")
            assert await page.input_value("#description") == typed
            assert await page.input_value("#act-annotate input[name=note]") == "回电时说"
            await check("typed-restored")
            await page.fill("#act-annotate input[name=note]", "")  # the note is not to be sent after all
            await page.click("#act-edit_text button[type=submit]")
            await page.wait_for_url(re.compile(r".*done=edit_text$"))
            with session_scope(engine) as session:
                assert actions.get_case(session, dup).description == typed  # nothing the person typed was lost
            await page.reload()
            assert await page.locator("#restored").count() == 0  # the words were taken: not put back again

            # ---- an htmx request that meets an ended session: a toast, not raw text
            await page.goto(f"{base}/console/triage")
            with session_scope(engine) as session:
                session.execute(delete(ConsoleSession))
            await page.evaluate("htmx.ajax('GET', location.pathname, {target: 'tbody[hx-get]'})")
            await until(lambda: page.evaluate("!!document.getElementById('toast')"), timeout=10,
                        message="a toast")
            toast = await page.inner_text("#toast")
            assert "登录已过期" in toast and await page.locator("#toast-login").count() == 1
            await check("htmx-toast")
            assert errors == [], errors
            await context.close()
            await browser.close()
    finally:
        await server.close()
    assert check.problems == {}
