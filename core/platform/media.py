"""The one media store: where every file of a case lives (recordings, voice notes, photos,
survey comments, report photos), in a local folder or an S3-compatible bucket.

``GRIDLINE_MEDIA_URL`` chooses it:

* empty (the default): the data directory itself, as always, so the relative
  ``Attachment.path`` rows written before there was a store keep working unchanged;
* ``file:///srv/gridline-media`` (or a plain absolute path): another local folder;
* ``s3://bucket/prefix``: a bucket, reached through the standard AWS variables
  (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_DEFAULT_REGION``). ``?addressing=path`` or ``?addressing=virtual`` overrides
  botocore's choice of bucket addressing (path style for MinIO/SeaweedFS behind a bare IP,
  virtual-hosted for clouds that require it).

A *key* is the relative POSIX path the project has always stored
(``recordings/2026/12/CA…-1.wav``, ``chat/2026/12/voice-….ogg``). Files are first written
to the *spool* (under the data directory, at the same relative path: ``spool_path``) and
then kept with ``put_file``; with the default store the spool is the store and keeping
costs one read to hash the file.

Every method is blocking (file or network I/O): call it off the event loop
(``asyncio.to_thread``). Failures are typed so callers can tell them apart:
``MediaUnavailable`` (the bucket cannot be reached now: keep the spool copy and retry
later), ``MediaMissing`` (no such object), ``MediaMismatch`` (what was stored is not what
was sent), ``MediaSettingInvalid`` (configuration: the message names the setting).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024  # bytes read or streamed at a time: no object is ever held whole in memory

# The standard variables the S3 client reads (named in start-up errors).
AWS_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


class MediaError(Exception):
    """Something went wrong with the media store."""


class MediaUnavailable(MediaError):
    """The store cannot be reached now (endpoint down, bucket gone, timeout): transient.
    The caller keeps its spool copy and a ``media_upload`` job tries again later."""

    transient = True  # core.platform.retry.transient


class MediaMissing(MediaError, FileNotFoundError):
    """No object under this key (a ``FileNotFoundError`` too, for callers that catch that)."""


class MediaMismatch(MediaError):
    """What the store holds is not what was sent (sha256 or size differ): nothing is deleted."""


class MediaSettingInvalid(MediaError, ValueError):
    """The store's configuration cannot work; the message is one line naming the setting."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str  # hex


def sha256_of_file(path: str | os.PathLike) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def check_key(key: str) -> str:
    """A key is a relative POSIX path without ``..``; a legacy absolute path (a row written
    when a file lay outside the data directory) is accepted by the local store only."""
    if not key or "\\" in key or "\x00" in key:
        raise MediaMissing(f"not a media key: {key!r}")
    parts = PurePosixPath(key).parts
    if ".." in parts or "." in parts:
        raise MediaMissing(f"not a media key: {key!r}")
    return key


def _write_atomically(target: Path, chunks: Iterator[bytes]) -> tuple[int, str]:
    """Write ``chunks`` to a temporary file beside ``target``, fsync, rename: a reader never
    sees half a file, and a crash leaves the old file or the new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(temporary, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def _file_chunks(path: Path, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    return _handle_chunks(open(path, "rb"), start, end)


def _handle_chunks(handle, start: int = 0, end: int | None = None) -> Iterator[bytes]:  # noqa: ANN001
    """An open file's bytes from ``start`` to ``end`` in CHUNK pieces; closes it at the end."""
    with handle:
        handle.seek(start)
        left = None if end is None else end - start
        while left is None or left > 0:
            chunk = handle.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


class PartUpload(ABC):
    """An object written in parts while it grows: ``send`` data in order, then ``complete``
    (or ``abort``). On S3 this is a multipart upload, and S3 servers (AWS, SeaweedFS, MinIO)
    refuse parts under 5 MiB but the last: ``send`` buffers until ``MIN_PART_BYTES`` are
    there, so small sends reach the bucket only in 5 MiB steps. (For "at least every 10 s of
    phone audio", 160 KB, put each stretch as an object of its own with ``put_bytes``.)"""

    key: str

    @abstractmethod
    def send(self, data: bytes) -> None: ...

    @abstractmethod
    def complete(self) -> StoredObject:
        """Assemble the parts into the object and confirm its sha256 by reading it back."""

    @abstractmethod
    def abort(self) -> None: ...


MIN_PART_BYTES = 5 * 1024 * 1024


