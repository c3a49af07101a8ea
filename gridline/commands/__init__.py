"""Command groups that belong to one part of Gridline each (speech, hotline simulator, staff chats, reports, the speech worker)."""

from __future__ import annotations

import typer


def register_all(app: typer.Typer) -> None:
    from gridline.commands import apikeys, hotline, privacy, reports, speech, users, worker, workers

    app.add_typer(speech.models_app, name="models")
    app.command("transcribe")(speech.transcribe)
    app.command("simulate-call")(hotline.simulate_call)
    app.add_typer(users.users_app, name="users")
    app.add_typer(workers.workers_app, name="workers")
    app.add_typer(reports.report_app, name="report")
    app.add_typer(apikeys.apikeys_app, name="apikeys")
    app.command("shred")(privacy.shred)
    app.command("worker")(worker.worker)
