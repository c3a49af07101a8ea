"""`gridline serve` in a real subprocess, on a port the operating system chose.

The server is started with ``GRIDLINE_PORT=0`` and the test reads the bound port back
from aiohttp's "Running on http://host:port" line, so no port is picked, closed and
hoped to be still free (another process could take it in between)::

    server = start_serve({"GRIDLINE_DATA_DIR": str(tmp_path)})
    try:
        urllib.request.urlopen(server.url + "/readyz")
    finally:
        server.stop()                 # or server.kill(): SIGKILL, nothing graceful
    assert "loaded the demo district" in server.output
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.waiting import wait_until

__all__ = ["ServeProcess", "start_serve"]

ROOT = Path(__file__).resolve().parents[2]
_RUNNING = re.compile(r"Running on (http://[^\s/]+:(\d+))")


class ServeProcess:
    """A running ``gridline serve``; its output is collected as it comes."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.url = ""
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)
            if not self.url and (m := _RUNNING.search(line)):
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()  # the process ended: stop waiting for the banner

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_listening(self, timeout: float) -> str:
        wait_until(self._ready, timeout=timeout, message="gridline serve to listen")
        if not self.url:
            raise AssertionError(f"gridline serve exited before listening:\n{self.output}")
        if self.url.endswith(":0"):
            raise AssertionError("aiohttp printed port 0: it is too old to report the bound port")
        return self.url

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait: a graceful stop."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 20) -> int:
        """SIGKILL: what a crash looks like, nothing runs on the way out."""
        return self._end(signal.SIGKILL, timeout)

    def _end(self, sig: signal.Signals, timeout: float) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code


def start_serve(
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    *,
    timeout: float = 60,
) -> ServeProcess:
    """Start ``gridline serve`` with ``env`` over this process's environment; returns once
    it listens (``.url``). ``GRIDLINE_PORT`` is 0 unless ``env`` sets it."""
    full_env = {**os.environ, "GRIDLINE_PORT": "0", **(env or {}), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridline.cli", "serve", *args], cwd=ROOT, env=full_env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    server = ServeProcess(proc)
    try:
        server.wait_listening(timeout)
    except BaseException:
        server.kill()
        raise
    return server