class MediaStore(ABC):
    """Where files live. ``spool_root`` is the data directory: files wait there (at
    ``spool_path(key)``) until kept, and for as long as the store cannot be reached."""

    #: the spool is the store itself (the default): nothing to upload, nothing to delete
    spool_is_store: bool = False

    def __init__(self, spool_root: Path):
        self.spool_root = Path(spool_root)

    # -- the spool ----------------------------------------------------------------------

    def spool_path(self, key: str) -> Path:
        """Where a file under ``key`` waits on this machine before (or instead of) the store."""
        target = Path(check_key(key))
        return target if target.is_absolute() else self.spool_root / target

    # -- the store ----------------------------------------------------------------------

    @property
    @abstractmethod
    def description(self) -> str:
        """Where files go, for logs and /console/system (no secrets)."""

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike) -> StoredObject:
        """Keep the file at ``path`` under ``key`` and confirm that what is stored has the
        sha256 of what was sent (``MediaMismatch`` otherwise). ``path`` is left in place."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> StoredObject: ...

    @abstractmethod
    def stat(self, key: str) -> int | None:
        """The object's size, or ``None`` when there is none."""

    @abstractmethod
    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``start`` ≤ i < ``end`` (``None``: to the end) as chunks. The object is
        opened at once (``MediaMissing`` is raised here, before any byte), then streamed."""

    @abstractmethod
    def get_to_file(self, key: str, path: str | os.PathLike) -> StoredObject:
        """Copy the object to ``path`` (written atomically); its size and sha256."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; no object is no error (shredding twice is fine)."""

    @abstractmethod
    def check(self) -> None:
        """The start-up probe: ``MediaSettingInvalid`` with one line naming the setting."""

    @abstractmethod
    def begin_parts(self, key: str) -> PartUpload: ...

    def recorded_sha256(self, key: str) -> str | None:
        """The sha256 the store noted when the object was put (S3 metadata), without
        reading it; ``None`` when it has none (a local folder notes nothing)."""
        return None

    def get_bytes(self, key: str) -> bytes:
        """A small object whole (a photo to send on to a worker); prefer ``open_range``."""
        return b"".join(self.open_range(key))

    def sha256(self, key: str) -> StoredObject:
        """Read the object back and hash it."""
        digest = hashlib.sha256()
        size = 0
        for chunk in self.open_range(key):
            digest.update(chunk)
            size += len(chunk)
        return StoredObject(key, size, digest.hexdigest())


class LocalStore(MediaStore):
    """A folder. With ``root`` = the data directory (the default) the spool is the store."""

    def __init__(self, root: Path, spool_root: Path | None = None):
        super().__init__(spool_root if spool_root is not None else root)
        self.root = Path(root)
        self.spool_is_store = self.root.resolve() == self.spool_root.resolve()

    @property
    def description(self) -> str:
        return f"folder {self.root}"

    def path(self, key: str) -> Path:
        """The file of ``key`` (legacy absolute keys are themselves)."""
        target = Path(check_key(key))
        return target if target.is_absolute() else self.root / target

    def put_file(self, key: str, path: str | os.PathLike) -> StoredObject:
        target = self.path(key)
        source = Path(path)
        if target.exists() and source.exists() and os.path.samefile(source, target):
            size, digest = sha256_of_file(target)
            return StoredObject(key, size, digest)
        size, digest = _write_atomically(target, _file_chunks(source))
        stored_size, stored_digest = sha256_of_file(target)  # read back what the disk kept
        if (stored_size, stored_digest) != (size, digest):
            raise MediaMismatch(f"{key}: stored {stored_size} bytes sha256 {stored_digest}, sent {size} {digest}")
        return StoredObject(key, size, digest)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        size, digest = _write_atomically(self.path(key), iter((bytes(data),)))
        return StoredObject(key, size, digest)

    def stat(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError, MediaMissing):
            return None

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        try:
            handle = open(self.path(key), "rb")  # noqa: SIM115 (closed by the generator)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise MediaMissing(f"no object {key}") from None

        return _handle_chunks(handle, start, end)

    def get_to_file(self, key: str, path: str | os.PathLike) -> StoredObject:
        size, digest = _write_atomically(Path(path), self.open_range(key))
        return StoredObject(key, size, digest)

    def delete(self, key: str) -> None:
        with contextlib.suppress(MediaMissing):
            self.path(key).unlink(missing_ok=True)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MediaSettingInvalid(f"GRIDLINE_MEDIA_URL: cannot use the folder {self.root}: "
                                      f"{exc.strerror or exc}") from None
        if not self.root.is_dir():
            raise MediaSettingInvalid(f"GRIDLINE_MEDIA_URL: {self.root} is not a folder")

    def begin_parts(self, key: str) -> PartUpload:
        return _LocalParts(self, key)


