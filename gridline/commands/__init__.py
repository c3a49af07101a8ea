"""Command groups that belong to one part of Gridline each (speech, hotline simulator, staff chats, reports,
the background job processes, the follow-up call)."""

from __future__ import annotations

import typer

# Lazy on purpose: each command imports in its body what it runs, so `gridline --help` and a
# command load only their own modules (all of them take several times longer to import).


def register_all(app: typer.Typer) -> None:
    from gridline.commands import (
        apikeys,
        categories,
        hotline,
        jobs,
        media,
        privacy,
        qr,
        reports,
        speech,
        survey,
        users,
        workers,
    )

    app.add_typer(speech.models_app, name="models")
    app.command("transcribe")(speech.transcribe)
    app.command("simulate-call")(hotline.simulate_call)
    app.add_typer(users.users_app, name="users")
    app.add_typer(workers.workers_app, name="workers")
    app.add_typer(reports.report_app, name="report")
    app.add_typer(apikeys.apikeys_app, name="apikeys")
    app.add_typer(categories.categories_app, name="categories")
    app.command("shred")(privacy.shred)
    app.command("qr")(qr.qr)
    app.add_typer(media.media_app, name="media")
    app.command("jobs")(jobs.jobs)
    app.command("worker", hidden=True)(jobs.worker)  # the old name, for one release
    app.command("simulate-survey")(survey.simulate_survey)
    app.add_typer(survey.residents_app, name="residents")
    demo = next(group.typer_instance for group in app.registered_groups if group.name == "demo")
    demo.command("handle")(survey.demo_handle)
