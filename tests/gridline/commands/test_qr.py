"""`gridline qr --grid CODE` against a demo-loaded database: a PNG and an A4 poster whose
link opens the web chat with the grid's signed code (Typer's runner in-process)."""

from __future__ import annotations

import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image
from sqlmodel import select
from typer.testing import CliRunner

from chat.resident_web import Signer
from chat.web_store import signing_secret
from core.places.models import Grid, GridLevel
from core.platform.db import session_scope
from core.platform.settings import get_settings
from core.reference.demo import load_demo
from gridline.cli import app
from tests.support.serve import database_url

runner = CliRunner()


@pytest.fixture
def demo_db(engine, monkeypatch, tmp_path):
    monkeypatch.setenv("GRIDLINE_DATABASE_URL", database_url(engine))
    monkeypatch.setenv("GRIDLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GRIDLINE_PUBLIC_URL", "https://hotline.example.org")
    get_settings.cache_clear()
    with session_scope(engine) as session:
        load_demo(session)
    yield engine
    get_settings.cache_clear()


def test_qr_png_and_poster_for_a_grid(demo_db, tmp_path):
    with session_scope(demo_db) as session:
        grid = session.exec(select(Grid).where(Grid.level == GridLevel.community).order_by(Grid.code)).first()
        code, name = grid.code, grid.name
    result = runner.invoke(app, ["qr", "--grid", code, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    png, pdf = tmp_path / "out" / f"{code}-qr.png", tmp_path / "out" / f"{code}-poster.pdf"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] == image.size[1] >= 300
    assert pdf.read_bytes().startswith(b"%PDF")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert name in text and "扫码反映问题" in text  # the CJK font was found and embedded
    url = next(w for w in text.split() if w.startswith("https://hotline.example.org/chat/?g="))
    signed = parse_qs(urlsplit(url).query)["g"][0]
    assert Signer(signing_secret(demo_db)).grid_of(signed) == code  # signed with the server's key
    assert url in result.output


def test_qr_for_an_unknown_grid_says_so(demo_db, tmp_path):
    result = runner.invoke(app, ["qr", "--grid", "NOPE", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "NOPE" in result.output
    assert not (tmp_path / "out").exists()
