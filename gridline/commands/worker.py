"""``gridline worker --speech``: a process that only recognises deferred recordings."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer
from rich.console import Console

console = Console(stderr=True)


def worker(
    speech: bool = typer.Option(False, "--speech", help="take the speech jobs (transcribe_recording)"),
    concurrency: int = typer.Option(0, help="recordings transcribed at once (default GRIDLINE_SPEECH_WORKERS)"),
) -> None:
    """Take background jobs from the shared database. With --speech: transcribe the hotline
    recordings filed while recognition was busy or absent. Run it on any machine that shares
    the database (GRIDLINE_DATABASE_URL) and the data directory (GRIDLINE_DATA_DIR) and has a
    speech model, to add recognition capacity."""
    from core.db import make_engine
    from core.settings import get_settings
    from gridline.speech import build_speech
    from ivr.transcription import run_speech_worker

    if not speech:
        console.print("[red]error:[/red] say which work to take: --speech (the only kind so far)")
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    pool = build_speech(settings)
    if pool is None:
        console.print("[red]error:[/red] no speech model: set GRIDLINE_SPEECH_MODEL or run "
                      "`gridline models fetch vosk-model-small-cn-0.22`")
        raise typer.Exit(2)
    engine = make_engine(settings.effective_database_url)

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
