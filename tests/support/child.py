"""Ending a child process the way the tests need: SIGKILL (a crash: nothing runs on the way
out) or SIGTERM with SIGKILL after a timeout. Shared by ``ServeProcess`` and ``JobsProcess``."""

from __future__ import annotations

import signal
import subprocess
import threading


class Child:
    proc: subprocess.Popen | None = None
    _reader: threading.Thread | None = None

    def _end(self, sig: signal.Signals, timeout: float) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return code

    def kill(self, timeout: float = 30) -> int | None:
        """SIGKILL: what a crash looks like; nothing runs on the way out."""
        return self._end(signal.SIGKILL, timeout)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL if it does not go within ``timeout``."""
        return self._end(signal.SIGTERM, timeout)
