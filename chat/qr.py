"""QR codes that open the web chat for one grid: a PNG, and an A4 poster page with the grid's
name for a stairwell notice board or the grid's WeChat group (printed to PDF by its callers,
``gridline qr`` and the console's grid pages, so the chat never loads the PDF engine).

The link is ``<public url>/chat/?g=<grid code>.<signature>`` (``chat.resident_web.Signer``):
the page takes the grid as a hint for routing, never as the place itself; a code that is
not signed by us is ignored.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
from dataclasses import dataclass
from typing import Any

import qrcode
from qrcode.constants import ERROR_CORRECT_M
from sqlalchemy import Engine
from sqlmodel import select

from chat.resident_web import Signer, grid_link
from chat.texts import t
from core.errors import NotFound
from core.places.models import Grid
from core.platform.db import session_scope

# Fonts the poster asks for, in order: what bootstrap installs (WenQuanYi), then others.
CJK_FONTS = '"WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Noto Sans CJK SC", "Source Han Sans SC", sans-serif'


@dataclass
class GridQr:
    code: str
    name: str
    url: str
    png: bytes


def png(url: str, *, box: int = 12) -> bytes:
    """The link as a QR code (error correction M: a poster survives a scuff)."""

    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=box, border=4)
    code.add_data(url)
    code.make(fit=True)
    out = io.BytesIO()
    code.make_image(fill_color="black", back_color="white").save(out, format="PNG")
    return out.getvalue()


def grid_name(engine: Engine, code: str) -> str:
    with session_scope(engine) as session:
        grid = session.exec(select(Grid).where(Grid.code == code)).first()
        if grid is None:
            raise NotFound(f"no grid has code {code!r}", code="grid.not_found", grid=code)
        return grid.name


def for_grid(engine: Engine, signer: Signer, public_url: str, code: str) -> GridQr:
    name = grid_name(engine, code)
    url = grid_link(public_url, signer, code)
    return GridQr(code, name, url, png(url))


def poster_html(qr: GridQr, language: str = "zh") -> str:
    image = base64.b64encode(qr.png).decode()
    e = html.escape
    return f"""<!doctype html><html lang="{'zh-CN' if language == 'zh' else 'en'}"><head><meta charset="utf-8">
<style>
@page {{ size: A4; margin: 18mm; }}
body {{ font-family: {CJK_FONTS}; text-align: center; color: #111; }}
h1 {{ font-size: 34pt; margin: 8mm 0 4mm; }}
h2 {{ font-size: 22pt; font-weight: normal; margin: 0 0 8mm; color: #0b6e4f; }}
img {{ width: 120mm; height: 120mm; }}
p {{ font-size: 15pt; line-height: 1.6; margin: 3mm 0; }}
.url {{ font-family: monospace; font-size: 9pt; color: #555; word-break: break-all; }}
</style></head><body>
<h1>{e(qr.name)}</h1>
<h2>{e(t(language, "qr.headline"))}</h2>
<img src="data:image/png;base64,{image}" alt="QR">
<p>{e(t(language, "qr.how"))}</p>
<p>{e(t(language, "qr.what"))}</p>
<p class="url">{e(qr.url)}</p>
</body></html>"""


class GridQrMaker:
    """What the console's grid pages call (``services.extras["grid_qr"]``): a grid's QR code
    and its poster page, signed with the running web chat's key. The PDF is rendered by the
    caller (the console's, or ``gridline qr``), so serving the chat never loads the PDF engine."""

    def __init__(self, web_chat: Any):  # chat.resident_web.WebChat
        self.web_chat = web_chat

    async def __call__(self, code: str, language: str = "zh") -> tuple[GridQr, str]:
        await self.web_chat.start()  # the signing key, read or made on first use
        services = self.web_chat.services
        name = await services.db.run(grid_name, services.engine, code)
        url = grid_link(services.settings.public_url, self.web_chat.signer, code)
        # Drawing the code is work for a CPU, not for one of the few database threads.
        qr = GridQr(code, name, url, await asyncio.to_thread(png, url))
        return qr, poster_html(qr, language)
