"""``gridline worker --speech``: a process that only recognises deferred recordings."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from gridline.commands.common import fail, open_database


def worker(
    speech: bool = typer.Option(False, "--speech", help="take the speech jobs (transcribe_recording)"),
    concurrency: int = typer.Option(0, help="recordings transcribed at once (default GRIDLINE_SPEECH_WORKERS)"),
) -> None:
    """Take background jobs from the shared database. With --speech: transcribe the hotline
    recordings filed while recognition was busy or absent. Run it on any machine that shares
    the database (GRIDLINE_DATABASE_URL) and the data directory (GRIDLINE_DATA_DIR) and has a
    speech model, to add recognition capacity."""
    from core.settings import get_settings
    from gridline.speech import build_speech
    from ivr.transcription import run_speech_worker

    if not speech:
        fail("say which work to take: --speech (the only kind so far)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    engine = open_database()  # settings, rules and schema checked first, one line each if wrong
    pool = build_speech(settings)
    if pool is None:
        fail("no speech model: set GRIDLINE_SPEECH_MODEL or run `gridline models fetch vosk-model-small-cn-0.22`")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_speech_worker(engine, pool, settings.data_dir, concurrency or max(1, settings.speech_workers),
                                    stop)
        finally:
            await pool.close()

    asyncio.run(main())
