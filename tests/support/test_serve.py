"""The crash-test harness itself: a killed server is really dead, and starts again on the
same data."""

from __future__ import annotations

import urllib.request

import pytest

from tests.support.serve import ServeProcess, database_url


def test_kill_is_abrupt_and_restart_serves_the_same_data(engine, tmp_path):
    server = ServeProcess(tmp_path / "data", database_url(engine))
    with server:
        server.kill()
        assert server.proc.returncode == -9
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{server.url}/healthz", timeout=2)
        server.start()
        with urllib.request.urlopen(f"{server.url}/readyz", timeout=5) as resp:
            assert resp.status == 200
    assert server.log().count("===== start") == 2
    assert "loaded the demo district" in server.log()  # once: the second start found it loaded
    assert server.log().count("loaded the demo district") == 1
