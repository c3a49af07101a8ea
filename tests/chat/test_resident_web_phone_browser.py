"""Phone verification in a real phone-sized browser (Debian's Chromium, 390x844): the
resident types a number in "我的诉求", the code arrives by SMS at the fake Twilio REST
server, is typed back, and the resident's hotline case appears; unlinked, it goes again; no
request leaves the server."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from core import actions
from core.cases.models import Channel
from core.platform.db import session_scope
from ivr.sms import TextSms
from ivr.twilio_api import TwilioApi
from tests.chat.webchat_support import WebServer
from tests.conftest import IN_CI
from tests.support.fake_twilio import FakeTwilio

CHROMIUM = "/usr/bin/chromium"
MOBILE = "13912345678"
SHOTS = Path(__file__).resolve().parents[2] / "tmp" / "artifacts" / "webchat"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not IN_CI,
                                reason="Debian's chromium is not installed (scripts/bootstrap.sh dev installs it)")


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
async def test_resident_verifies_a_phone_number_in_a_phone_browser(engine, demo, tmp_path):
    from playwright.async_api import async_playwright

    with session_scope(engine) as session:
        registered = actions.find_resident_by_phone(session, demo.household_phone)
        registered.phone = MOBILE
        session.add(registered)
        hotline, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description="小区门口的路灯不亮", contact_phone=MOBILE,
            resident_id=registered.id), actor="test")
        hotline_number = hotline.number
    SHOTS.mkdir(parents=True, exist_ok=True)
    with FakeTwilio() as twilio:
        server = await WebServer(engine, tmp_path).start()
        settings = SimpleNamespace(hotline_number=twilio.phone_number, twilio_messaging_service_sid="")
        api = TwilioApi(twilio.account_sid, twilio.auth_token, api_url=twilio.base_url)
        server.services.extras["send_sms"] = TextSms(api, settings).send
        base = server.url
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM,
                                                   args=["--headless", "--no-sandbox", "--disable-gpu",
                                                         "--disable-background-networking", "--no-first-run"])
                context = await browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844},
                                                    is_mobile=True, has_touch=True, device_scale_factor=2)
                outside: list[str] = []

                async def only_ours(route):
                    if route.request.url.startswith(base):
                        await route.continue_()
                    else:
                        outside.append(route.request.url)
                        await route.abort()

                await context.route("**/*", only_ours)
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(f"{e} {e.stack}"))
                await page.goto(f"{base}/chat/")
                await page.wait_for_selector("text=不用注册")
                await page.click("#tab-mine")
                await page.wait_for_selector("#verify >> text=验证手机号")
                await page.fill("#phone", "12345")
                await page.click("#phone-send")
                await page.wait_for_selector("#phone-msg >> text=不是有效的手机号码")
                await page.fill("#phone", MOBILE)
                await page.click("#phone-send")
                await page.wait_for_selector("#phone-msg >> text=验证码已发送")
                (body,) = [m["body"] for m in twilio.messages.values() if m["to"] == "+86" + MOBILE]
                code = re.search(r"验证码是(\d{6})", body).group(1)
                wrong = "000000" if code != "000000" else "111111"
                await page.fill("#code", wrong)
                await page.click("#code-check")
                await page.wait_for_selector("#phone-msg >> text=验证码不对")
                await page.fill("#code", code)
                await page.click("#code-check")
                await page.wait_for_selector("#phone-msg >> text=已验证")
                await page.wait_for_selector(f"#cases >> text={hotline_number}")
                assert await page.is_hidden("#phone-form")
                widths = await page.evaluate(
                    "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
                assert widths[0] <= widths[1], widths
                await page.screenshot(path=str(SHOTS / "phone-verified-390x844.png"))
                # a reload remembers the verified number
                await page.reload()
                await page.click("#tab-mine")
                await page.wait_for_selector("#phone-msg >> text=已验证手机号")
                assert await page.is_hidden("#phone-form")
                # "解除绑定 / 更换号码": the hotline case leaves the list, the form is back
                await page.click("#phone-unlink")
                await page.wait_for_selector("#phone-msg >> text=已解除手机号")
                await page.wait_for_selector(f"#cases >> text={hotline_number}", state="detached")
                assert await page.is_visible("#phone-form") and await page.is_hidden("#phone-unlink")
                await page.reload()
                await page.click("#tab-mine")
                await page.wait_for_selector("#verify >> text=验证手机号")
                assert await page.is_visible("#phone-form") and await page.is_hidden("#phone-unlink")
                await browser.close()
            assert outside == [] and errors == []
        finally:
            await server.stop()
