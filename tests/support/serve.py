"""`gridline serve` as a real subprocess, for the tests that prove nothing is lost in a
crash: start it, kill it with SIGKILL (never a graceful stop), start it again on the
same data directory, database and port, and read its log."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parents[2]


def database_url(engine: Engine) -> str:
    """The URL a subprocess needs to reach the test's database (password included)."""
    return engine.url.render_as_string(hide_password=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """One `gridline serve` over ``data_dir`` and ``database_url``; ``env`` adds settings
    (``GRIDLINE_*``). Each start appends to ``data_dir/serve.log``."""

    def __init__(self, data_dir: Path, database_url: str, *, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()):
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.extra_env = dict(env or {})
        self.args = args
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "serve.log"
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}
        env.update({
            "GRIDLINE_DATA_DIR": str(self.data_dir),
            "GRIDLINE_DATABASE_URL": self.database_url,
            "GRIDLINE_PORT": str(self.port),
            "GRIDLINE_HOST": "127.0.0.1",
            "GRIDLINE_PUBLIC_URL": self.url,
            "GRIDLINE_TELEGRAM_TOKEN": "",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120.0) -> None:
        """Start and wait until ``/readyz`` answers ready (or the process dies: its log is raised)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 (the child owns it)
        log.write(f"\n===== start {self.starts} =====\n")
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gridline.cli", "serve", "--port", str(self.port), *self.args],
            cwd=ROOT, env=self._env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gridline serve exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.kill()
        raise TimeoutError(f"gridline serve not ready after {timeout}s:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush, close or say goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """End of a test: SIGTERM, then SIGKILL if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
