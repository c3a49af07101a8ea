"""Command groups that belong to one part of Gridline each (speech, hotline simulator, workers)."""

from __future__ import annotations

import typer


def register_all(app: typer.Typer) -> None:
    from gridline.commands import hotline, speech, worker

    app.add_typer(speech.models_app, name="models")
    app.command("transcribe")(speech.transcribe)
    app.command("simulate-call")(hotline.simulate_call)
    app.command("worker")(worker.worker)
