"""``gridline serve --processes N``: N processes serving one port, so one machine uses all
its cores.

Pre-fork: this process (the supervisor) opens the listening socket, or takes the one a
process supervisor handed it (``--listen-fd``), and starts N ``gridline serve`` processes
that inherit it; the kernel gives each new connection to one of them. The supervisor
serves nothing itself. It forwards SIGTERM/SIGINT/SIGHUP to the processes, and starts again
a process that dies; a process that keeps dying (``MAX_RESTARTS`` in ``RESTART_WINDOW_S``)
stops the whole service with one line saying so, rather than looping.

Everything that runs in the background is safe in every process, as it is in every
instance: jobs are claimed with ``FOR UPDATE SKIP LOCKED`` (a conditional UPDATE on
SQLite), periodic work is queued under a dedupe key, a call is filed once (its row is
locked), and each process holds a lease of its own (``core.platform.instances``). ``/metrics``
adds up the processes through ``PROMETHEUS_MULTIPROC_DIR``, set here to a fresh empty
folder before the processes start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field

from gridline.metrics import process_exited

log = logging.getLogger("gridline.processes")

MAX_RESTARTS = 5  # a process dying this often ...
RESTART_WINDOW_S = 60.0  # ... within this many seconds stops the service
STOP_TIMEOUT_S = 30.0  # processes finish their requests and calls this long after SIGTERM
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def listening_socket(host: str, port: int, backlog: int = 128) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


@dataclass
class Supervisor:
    processes: int
    sock: socket.socket
    argv: list[str] = field(default_factory=list)  # extra ``serve`` options for each process
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)  # process index -> process
    deaths: deque = field(default_factory=deque)
    stopping: bool = False
    metrics_dir: str | None = None

    def _command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "gridline.cli", "serve", "--listen-fd", str(self.sock.fileno()),
                "--process-index", str(index), *self.argv]

    def _start(self, index: int) -> None:
        # A session of its own: a Ctrl-C at the terminal reaches the supervisor, which passes
        # it on once (a second SIGINT would cut a process's graceful stop short).
        proc = subprocess.Popen(self._command(index), pass_fds=(self.sock.fileno(),), stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs[index] = proc
        log.info("process %d started (pid %d)", index, proc.pid)

    def _signal(self, signum: int, _frame=None) -> None:  # noqa: ANN001
        if not self.stopping:
            log.info("%s: stopping %d process(es)", signal.Signals(signum).name, len(self.procs))
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    def _prepare_metrics_dir(self) -> None:
        # A fresh empty folder per start: prometheus_client's multiprocess files must not
        # outlive the processes that wrote them.
        parent = os.environ.get(METRICS_DIR_ENV) or None
        if parent is not None:
            os.makedirs(parent, exist_ok=True)
        self.metrics_dir = tempfile.mkdtemp(prefix="gridline-metrics-", dir=parent)
        os.environ[METRICS_DIR_ENV] = self.metrics_dir

    def run(self) -> int:
        """Serve until told to stop; the exit status (0: stopped as asked)."""
        self._prepare_metrics_dir()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._signal)
        try:
            for index in range(self.processes):
                self._start(index)
            status = self._watch()
        finally:
            self._stop_all()
            if self.metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return status

    def _watch(self) -> int:
        while not self.stopping:
            time.sleep(0.2)
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None or self.stopping:
                    continue

                process_exited(proc.pid, self.metrics_dir)  # its live gauges stop counting in /metrics
                now = time.monotonic()
                self.deaths.append(now)
                while self.deaths and now - self.deaths[0] > RESTART_WINDOW_S:
                    self.deaths.popleft()
                if len(self.deaths) > MAX_RESTARTS:
                    log.error("process %d (pid %d) exited with %s; processes died %d times in %.0f s: stopping "
                              "the service (see the processes' errors above)", index, proc.pid, code,
                              len(self.deaths), RESTART_WINDOW_S)
                    self.stopping = True
                    return 1
                log.warning("process %d (pid %d) exited with %s; starting it again", index, proc.pid, code)
                self._start(index)
        return 0

    def _stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for index, proc in self.procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("process %d (pid %d) did not stop within %.0f s; killed", index, proc.pid, STOP_TIMEOUT_S)
                proc.kill()
                proc.wait()


def stop_with_supervisor(app) -> None:  # noqa: ANN001 (aiohttp.web.Application)
    """In a served process: stop when the supervisor is gone (killed, so it could not say so),
    so that no process is left serving the port on its own."""
    supervisor = os.getppid()

    async def watch() -> None:
        while os.getppid() == supervisor:
            await asyncio.sleep(1.0)
        log.error("the supervisor (pid %d) is gone: this process stops", supervisor)
        os.kill(os.getpid(), signal.SIGTERM)

    async def lifecycle(_app):  # noqa: ANN001, ANN202
        task = asyncio.get_running_loop().create_task(watch(), name="gridline-supervisor-watch")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(lifecycle)
