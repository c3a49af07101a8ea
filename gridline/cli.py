"""The ``gridline`` command. Each command lives in a module of ``gridline/commands`` that imports
what it runs at its top; this group loads that module only when its command runs or its own
help is asked for, so `gridline --help` lists every command from the table below without
importing any of them (together they take several times longer to import than one)."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

import typer
import typer.core
import typer.main
from rich.console import Console
from rich.markup import escape


@dataclass(frozen=True)
class Entry:
    """A command: where it lives (``gridline.commands.<module>``, and its attribute: a Typer
    group or a command function) and the one line `gridline --help` shows for it."""

    module: str
    attribute: str
    summary: str
    hidden: bool = False


# In the order `gridline --help` lists them.
COMMANDS: dict[str, Entry] = {
    "serve": Entry("serve", "serve", "Upgrade the database, load the demo district if it is empty, and serve "
                   "everything."),
    "transcribe": Entry("speech", "transcribe", "Transcribe audio files locally and print the text with timings "
                        "and confidence."),
    "simulate-call": Entry("hotline", "simulate_call", "Simulate a caller: signed webhooks, TwiML, audio streamed "
                           "as 20 ms µ-law frames."),
    "shred": Entry("privacy", "shred", "Remove the personal data of cases closed long ago; keep their anonymous "
                   "figures."),
    "jobs": Entry("jobs", "jobs", "Take background jobs from the shared database: --speech, --surveys."),
    "worker": Entry("jobs", "worker", "The old name of `jobs`.", hidden=True),  # for one release
    "simulate-survey": Entry("survey", "simulate_survey", "Play Twilio and the resident for the follow-up calls "
                             "(回访) due now, against a running `gridline serve`."),
    "db": Entry("db", "db_app", "Database schema."),
    "demo": Entry("demo", "demo_app", "The fictional demo district."),
    "grids": Entry("grids", "grids_app", "Grids, workers and households."),
    "cases": Entry("cases", "cases_app", "Look at cases."),
    "models": Entry("speech", "models_app", "Speech recognition models: what is installed, fetch more."),
    "users": Entry("users", "users_app", "Console accounts."),
    "workers": Entry("workers", "workers_app", "Workers' and departments' chats with the bot."),
    "report": Entry("reports", "report_app", "Reports: weekly, monthly and quarterly reports, worker scores."),
    "apikeys": Entry("apikeys", "apikeys_app", "Keys for other systems filing requests through Open311 "
                     "(/open311/v2/)."),
    "categories": Entry("categories", "categories_app", "Departments and petition categories (categories.toml)."),
    "media": Entry("media", "media_app", "Files of cases in the media store (GRIDLINE_MEDIA_URL)."),
    "residents": Entry("survey", "residents_app", "Residents' contact wishes."),
    "qr": Entry("qr", "qr", "A grid's QR code for the residents' web chat: a PNG and an A4 poster PDF."),
}


def command_module(name: str) -> Any:
    """``gridline.commands.<name>``, imported on first use: the one place the CLI imports lazily."""
    return importlib.import_module(f"gridline.commands.{name}")  # lazy: `gridline --help` imports none


def load_command(name: str, entry: Entry) -> typer.core.TyperCommand | typer.core.TyperGroup:
    """The command ``name``, built by Typer from its module's group or function."""
    target = getattr(command_module(entry.module), entry.attribute)
    if isinstance(target, typer.Typer):
        return typer.main.get_group(target)
    single = typer.Typer(add_completion=False)
    single.command(name, hidden=entry.hidden)(target)
    return typer.main.get_command(single)


class LazyGroup(typer.core.TyperGroup):
    """Commands from :data:`COMMANDS`, each module imported when its command is resolved;
    a known problem of configuration, database or files ends in one ``error:`` line and exit
    status 1 instead of a traceback (``gridline.commands.common.explain``)."""

    _listing = False  # while the group's own help is written: summaries only, nothing imported

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> typer.core.TyperCommand | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        if self._listing:
            return typer.core.TyperCommand(cmd_name, help=entry.summary, hidden=entry.hidden)
        return load_command(cmd_name, entry)

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as error:  # "No such command": suggest from the table
            shown = [name for name, entry in COMMANDS.items() if not entry.hidden]
            close = difflib.get_close_matches(args[0], shown) if args else []
            if close and hasattr(error, "message"):
                error.message = f"{error.message.rstrip('.')}. Did you mean {', '.join(map(repr, close))}?"
            raise

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # usage errors and exits: Typer reports them
        except Exception as error:  # explain() picks what it knows; the rest goes on up
            message = command_module("common").explain(error)
            if message is None:
                raise
            Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(help="Gridline: grid-based community governance (网格化管理) hotline and chat petitions.",
                  no_args_is_help=True, add_completion=False, cls=LazyGroup,
                  pretty_exceptions_show_locals=False)


@app.callback()
def _root() -> None:
    """Every command is in :data:`COMMANDS`; the group needs a callback to be a group."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
