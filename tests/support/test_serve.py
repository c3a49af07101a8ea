"""The crash-test harness itself: a killed server is really dead, the next one serves the
same data on the same port."""

from __future__ import annotations

import urllib.request

import pytest

from tests.support.serve import ServeProcess, database_url


def test_kill_is_abrupt_and_restart_serves_the_same_data_on_the_same_port(engine, tmp_path):
    with ServeProcess(tmp_path / "data", database_url(engine)) as server:
        port = server.port
        assert server.kill() == -9
        with pytest.raises(OSError):  # nobody answers: the connection waits in the backlog
            urllib.request.urlopen(f"{server.url}/healthz", timeout=1)
        server.start()
        assert server.port == port
        with urllib.request.urlopen(f"{server.url}/readyz", timeout=5) as resp:
            assert resp.status == 200
    assert server.output.count("===== start") == 2
    assert server.output.count("loaded the demo district") == 1  # the second start found it loaded
    assert "loaded the demo district" in server.log_path.read_text("utf-8")
