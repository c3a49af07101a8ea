"""`gridline serve` as a real subprocess, for the tests that prove nothing is lost in a
crash: start it, kill it with SIGKILL (never a graceful stop), start it again on the same
data directory, database and port, and read what it printed.

The test process opens the listening socket (port 0: the kernel picks a free port, so no
port is chosen, closed and hoped to be still free) and hands it to each child with
``gridline serve --listen-fd``, as a process supervisor does. The socket outlives a killed
child: the next child serves the same port, and connections made in between wait in the
socket's backlog, as they would in front of a restarting service::

    with ServeProcess(tmp_path, database_url(engine)) as server:   # started, /readyz ready
        ...
        server.kill()          # SIGKILL
        server.start()         # same data, same port
    assert "loaded the demo district" in server.output
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy import Engine

from tests.support.child import Child
from tests.support.waiting import wait_until

__all__ = ["ServeProcess", "database_url", "start_serve"]

ROOT = Path(__file__).resolve().parents[2]


def database_url(engine: Engine) -> str:
    """The URL a subprocess needs to reach the test's database (password included)."""
    return engine.url.render_as_string(hide_password=False)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


class ServeProcess(Child):
    """One `gridline serve` over ``data_dir`` and ``database_url``; ``env`` adds or
    overrides settings (``GRIDLINE_*``); ``args`` go to ``serve``. Everything every child
    printed is in ``output`` (and ``data_dir/serve.log``)."""

    def __init__(self, data_dir: Path | str, database_url: str, *, env: Mapping[str, str] | None = None,
                 args: Sequence[str] = ()):
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.extra_env = dict(env or {})
        self.args = tuple(args)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "serve.log"
        self.starts = 0
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def log(self) -> str:
        return self.output

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}
        env.update({
            "GRIDLINE_DATA_DIR": str(self.data_dir),
            "GRIDLINE_DATABASE_URL": self.database_url,
            "GRIDLINE_PUBLIC_URL": self.url,
            "GRIDLINE_TELEGRAM_TOKEN": "",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in proc.stdout:
                self._lines.append(line)
                log.write(line)
                log.flush()

    def start(self, timeout: float = 120.0, *, wait_ready: bool = True) -> ServeProcess:
        """Start a child on the socket and wait until ``/readyz`` answers ready (a child
        that dies first fails the test with its output)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self._lines.append(f"===== start {self.starts} =====\n")
        fd = self.listener.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gridline.cli", "serve", "--listen-fd", str(fd), *self.args],
            cwd=ROOT, env=self._env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL, pass_fds=(fd,))
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if wait_ready:
            proc = self.proc

            def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"gridline serve exited with {proc.returncode}:\n{self.output[-4000:]}")
                return _ready(self.url)

            try:
                wait_until(up, timeout=timeout, message="gridline serve /readyz")
            except BaseException:
                self.kill()
                raise
        return self

    def close(self) -> None:
        """Stop the child and give the port back."""
        self.stop()
        self.listener.close()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def start_serve(env: Mapping[str, str] | None = None, args: Sequence[str] = (), *,
                timeout: float = 120) -> ServeProcess:
    """A started server configured only by ``env`` (``GRIDLINE_DATA_DIR`` and
    ``GRIDLINE_DATABASE_URL`` taken from it); it answers ``/readyz`` when this returns."""
    env = dict(env or {})
    data_dir = env.pop("GRIDLINE_DATA_DIR")
    url = env.pop("GRIDLINE_DATABASE_URL", "")
    return ServeProcess(data_dir, url, env=env, args=args).start(timeout)
