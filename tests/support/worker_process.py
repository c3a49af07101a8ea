"""`gridline worker` as a real subprocess (``--surveys``, ``--speech``), for the tests that
prove two workers never do the same job twice and that a worker killed with SIGKILL (never
a graceful stop) loses nothing and repeats nothing::

    worker = WorkerProcess(tmp_path / "w1", {"GRIDLINE_DATABASE_URL": url, ...}, "--surveys").start()
    ...
    worker.kill()              # SIGKILL
    print(worker.output)
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

__all__ = ["WorkerProcess"]


class WorkerProcess(Child):
    def __init__(self, data_dir: Path | str, env: Mapping[str, str], *args: str):
        self.data_dir = Path(data_dir)
        self.env = dict(env)
        self.args = args
        self.proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}
        env.update({"GRIDLINE_DATA_DIR": str(self.data_dir), "GRIDLINE_TELEGRAM_TOKEN": "", "PYTHONUNBUFFERED": "1"})
        env.update(self.env)
        self.proc = subprocess.Popen([sys.executable, "-m", "gridline.cli", "worker", *self.args], cwd=ROOT, env=env,
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

