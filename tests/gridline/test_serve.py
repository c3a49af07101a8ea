"""The quick start's service: `gridline serve` on an empty SQLite database comes up with
the demo district loaded and answers its health checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_on_empty_database_loads_demo_and_is_ready(tmp_path):
    port = free_port()
    env = {**os.environ, "GRIDLINE_DATA_DIR": str(tmp_path), "GRIDLINE_DATABASE_URL": "",
           "GRIDLINE_TELEGRAM_TOKEN": ""}
    proc = subprocess.Popen([sys.executable, "-m", "gridline.cli", "serve", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                    body = resp.read().decode()
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.3)
        assert body is not None and '"ready"' in body
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "loaded the demo district" in out
    assert (tmp_path / "gridline.sqlite3").exists()


def test_demo_load_and_grid_import_errors_through_the_cli(tmp_path, monkeypatch):
    from core.settings import get_settings
    from gridline.cli import app

    monkeypatch.setenv("GRIDLINE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        loaded = runner.invoke(app, ["demo", "load"])
        assert loaded.exit_code == 0 and "micro grids: 54" in " ".join(loaded.output.split())
        again = runner.invoke(app, ["demo", "load"])
        assert again.exit_code == 1 and "already" in again.output
        exported = runner.invoke(app, ["grids", "export", str(tmp_path / "grids.geojson")])
        assert exported.exit_code == 0 and "wrote 73 grids" in exported.output
        bad = ROOT / "tests" / "core" / "fixtures" / "grids_bad.geojson"
        refused = runner.invoke(app, ["grids", "import", str(bad)])
        assert refused.exit_code == 1 and "nothing imported" in refused.output
        assert ":" in refused.output.split("nothing imported", 1)[1]  # line-numbered problems follow
    finally:
        get_settings.cache_clear()
