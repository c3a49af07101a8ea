"""``gridline jobs``: a process that takes one part of the background jobs from the shared
database: ``--speech`` recognises deferred recordings, ``--surveys`` places the follow-up
calls and sends the progress SMS. ``gridline worker`` is its old name, kept (hidden, with a
warning) for one release: a worker is a grid worker (``gridline workers``)."""

from __future__ import annotations

import asyncio
import signal

import typer

from core.platform.media_stores import media_store
from core.platform.settings import get_settings
from gridline.commands.common import deprecated, fail, open_database
from gridline.logs import configure as configure_logging
from gridline.speech import build_speech
from ivr.survey_jobs import run_survey_jobs
from ivr.transcription import run_speech_jobs
from ivr.twilio_api import missing_credentials


def jobs(
    speech: bool = typer.Option(False, "--speech", help="take the speech jobs (transcribe_recording, "
                                "transcribe_survey_comment)"),
    surveys: bool = typer.Option(False, "--surveys", help="take the follow-up calls (survey_phone, "
                                 "survey_call_check) and the progress SMS (sms_progress)"),
    concurrency: int = typer.Option(0, help="recordings transcribed at once (default GRIDLINE_SPEECH_WORKERS)"),
) -> None:
    """Take background jobs from the shared database. With --speech: transcribe the hotline
    recordings filed while recognition was busy or absent (needs a speech model and the data
    directory, GRIDLINE_DATA_DIR, shared with the server). With --surveys: call residents back
    through Twilio (GRIDLINE_TWILIO_*, GRIDLINE_HOTLINE_NUMBER; GRIDLINE_PUBLIC_URL is where
    Twilio reaches the server's webhooks). Run on any machine that shares the database
    (GRIDLINE_DATABASE_URL), as many as needed."""
    if not (speech or surveys):
        fail("say which work to take: --speech and/or --surveys")
    settings = get_settings()
    configure_logging(settings.log_format)
    engine = open_database()  # settings, rules and schema checked first, one line each if wrong
    if surveys and (why := missing_credentials(settings)):
        fail(f"--surveys: {why}")
    pool = None
    if speech:
        pool = build_speech(settings)
        if pool is None:
            fail("no speech model: set GRIDLINE_SPEECH_MODEL or run `gridline models fetch vosk-model-small-cn-0.22`")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        work = []
        if pool is not None:
            work.append(run_speech_jobs(engine, pool, settings.data_dir,
                                        concurrency or max(1, settings.speech_workers), stop,
                                        store=media_store(settings)))
        if surveys:
            work.append(run_survey_jobs(engine, settings, stop))
        try:
            await asyncio.gather(*work)
        finally:
            if pool is not None:
                await pool.close()

    asyncio.run(main())


def worker(
    speech: bool = typer.Option(False, "--speech"),
    surveys: bool = typer.Option(False, "--surveys"),
    concurrency: int = typer.Option(0),
) -> None:
    """The old name of `gridline jobs` (deprecated; goes away in the next release)."""
    deprecated("worker", "jobs")
    jobs(speech=speech, surveys=surveys, concurrency=concurrency)