class _LocalParts(PartUpload):
    def __init__(self, store: LocalStore, key: str):
        self.store = store
        self.key = key
        self.target = store.path(key)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.target.with_name(f".{self.target.name}.parts")
        self.handle = open(self.partial, "wb")  # noqa: SIM115 (closed by complete/abort)

    def send(self, data: bytes) -> None:
        self.handle.write(data)
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def complete(self) -> StoredObject:
        self.handle.close()
        os.replace(self.partial, self.target)
        size, digest = sha256_of_file(self.target)
        return StoredObject(self.key, size, digest)

    def abort(self) -> None:
        self.handle.close()
        self.partial.unlink(missing_ok=True)


def parse_media_url(url: str) -> tuple[str, str, str, dict[str, str]]:
    """(scheme, bucket-or-folder, prefix, options) of a ``GRIDLINE_MEDIA_URL``; ValueError
    with what is wrong (the settings turn it into one line naming the variable)."""
    url = url.strip()
    if not url:
        return "local", "", "", {}
    if url.startswith("/"):
        return "file", url, "", {}
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError("a folder is file:///absolute/path")
        return "file", parts.path, "", {}
    if parts.scheme == "s3":
        bucket = parts.netloc
        if not (3 <= len(bucket) <= 63 and all(c.islower() or c.isdigit() or c in ".-" for c in bucket)
                and bucket[0].isalnum() and bucket[-1].isalnum()):
            raise ValueError("the bucket is 3–63 characters of a-z 0-9 . - (s3://bucket/prefix)")
        unknown = set(options) - {"addressing"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r} (known: addressing)")
        if options.get("addressing", "auto") not in ("auto", "path", "virtual"):
            raise ValueError("addressing is auto, path or virtual")
        prefix = parts.path.strip("/")
        return "s3", bucket, prefix, options
    raise ValueError("must be empty (the data directory), file:///folder or s3://bucket/prefix")


@dataclass(frozen=True)
class Kept:
    """What ``keep`` did: the file's size and sha256, and whether it still waits in the
    spool for the store (``pending``: the bucket could not be reached)."""

    object: StoredObject
    pending: bool


def keep(store: MediaStore, key: str) -> Kept:
    """Keep a finished spool file (``store.spool_path(key)``) in the store: upload it,
    confirm the sha256, and only then delete the spool copy. When the store cannot be
    reached the file stays in the spool and ``pending`` is true: the caller records the
    attachment with ``upload_pending`` and ``core.platform.uploads`` queues a job that uploads it
    later. Any other failure (a mismatch) raises, and the spool copy stays."""
    spooled = store.spool_path(key)
    size, digest = sha256_of_file(spooled)
    if store.spool_is_store:
        return Kept(StoredObject(key, size, digest), pending=False)
    try:
        stored = store.put_file(key, spooled)
    except MediaUnavailable:
        return Kept(StoredObject(key, size, digest), pending=True)
    if (stored.size, stored.sha256) != (size, digest):  # the file changed under us: keep it
        raise MediaMismatch(f"{key}: spool has {size} bytes sha256 {digest}, store {stored.size} {stored.sha256}")
    spooled.unlink(missing_ok=True)
    return Kept(stored, pending=False)


@contextlib.contextmanager
def local_copy(store: MediaStore, key: str) -> Iterator[Path]:
    """A file on this machine with the object's bytes, for readers that need a path (the
    transcriber, PyAV): the spool copy while there is one, the store's own file for a
    local store, else a temporary download removed afterwards. Blocking."""
    spooled = store.spool_path(key)
    if spooled.is_file():
        yield spooled
        return
    if isinstance(store, LocalStore):
        own = store.path(key)
        if not own.is_file():
            raise MediaMissing(f"no object {key}")
        yield own
        return
    folder = Path(tempfile.mkdtemp(prefix="gridline-media-"))
    try:
        target = folder / PurePosixPath(key).name
        store.get_to_file(key, target)
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def fetched(store: MediaStore, key: str) -> AsyncIterator[Path]:
    """``local_copy`` for the event loop: the download runs in a thread."""
    manager = local_copy(store, key)
    path = await asyncio.to_thread(manager.__enter__)
    try:
        yield path
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)
