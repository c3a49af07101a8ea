"""``gridline qr --grid CODE``: the web chat's QR code for a grid, as a PNG and an A4 poster."""

from __future__ import annotations

from pathlib import Path

import typer
from weasyprint import HTML

from chat import qr as qr_codes
from chat import web_store
from chat.resident_web import Signer
from core.errors import DomainError
from core.platform.settings import get_settings
from gridline.commands.common import console, fail, open_database


def qr(
    grid: str = typer.Option(..., "--grid", help="the grid's code (a community or a micro grid)"),
    out: Path = typer.Option(Path("."), "--out", help="folder to write <CODE>-qr.png and <CODE>-poster.pdf in"),
    lang: str = typer.Option("zh", "--lang", help="the poster's language: zh or en"),
) -> None:
    """Write the QR code that opens the web chat with this grid as a hint, and its A4 poster."""

    if lang not in ("zh", "en"):
        fail("--lang must be zh or en")
    settings = get_settings()
    engine = open_database()
    secret = settings.web_chat_secret.encode() if settings.web_chat_secret else web_store.signing_secret(engine)
    try:
        code = qr_codes.for_grid(engine, Signer(secret), settings.public_url, grid)
    except DomainError as exc:
        fail(exc.message)
    out.mkdir(parents=True, exist_ok=True)
    png_path, pdf_path = out / f"{code.code}-qr.png", out / f"{code.code}-poster.pdf"
    png_path.write_bytes(code.png)
    pdf_path.write_bytes(HTML(string=qr_codes.poster_html(code, lang)).write_pdf())
    console.print(f"{code.name} ({code.code}): {code.url}", soft_wrap=True, highlight=False)
    console.print(f"wrote {png_path} and {pdf_path}", highlight=False)
