"""Placing a case and a grid's page in Debian's Chromium (Playwright), at a desk (1366×768) and on a
phone (390×844): the operator finds a grid by name, sees it on its map, places the case; opens the
tree level by level, dispatches to the grid's own worker (the neighbour's is not offered); the grid
page's QR code downloads as a PNG that decodes and an A4 poster; a queue's filters land in its
address; a survey comment plays from its words. Nothing is asked of any server but ours, and no
page scrolls sideways on the phone. Screenshots: tmp/artifacts/console/grids/."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from core import actions
from core.followup.models import Survey
from core.platform.db import session_scope
from core.platform.settings import Settings
from gridline.app import build_app
from tests.conftest import IN_CI
from tests.console.conftest import PASSWORD, write_wav
from tests.console.test_browser import ARTIFACTS, CHROMIUM, FLAGS
from tests.console.test_grids import MICRO1, MICRO2
from tests.console.test_layout_browser import DOCS
from tests.support.waiting import until

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not IN_CI,
                                reason="Debian's chromium is not installed (scripts/bootstrap.sh dev installs it)")

SIZES = {"desk": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}


def add_comment(engine, world) -> None:
    rel = "recordings/20261120/CA-browser-comment.wav"
    size = write_wav(world.data_dir / rel, seconds=2.0)
    with session_scope(engine) as session:
        case = actions.get_case(session, world.other_grid_case)
        survey = Survey(case_id=case.id, channel="phone")
        session.add(survey)
        session.flush()
        actions.survey_comment(session, survey, actor="resident", text="修好了，很满意",
                               file=actions.FileRef("survey_comment", rel, "audio/wav", size))


@pytest.mark.parametrize("size", ["desk", "phone"])
async def test_place_a_case_and_print_a_grids_qr_in_a_real_browser(engine, world, request, size, tmp_path):
    from playwright.async_api import async_playwright

    shots = ARTIFACTS / "grids" / request.node.callspec.id
    shots.mkdir(parents=True, exist_ok=True)
    add_comment(engine, world)
    app = build_app(Settings(data_dir=world.data_dir, public_url="https://hotline.example.org"), engine=engine,
                    channels=("console", "chat"), run_jobs=False)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    number = world.triage_case
    phone = size == "phone"
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            context = await browser.new_context(locale="zh-CN", viewport=SIZES[size], is_mobile=phone,
                                                has_touch=phone, accept_downloads=True)
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
            qr_answers: list[int] = []
            page.on("response", lambda r: qr_answers.append(r.status) if "/qr.png" in r.url else None)
            sideways: dict[str, int] = {}

            async def fits(name: str) -> None:
                await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
                if phone:
                    over = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                    if over > 0:
                        sideways[name] = over

            await page.goto(f"{base}/console/login")
            await page.fill("input[name=name]", "op")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_load_state("load")

            # By name: search, choose, see it on its map, place the case there.
            await page.goto(f"{base}/console/cases/{number}")
            await page.click("#place-link")
            await page.wait_for_url(re.compile(rf".*/console/cases/{number}/place$"))
            await page.fill("#grid-q", "洋坊新村1")
            await page.click("form.gridsearch button")
            await page.wait_for_selector("#grid-found")
            await page.click(f"#grid-found a[data-code='{MICRO1}']")
            await page.wait_for_url(re.compile(rf".*grid={MICRO1}$"))
            assert await page.inner_text("#chosen-name") == "洋坊新村1号微网格"
            assert await page.locator("#chosen-map svg.gridmap path.here").count() == 1
            offered = await page.eval_on_selector_all("#place-worker option", "o => o.map(x => x.value)")
            assert offered == ["", "W-M1", "W-A", "W-C", "W-S", "W-D"]  # never the neighbour's W-M2
            await fits("01-place-by-name")
            await page.click("#place-locate button")
            await page.wait_for_url(re.compile(r".*done=locate$"))
            assert "洋坊新村1号微网格" in await page.inner_text("#grid-path")

            # By the tree: open it level by level, choose the other micro grid, dispatch to its worker.
            await page.goto(f"{base}/console/cases/{number}/place?open=350499")
            for name in ("城关街道", "罗布社区", "洋坊片区"):
                await page.click(f"#grid-tree li:has(> a.grid-pick:text-is('{name}')) > a.grid-open")
                await page.wait_for_load_state("load")
            await page.click("#grid-tree a.grid-pick:text-is('洋坊新村2号微网格')")
            await page.wait_for_url(re.compile(rf".*grid={MICRO2}$"))
            offered = await page.eval_on_selector_all("#place-worker option", "o => o.map(x => x.value)")
            assert "W-M2" in offered and "W-M1" not in offered
            await page.select_option("#place-dispatch select[name=category]", "streetlight")
            await page.select_option("#place-worker", "W-M2")
            await fits("02-place-by-tree")
            await page.click("#place-dispatch button")
            await page.wait_for_url(re.compile(r".*done=dispatch$"))
            assert "W-M2" in await page.inner_text("#worker")
            assert "洋坊新村2号微网格" in await page.inner_text("#grid-path")

            # The grid's page: its QR code shows, downloads as a PNG and as an A4 poster.
            await page.goto(f"{base}/console/grids/{MICRO2}")
            await until(lambda: page.evaluate("document.querySelector('img.qrcode').naturalWidth > 0"), timeout=30,
                        message=f"the QR code image loaded (answers: {qr_answers})")
            await fits("03-grid-page")
            async with page.expect_download() as png_download:
                await page.click("#qr-png")
            png_path = tmp_path / "qr.png"
            await (await png_download.value).save_as(png_path)
            with Image.open(io.BytesIO(png_path.read_bytes())) as image:
                image.load()
                assert image.format == "PNG" and image.size[0] == image.size[1] >= 300
            async with page.expect_download() as pdf_download:
                await page.click("#qr-pdf")
            pdf_path = tmp_path / "poster.pdf"
            await (await pdf_download.value).save_as(pdf_path)
            info = subprocess.run(["pdfinfo", str(pdf_path)], capture_output=True, text=True, check=True).stdout
            assert re.search(r"Page size:\s+595\.\d+ x 841\.\d+ pts \(A4\)", info), info

            # The queue's filters stand in its address.
            await page.goto(f"{base}/console/queues/worker/W-M2")
            assert "共 2 件" in await page.inner_text("#queue-total")
            await page.select_option("#queue-filters select[name=channel]", "hotline")
            await page.click("#queue-filters button[type=submit]")
            await page.wait_for_url(re.compile(r".*/queues/worker/W-M2\?.*channel=hotline"))
            assert "共 1 件" in await page.inner_text("#queue-total")
            assert number in await page.inner_text("#queue")
            await fits("04-queue-filtered")

            # A survey comment plays from its words.
            await page.goto(f"{base}/console/cases/{world.other_grid_case}")
            await page.click(".recording.comment .transcript .w")
            await until(lambda: page.evaluate(
                "(() => { const a = document.querySelector('.recording.comment audio');"
                " return a.currentTime > 0 || !a.paused; })()"), timeout=30, message="the comment plays")
            await fits("05-survey-comment")

            assert outside == [] and errors == []
            assert sideways == {}
            await browser.close()
    finally:
        await server.close()
    if request.node.callspec.id.startswith("sqlite") and os.environ.get("GRIDLINE_WRITE_SCREENSHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)  # the README's pictures, on asking
        shutil.copy(shots / "01-place-by-name.png", DOCS / f"console-place-{size}.png")
        shutil.copy(shots / "03-grid-page.png", DOCS / f"console-grid-{size}.png")
