"""``gridline simulate-call``: play Twilio's part of a hotline call against a running server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from core.platform.settings import get_settings
from gridline.commands.terminal import make_console
from ivr.simulator import CallScript, Simulator, Turn, audio_frames
from speech_models.audio import AudioError

console = make_console()
err_console = make_console(stderr=True)


def simulate_call(
    from_number: str = typer.Option("+8613800000000", "--from", help="caller's number"),
    to_number: str = typer.Option("", "--to", help="the hotline number (default GRIDLINE_HOTLINE_NUMBER)"),
    digits: list[str] = typer.Option(
        [], "--digits", help="keys for each keypad question in order, e.g. --digits 1 --digits 1; "
        "'-' = no key; a case number ends with #"),
    say: list[Path] = typer.Option([], "--say", exists=True, dir_okay=False,
                                   help="audio file spoken at each recording (petition, then address)"),
    end: str = typer.Option("#", help="how each recording ends: '#', 'silence', 'hangup' or 'drop'"),
    confirm: bool = typer.Option(True, help="answer 1 to read-backs once --digits ran out"),
    server: str = typer.Option("", help="where the server listens (default http://GRIDLINE_HOST:GRIDLINE_PORT)"),
    public_url: str = typer.Option("", help="the URL Twilio would use (default GRIDLINE_PUBLIC_URL)"),
    speed: float = typer.Option(1.0, help="audio pace: 1 = real time, 0 = as fast as possible"),
    operator_answers: bool = typer.Option(False, help="the operator picks up a <Dial>"),
) -> None:
    """Simulate a caller: signed webhooks, TwiML, audio streamed as 20 ms µ-law frames."""
    if end not in ("#", "silence", "hangup", "drop"):
        raise typer.BadParameter("--end must be '#', 'silence', 'hangup' or 'drop'")
    spoken: list[bytes] = []
    for path in say:  # decoded before the call: a file that is not audio stops nothing half-way
        try:
            spoken.append(b"".join(audio_frames(path)))
        except AudioError as exc:
            err_console.print(f"error: --say {exc}", markup=False,
                              highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    settings = get_settings()
    server = server or f"http://{settings.host}:{settings.port}"
    sim = Simulator(server, settings.twilio_auth_token, public_url=public_url or settings.public_url,
                    speed=speed, pause_scale=min(speed, 1.0) if speed else 0.0,
                    echo=lambda text: console.print(f"[cyan]🔈[/cyan] {text}"))
    script = CallScript(
        from_number=from_number,
        to_number=to_number or settings.hotline_number or "+8657100000000",
        digits=[None if d in ("-", "") else d for d in digits],
        turns=[Turn(mulaw, end=end) for mulaw in spoken],
        operator_answers=operator_answers,
        default_digit="1" if confirm else None,
    )
    try:
        result = asyncio.run(sim.call(script))
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot reach {server}: {exc}. Is `gridline serve` running?")
        raise typer.Exit(1) from None
    except RuntimeError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    latencies = sorted(result.webhook_latencies)
    console.print(f"call {result.call_sid}: {len(latencies)} webhooks, "
                  f"slowest {latencies[-1] * 1000:.0f} ms" if latencies else f"call {result.call_sid}")
    if result.case_number:
        console.print(f"case number: [bold]{result.case_number}[/bold]")
