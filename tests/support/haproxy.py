"""HAProxy (Debian's package) in front of servers started by a test, with the shipped
``deploy/haproxy.cfg``: the file an operator copies is the file the test runs. Only the
addresses change: the frontend listens on a loopback socket that this process opened
(port 0: the kernel picks a free port; HAProxy inherits it as ``fd@N``, so no port is chosen,
closed and hoped to be still free), the backend's servers are the given ones, and an admin
socket in the work folder lets the test read what the health checks decided::

    with HaproxyProcess([a.port, b.port], tmp_path / "haproxy") as balancer:
        balancer.wait_servers_up()
        requests go to balancer.url ...
    assert "gridline1" in balancer.output     # one log line per request, with its server

HAProxy runs in the foreground (``-db``), logs to stdout (the shipped config's
``log stdout``), and is stopped with SIGTERM (SIGKILL after a timeout)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from tests.support.child import Child
from tests.support.waiting import wait_until

__all__ = ["DEPLOY_CONFIG", "HaproxyProcess", "haproxy_binary", "render_config"]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = ROOT / "deploy" / "haproxy.cfg"
BACKEND = "gridline"


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)


def render_config(template: str, *, listen_fd: int, servers: Sequence[tuple[str, int]], admin_socket: Path) -> str:
    """The shipped config with the test's addresses: ``bind`` lines become the inherited
    socket, the ``server`` lines of ``backend gridline`` become ``servers`` (named
    gridline1, gridline2, … in order), and the global section gains an admin socket."""
    out: list[str] = []
    section = ""
    placed = False
    for line in template.splitlines():
        stripped = line.strip()
        head = re.match(r"^(global|defaults|frontend|backend|listen)\b\s*(\S*)", line)
        if head:
            section = f"{head.group(1)} {head.group(2)}".strip()
            out.append(line)
            if head.group(1) == "global":
                out.append(f"    stats socket {admin_socket} mode 600 level admin")
            continue
        if section.startswith("frontend") and stripped.startswith("bind "):
            out.append(f"    bind fd@{listen_fd}")
            continue
        if section == f"backend {BACKEND}" and stripped.startswith("server "):
            if not placed:
                out.extend(f"    server {BACKEND}{i} {host}:{port}" for i, (host, port) in enumerate(servers, 1))
                placed = True
            continue
        out.append(line)
    if not placed:
        raise ValueError(f"no server lines in backend {BACKEND} of the template")
    return "\n".join(out) + "\n"


class HaproxyProcess(Child):
    """``haproxy -db`` over ``servers`` (ports on 127.0.0.1, or (host, port) pairs)."""

    def __init__(self, servers: Sequence[int | tuple[str, int]], workdir: Path | str, *,
                 template: Path = DEPLOY_CONFIG):
        binary = haproxy_binary()
        if binary is None:
            import pytest

            pytest.skip("haproxy is not installed (scripts/bootstrap.sh dev installs it)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.servers = [("127.0.0.1", s) if isinstance(s, int) else (s[0], int(s[1])) for s in servers]
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        # A unix socket's path may hold 97 bytes at most (haproxy refuses a longer one, and a
        # pytest work folder is often longer): the socket lives in a short folder of its own.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="hap-", dir="/tmp"))
        self.admin_socket = self._socket_dir / "admin.sock"
        self.config_path = self.workdir / "haproxy.cfg"
        self.config_path.write_text(render_config(template.read_text(), listen_fd=self.listener.fileno(),
                                                  servers=self.servers, admin_socket=self.admin_socket))
        self.proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        with open(self.workdir / "haproxy.log", "a", encoding="utf-8") as log:
            for line in proc.stdout:
                self._lines.append(line)
                log.write(line)
                log.flush()

    def start(self, timeout: float = 30) -> HaproxyProcess:
        check = subprocess.run([self.binary, "-c", "-f", str(self.config_path)], capture_output=True, text=True,
                               pass_fds=(self.listener.fileno(),))
        assert check.returncode == 0, f"haproxy refused the config:\n{check.stdout}{check.stderr}"
        fd = self.listener.fileno()
        self.proc = subprocess.Popen([self.binary, "-db", "-f", str(self.config_path)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, pass_fds=(fd,))
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {proc.returncode}:\n{self.output[-3000:]}")
            return self.admin_socket.exists() and bool(self._command("show info"))

        try:
            wait_until(up, timeout=timeout, message="haproxy's admin socket")
        except BaseException:
            self.kill()
            raise
        return self

    def _command(self, command: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as admin:
                admin.settimeout(5)
                admin.connect(str(self.admin_socket))
                admin.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := admin.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks).decode()
        except OSError:
            return ""

    def server_states(self) -> dict[str, str]:
        """What the health checks say of each server: {"gridline1": "UP", "gridline2": "DOWN", …}."""
        states = {}
        for line in self._command("show stat").splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == BACKEND and fields[1] not in ("BACKEND", "FRONTEND"):
                states[fields[1]] = fields[17]
        return states

    def wait_servers(self, state: str, names: Sequence[str] | None = None, timeout: float = 60) -> dict[str, str]:
        """Wait until the named servers (all of them by default) are ``state`` ("UP", "DOWN")."""
        wanted = list(names) if names is not None else [f"{BACKEND}{i}" for i in range(1, len(self.servers) + 1)]

        def reached() -> dict[str, str] | None:
            states = self.server_states()
            return states if all(states.get(n, "").startswith(state) for n in wanted) else None

        return wait_until(reached, timeout=timeout, message=f"haproxy sees {wanted} {state}")

    def wait_servers_up(self, timeout: float = 60) -> dict[str, str]:
        return self.wait_servers("UP", timeout=timeout)

    def requests_by_server(self, path_prefix: str = "/") -> dict[str, int]:
        """How many requests for paths under ``path_prefix`` each server answered, from the
        log lines (``option httplog``: ``… gridline/gridline1 … "POST /path HTTP/1.1"``)."""
        counts: dict[str, int] = {}
        pattern = re.compile(rf" {BACKEND}/(\S+) .*\"[A-Z]+ (\S+) HTTP/")
        for line in self._lines:
            found = pattern.search(line)
            if found and found.group(2).startswith(path_prefix):
                counts[found.group(1)] = counts.get(found.group(1), 0) + 1
        return counts

    def close(self) -> None:
        self.stop()
        self.listener.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> HaproxyProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
