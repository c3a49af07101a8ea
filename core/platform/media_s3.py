"""The S3 backend of the media store (``core.platform.media``), with boto3.

boto3 is the reference S3 client: the same code speaks to AWS S3, MinIO, SeaweedFS, Ceph
RGW and the S3 APIs of Chinese clouds (Aliyun OSS, Tencent COS, Huawei OBS), with a custom
endpoint and path-style or virtual-hosted addressing, and it reads the standard variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``) and ``~/.aws`` files themselves.

What was stored is confirmed by reading it back: after an upload the object is streamed
back and hashed, and only a matching sha256 counts (servers differ in which checksum
headers they honour; a read-back means the same on all of them). The sha256 is also kept
as the object's metadata (``x-amz-meta-sha256``) for people looking at the bucket.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from core.platform.media import (
    CHUNK,
    MIN_PART_BYTES,
    MediaMismatch,
    MediaMissing,
    MediaSettingInvalid,
    MediaStore,
    MediaUnavailable,
    PartUpload,
    StoredObject,
    _write_atomically,
    check_key,
    sha256_of_file,
)

# Error codes the server answers for "this object is not there".
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# "The bucket is not there (now)": at run time a transient fault (it is being restored,
# the gateway restarts); at start-up a configuration error.
BUCKET_CODES = {"NoSuchBucket"}
REFUSED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
                 "ExpiredToken", "AuthorizationHeaderMalformed", "InvalidClientTokenId"}


def _code(error) -> str:  # noqa: ANN001 (botocore ClientError)
    return str(error.response.get("Error", {}).get("Code", ""))


class S3Store(MediaStore):
    def __init__(self, bucket: str, prefix: str, *, spool_root: Path, addressing: str = "auto"):
        super().__init__(spool_root)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.addressing = addressing
        self._client = None
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS"
        return f"s3://{self.bucket}/{self.prefix} at {endpoint}"

    # -- the client -----------------------------------------------------------------------

    @property
    def client(self):  # noqa: ANN201
        if self._client is None:
            with self._lock:
                if self._client is None:
                    config = Config(
                        s3={"addressing_style": self.addressing},
                        connect_timeout=5, read_timeout=30,
                        retries={"max_attempts": 3, "mode": "standard"},
                        # Only the checksums S3 requires: several S3-compatible servers refuse
                        # the newer default trailing checksums. Integrity is our read-back.
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                        max_pool_connections=32,
                    )
                    # A session of our own: boto3's default session is not thread-safe.
                    self._client = boto3.session.Session().client("s3", config=config)
        return self._client

    def object_key(self, key: str) -> str:
        check_key(key)
        if key.startswith("/"):
            raise MediaMissing(f"{key}: a file outside the data directory is not in the bucket")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _translate(self, exc: Exception, key: str | None = None) -> Exception:
        """botocore's exceptions as ours."""
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in MISSING_CODES and key is not None:
                return MediaMissing(f"no object {key} in s3://{self.bucket}/{self.prefix}")
            if code in BUCKET_CODES:
                return MediaUnavailable(f"bucket {self.bucket} is not there: {exc}")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"):
                return MediaUnavailable(str(exc))
            return exc
        if isinstance(exc, NoCredentialsError):
            return MediaUnavailable("no credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set")
        if isinstance(exc, BotoCoreError | OSError):  # connection refused, timeouts, DNS
            return MediaUnavailable(f"{type(exc).__name__}: {exc}")
        return exc

    def _call(self, key: str | None, method: str, **kwargs):  # noqa: ANN003, ANN202
        try:
            return getattr(self.client, method)(**kwargs)
        except Exception as exc:
            translated = self._translate(exc, key)
            if translated is exc:
                raise
            raise translated from exc

    # -- the store ------------------------------------------------------------------------

    def put_file(self, key: str, path: str | os.PathLike) -> StoredObject:
        size, digest = sha256_of_file(path)
        with open(path, "rb") as body:
            self._call(key, "put_object", Bucket=self.bucket, Key=self.object_key(key), Body=body,
                       ContentLength=size, Metadata={"sha256": digest})
        return self._confirm(key, size, digest)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        self._call(key, "put_object", Bucket=self.bucket, Key=self.object_key(key), Body=data,
                   Metadata={"sha256": digest})
        return self._confirm(key, len(data), digest)

    def _confirm(self, key: str, size: int, digest: str) -> StoredObject:
        stored = self.sha256(key)
        if (stored.size, stored.sha256) != (size, digest):
            raise MediaMismatch(f"{key}: the bucket holds {stored.size} bytes sha256 {stored.sha256}, "
                                f"sent {size} bytes {digest}")
        return stored

    def stat(self, key: str) -> int | None:
        try:
            head = self._call(key, "head_object", Bucket=self.bucket, Key=self.object_key(key))
        except MediaMissing:
            return None
        return int(head["ContentLength"])

    def recorded_sha256(self, key: str) -> str | None:
        try:
            head = self._call(key, "head_object", Bucket=self.bucket, Key=self.object_key(key))
        except MediaMissing:
            return None
        return (head.get("Metadata") or {}).get("sha256")

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if end is not None and end <= start:
            return iter(())
        extra = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        answer = self._call(key, "get_object", Bucket=self.bucket, Key=self.object_key(key), **extra)
        body = answer["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            except Exception as exc:
                translated = self._translate(exc, key)
                if translated is exc:
                    raise
                raise translated from exc
            finally:
                body.close()

        return chunks()

    def get_to_file(self, key: str, path: str | os.PathLike) -> StoredObject:
        size, digest = _write_atomically(Path(path), self.open_range(key))
        return StoredObject(key, size, digest)

    def delete(self, key: str) -> None:
        with contextlib.suppress(MediaMissing):
            self._call(key, "delete_object", Bucket=self.bucket, Key=self.object_key(key))

    def check(self) -> None:
        """Bucket there, endpoint reachable, credentials accepted: HEAD the bucket, then write,
        read back and delete a small probe (a read-only key would fail every upload later)."""
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or ""
        where = f"AWS_ENDPOINT_URL={endpoint}" if endpoint else "AWS (AWS_ENDPOINT_URL not set)"
        try:
            self.client.head_bucket(Bucket=self.bucket)
            probe = self.object_key(".gridline-probe")
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
            self.client.delete_object(Bucket=self.bucket, Key=probe)
        except NoCredentialsError:
            raise MediaSettingInvalid("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: not set, and no other "
                                      f"credentials found, for GRIDLINE_MEDIA_URL=s3://{self.bucket}") from None
        except ClientError as exc:
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in BUCKET_CODES or code == "404" or status == 404:
                raise MediaSettingInvalid(f"GRIDLINE_MEDIA_URL: no bucket {self.bucket!r} at {where}") from None
            if code in REFUSED_CODES or status == 403:
                raise MediaSettingInvalid(f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: refused by {where} "
                                          f"for bucket {self.bucket!r} ({code or status})") from None
            raise MediaSettingInvalid(f"GRIDLINE_MEDIA_URL: s3://{self.bucket} at {where} answered "
                                      f"{code or status}: {exc}") from None
        except (BotoCoreError, OSError) as exc:
            if not endpoint and "region" in str(exc).lower():
                raise MediaSettingInvalid(f"AWS_DEFAULT_REGION: {exc}") from None
            raise MediaSettingInvalid(f"AWS_ENDPOINT_URL={endpoint or '(AWS)'}: cannot reach it for "
                                      f"GRIDLINE_MEDIA_URL=s3://{self.bucket} ({exc})") from None

    def begin_parts(self, key: str) -> PartUpload:
        return _S3Parts(self, key)


class _S3Parts(PartUpload):
    """An S3 multipart upload; the sha256 is computed as parts go and confirmed at the end."""

    def __init__(self, store: S3Store, key: str):
        self.store = store
        self.key = key
        self.object_key = store.object_key(key)
        created = store._call(key, "create_multipart_upload", Bucket=store.bucket, Key=self.object_key)
        self.upload_id = created["UploadId"]
        self.parts: list[dict] = []
        self.buffer = bytearray()
        self.digest = hashlib.sha256()
        self.size = 0

    def send(self, data: bytes) -> None:
        self.buffer += data
        self.digest.update(data)
        self.size += len(data)
        if len(self.buffer) >= MIN_PART_BYTES:
            self._send_part()

    def _send_part(self) -> None:
        number = len(self.parts) + 1
        answer = self.store._call(self.key, "upload_part", Bucket=self.store.bucket, Key=self.object_key,
                                  UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer))
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self.buffer = bytearray()

    def complete(self) -> StoredObject:
        if self.buffer or not self.parts:
            self._send_part()
        self.store._call(self.key, "complete_multipart_upload", Bucket=self.store.bucket, Key=self.object_key,
                         UploadId=self.upload_id, MultipartUpload={"Parts": self.parts})
        return self.store._confirm(self.key, self.size, self.digest.hexdigest())

    def abort(self) -> None:
        self.store._call(self.key, "abort_multipart_upload", Bucket=self.store.bucket, Key=self.object_key,
                         UploadId=self.upload_id)

