"""scripts/bootstrap.sh waits for another apt/dpkg process instead of failing at once.

The real apt-get runs, in a sandbox (its own state, lists and cache folders, a local
repository with one small package, and /bin/true for dpkg, so the machine's packages are
never touched); the test holds the sandbox's package locks as unattended-upgrades would."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WAIT = "77"  # GRIDLINE_APT_LOCK_WAIT: seconds, and a mark to find our apt-get among the processes

pytestmark = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get") or not shutil.which("dpkg-deb"),
    reason="needs root, apt-get and dpkg-deb (Debian)")


def apt_sandbox(root: Path) -> Path:
    """An APT configuration of folders under ``root``, with a local repository that offers
    fonts-wqy-zenhei (an empty package: dpkg is /bin/true here anyway)."""
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/apt.conf.d",
                "etc/preferences.d", "log", "pkg/DEBIAN", "repo"):
        (root / sub).mkdir(parents=True)
    (root / "state/status").write_text("")
    (root / "pkg/DEBIAN/control").write_text("Package: fonts-wqy-zenhei\nVersion: 0.0-test\nArchitecture: all\n"
                                             "Maintainer: Gridline tests <tests@example.org>\nDescription: test\n")
    deb = root / "repo/fonts-wqy-zenhei.deb"
    subprocess.run(["dpkg-deb", "--build", str(root / "pkg"), str(deb)], check=True, capture_output=True)
    control = (root / "pkg/DEBIAN/control").read_text()
    (root / "repo/Packages").write_text(f"{control}Filename: ./{deb.name}\nSize: {deb.stat().st_size}\n"
                                        f"SHA256: {hashlib.sha256(deb.read_bytes()).hexdigest()}\n\n")
    (root / "etc/sources.list").write_text(f"deb [trusted=yes] file:{root / 'repo'} ./\n")
    conf = root / "apt.conf"
    conf.write_text("\n".join(f'{key} "{value}";' for key, value in {
        "Dir::State": root / "state", "Dir::State::status": root / "state/status", "Dir::Cache": root / "cache",
        "Dir::Etc::sourcelist": root / "etc/sources.list", "Dir::Etc::sourceparts": root / "etc/sources.list.d",
        "Dir::Etc::parts": root / "etc/apt.conf.d", "Dir::Etc::preferencesparts": root / "etc/preferences.d",
        "Dir::Log": root / "log", "Dir::Bin::dpkg": "/bin/true"}.items()) + "\n")
    return conf


def checkout(root: Path) -> Path:
    """The bootstrap script in a folder of its own, its virtualenv already made (so only the
    system packages step runs)."""
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts/bootstrap.sh", root / "scripts/bootstrap.sh")
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / ".venv/bin").mkdir(parents=True)
    (root / ".venv/bin/python").symlink_to(sys.executable)
    stamp = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (root / f".venv/.gridline-run-{stamp}").touch()
    return root


def hold(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def release(fd: int) -> None:
    fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)


def our_apt_install_running() -> bool:
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"install" in args and f"DPkg::Lock::Timeout={WAIT}".encode() in args:
            return True
    return False


def wait_for(condition, what: str, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.05)


def test_bootstrap_waits_for_the_package_locks_another_process_holds(tmp_path):
    conf = apt_sandbox(tmp_path / "apt")
    repo = checkout(tmp_path / "checkout")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "fc-list").write_text("#!/bin/sh\nexit 0\n")  # no fonts: the Chinese font is missing
    (stubs / "fc-list").chmod(0o755)
    env = {**os.environ, "APT_CONFIG": str(conf), "PATH": f"{stubs}:{os.environ['PATH']}",
           "GRIDLINE_APT_LOCK_WAIT": WAIT}
    lists_lock = hold(tmp_path / "apt/state/lists/lock")
    dpkg_lock = hold(tmp_path / "apt/state/lock-frontend")
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        proc = subprocess.Popen(["bash", str(repo / "scripts/bootstrap.sh")], cwd=repo, env=env, stdout=sink,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "holds the package lists; waiting" in out.read_text() or proc.poll() is not None,
                 "bootstrap to say it waits for the lists")
        assert proc.poll() is None, proc.communicate()[1]  # waiting, not failed
        release(lists_lock)
        wait_for(lambda: our_apt_install_running() or proc.poll() is not None, "apt-get install to start")
        time.sleep(1)  # it meets the lock-frontend held: without the timeout it would fail at once
        assert proc.poll() is None, proc.communicate()[1]
        release(dpkg_lock)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Could not get lock" not in stderr
    assert "bootstrap: installing fonts-wqy-zenhei" in out.read_text()
    assert "fonts-wqy-zenhei" in (tmp_path / "apt/log/history.log").read_text()  # apt did install it
