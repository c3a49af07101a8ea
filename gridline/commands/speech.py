"""`gridline models list|fetch` and `gridline transcribe FILE...`."""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from core.platform.settings import get_settings
from gridline.commands.terminal import make_console
from speech_models.audio import AudioError
from speech_models.catalogue import (
    CATALOGUE,
    ENV_VAR,
    FetchError,
    ModelNotFound,
    fetch,
    install_archive,
    installed_models,
    resolve_model,
)
from speech_models.transcriber import get_transcriber

models_app = typer.Typer(help="Speech recognition models: what is installed, fetch more.")
out = make_console()
err = make_console(stderr=True)


@models_app.command("list")
def list_models(
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show installed models, the catalogue, and which model Gridline would use."""
    installed = installed_models()
    try:
        active = resolve_model(language=get_settings().speech_language)
        active_path, problem = active.path, None
    except ModelNotFound as e:
        active_path, problem = None, str(e)
    if json:
        out.print_json(
            data={
                "installed": [m.to_dict() for m in installed],
                "active": str(active_path) if active_path else None,
                "problem": problem,
                "catalogue": [vars(e) for e in CATALOGUE.values()],
            }
        )
        return
    table = Table(title="Installed speech models")
    for col in ("", "name", "language", "rate", "source", "path"):
        table.add_column(col)
    for m in installed:
        mark = "*" if active_path and m.path == active_path else ""
        table.add_row(mark, m.name, m.language or "?", str(m.sample_rate), m.source, str(m.path))
    if active_path and all(m.path != active_path for m in installed):
        table.add_row("*", active_path.name, "?", "", ENV_VAR, str(active_path))
    out.print(table if table.row_count else "[yellow]No speech model installed.[/]")
    cat = Table(title="Catalogue (gridline models fetch NAME)")
    for col in ("name", "language", "size", "license", "installed"):
        cat.add_column(col)
    names = {m.name for m in installed}
    for e in CATALOGUE.values():
        cat.add_row(
            e.name, e.language, f"{e.size / 1e6:.0f} MB", e.license, "yes" if e.name in names else ""
        )
    out.print(cat)
    if problem:
        out.print(f"[yellow]{escape(problem)}[/]")
    else:
        out.print(f"In use (* above): {active_path}  [dim](override with {ENV_VAR})[/]")


@models_app.command("fetch")
def fetch_model(
    name: Annotated[str, typer.Argument(help="Catalogue name, e.g. vosk-model-small-cn-0.22.")],
    force: Annotated[bool, typer.Option("--force", help="Reinstall if present.")] = False,
    archive: Annotated[
        Path | None,
        typer.Option("--archive", help="Install from a zip downloaded elsewhere (verified)."),
    ] = None,
) -> None:
    """Download a model, verify its sha256 and unpack it into speech_models/models/."""
    try:
        if archive is not None:
            path = install_archive(name, archive, force=force)
        else:
            entry = CATALOGUE.get(name)
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
            ) as progress:
                task = progress.add_task(name, total=entry.size if entry else None)
                path = fetch(
                    name,
                    force=force,
                    progress=lambda done, total: progress.update(task, completed=done, total=total),
                )
    except FetchError as e:
        err.print(f"[red]fetch failed:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    out.print(f"[green]installed[/] {name} -> {path}")


def transcribe(
    files: Annotated[list[Path], typer.Argument(help="Audio files: wav, ogg, opus, mp3, m4a ...")],
    json: Annotated[bool, typer.Option("--json", help="One JSON object per file (JSON lines).")] = False,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model directory, catalogue name or package (default: as configured, "
                     "a model of GRIDLINE_SPEECH_LANGUAGE)."),
    ] = None,
    phrases: Annotated[
        list[str] | None,
        typer.Option("--phrase", help="Restrict recognition to these phrases (repeatable)."),
    ] = None,
) -> None:
    """Transcribe audio files locally and print the text with timings and confidence."""
    try:
        transcriber = get_transcriber(model, language=get_settings().speech_language)
        transcriber.warm_up()
    except (ModelNotFound, RuntimeError) as e:
        err.print(f"[red]no speech model:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    failures = 0
    # The bar shares the console the results go to, so it stays below them; with
    # --json it goes to stderr and stdout holds JSON only.
    console = err if json else out
    show_progress = len(files) > 1 and console.is_terminal
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show_progress,
        transient=True,
    ) as progress:
        task = progress.add_task("transcribing", total=len(files))
        for path in files:
            progress.update(task, description=path.name)
            try:
                t = transcriber.transcribe_file(path, phrases or None)
            except (AudioError, ValueError) as e:
                failures += 1
                if json:
                    print(jsonlib.dumps({"file": str(path), "error": str(e)}, ensure_ascii=False))
                else:
                    progress.console.print(f"[red]{escape(str(path))}: {escape(str(e))}[/]")
            else:
                if json:
                    print(jsonlib.dumps({"file": str(path), **t.to_dict()}, ensure_ascii=False))
                else:
                    _print_transcript(progress.console, path, t)
            progress.advance(task)
    sys.stdout.flush()
    if failures:
        raise typer.Exit(1)


def _print_transcript(console: Console, path: Path, t) -> None:
    console.print(
        f"[bold]{escape(str(path))}[/]  {t.duration:.2f} s  confidence {t.confidence:.2f}"
    )
    if not t.segments:
        console.print("  [dim](no speech recognised)[/]")
    for seg in t.segments:
        console.print(
            f"  [cyan]{seg.start:7.2f}–{seg.end:7.2f}[/]  {escape(seg.text)}  "
            f"[dim]({seg.confidence:.2f})[/]"
        )
