"""`gridline jobs` as a real subprocess (``--surveys``, ``--speech``), for the tests that
prove two job processes never do the same job twice and that one killed with SIGKILL (never
a graceful stop) loses nothing and repeats nothing::

    taker = JobsProcess(tmp_path / "p1", {"GRIDLINE_DATABASE_URL": url, ...}, "--surveys").start()
    ...
    taker.kill()              # SIGKILL
    print(taker.output)
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from tests.support.child import Child

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["JobsProcess"]


class JobsProcess(Child):
    def __init__(self, data_dir: Path | str, env: Mapping[str, str], *args: str, command: str = "jobs"):
        self.data_dir = Path(data_dir)
        self.command = command  # "worker": the old name, still accepted for one release
        self.env = dict(env)
        self.args = args
        self.proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def start(self) -> JobsProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}
        env.update({"GRIDLINE_DATA_DIR": str(self.data_dir), "GRIDLINE_TELEGRAM_TOKEN": "", "PYTHONUNBUFFERED": "1"})
        env.update(self.env)
        self.proc = subprocess.Popen([sys.executable, "-m", "gridline.cli", self.command, *self.args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.append(line)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

