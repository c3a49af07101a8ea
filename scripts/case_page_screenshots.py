"""The README's screenshots of a case page with recordings in every state the console tells
apart: one that plays, one waiting to be uploaded (录音等待上传), one whose upload was given up
(录音上传失败…), one whose object is missing (录音文件缺失).

    .venv/bin/python scripts/case_page_screenshots.py [--out docs/screenshots]

Seeds a scratch SQLite database with the tests' small district and one hotline case, serves
the console from this checkout (in-process, on 127.0.0.1), and photographs the case page in
Debian's Chromium (/usr/bin/chromium, through Playwright) at 1366×768 and 390×844, the
recordings scrolled into view. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
VIEWPORTS = {"1366x768": (1366, 768), "390x844": (390, 844)}
ADMIN, PASSWORD = "admin", "screenshots only"


def seed(engine, data_dir: Path) -> tuple[str, dict[str, int]]:
    """One hotline case with four recordings; returns its number and state → attachment id."""
    from sqlmodel import select

    from console.auth import add_user
    from core import actions
    from core.cases.models import Attachment, Channel
    from core.cases.queries import case_files
    from core.platform import uploads
    from core.platform.db import session_scope
    from core.platform.models import Job, JobStatus
    from gridline.wiring import wire
    from tests.console.conftest import TRANSCRIPT, write_wav
    from tests.core.district import build_district

    wire()  # what follows a case's change (the app does it at start; the case is made before)
    names = {"plays": "petition-1", "pending": "petition-2", "failed": "address-1", "missing": "address-2"}
    refs = []
    for state, segment in names.items():
        key = f"recordings/20261207/CA0000screenshot-{segment}.wav"
        size = write_wav(data_dir / key, seconds=2.5 if state == "plays" else 1.5)
        refs.append(actions.FileRef("recording", key, "audio/wav", size))
    with session_scope(engine) as session:
        build_district(session)
        add_user(session, ADMIN, PASSWORD, "admin")
        case, _ = actions.submit_petition(session, actions.Petition(
            channel=Channel.hotline, description="洋坊新村九号楼路灯坏了", idempotency_key="hotline|CA0000screenshot",
            contact_phone="+8613800138000", transcript=TRANSCRIPT, transcript_confidence=0.55, files=tuple(refs),
            flags=("low_confidence", "transcript_unconfirmed")), actor="hotline")
        session.flush()
        ids = dict(zip(names, [f.id for f in case_files(session, case.id, "recording")], strict=True))
        spool = uploads.spool_name(data_dir)
        for state in ("pending", "failed"):  # waiting in this machine's spool for the bucket
            uploads.mark_waiting(session, session.get(Attachment, ids[state]), spool)
        session.flush()
        failed_key = session.get(Attachment, ids["failed"]).path
        for job in session.exec(select(Job).where(Job.kind == uploads.MEDIA_UPLOAD_JOB)).all():
            if (job.payload or {}).get("key") == failed_key:  # given up after its tries
                job.status = JobStatus.failed
                session.add(job)
        number = case.number
    (data_dir / refs[3].path).unlink()  # the missing one: its object is gone
    return number, ids


async def photograph(out: Path) -> list[Path]:
    from aiohttp import web
    from playwright.async_api import async_playwright

    from core.platform.db import make_engine
    from core.platform.migrations import upgrade
    from core.platform.settings import Settings
    from gridline.app import build_app

    made = []
    with tempfile.TemporaryDirectory(prefix="gridline-screenshots-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        engine = make_engine(f"sqlite:///{tmp}/gridline.db")
        upgrade(engine)
        number, ids = seed(engine, data_dir)
        app = build_app(Settings(data_dir=data_dir), engine=engine, channels=("console",), run_jobs=False)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                for label, (width, height) in VIEWPORTS.items():
                    context = await browser.new_context(locale="zh-CN", viewport={"width": width, "height": height})
                    page = await context.new_page()
                    await page.goto(f"{base}/console/login")
                    await page.fill("input[name=name]", ADMIN)
                    await page.fill("input[name=password]", PASSWORD)
                    await page.click("button[type=submit]")
                    await page.wait_for_load_state("networkidle")
                    # The page learns that an object is missing when a download finds it so.
                    missing = await page.request.get(f"{base}/console/cases/{number}/files/{ids['missing']}")
                    if missing.status != 404:
                        raise SystemExit(f"the missing recording answered {missing.status}, not 404")
                    await page.goto(f"{base}/console/cases/{number}")
                    await page.wait_for_function("document.getElementById('player').readyState >= 1")
                    for state in ("pending", "failed", "missing"):
                        if await page.locator(f".file-state.{state}").count() != 1:
                            raise SystemExit(f"the case page shows no {state} note")
                    # the recordings in view (on a phone the page is wider than the screen: sideways too)
                    await page.locator("section.words").scroll_into_view_if_needed()
                    path = out / f"case-recordings-{label}.png"
                    await page.screenshot(path=str(path))
                    made.append(path)
                    await context.close()
                await browser.close()
        finally:
            await runner.cleanup()
            engine.dispose()
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(photograph(args.out)):
        print(path)


if __name__ == "__main__":
    main()
