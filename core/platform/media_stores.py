"""Which media store the settings name (``GRIDLINE_MEDIA_URL``): the data directory, another
folder, or an S3 bucket; one store per configuration and process. Apart from the stores
(core.platform.media, and core.platform.media_s3 which extends it) so that neither imports
the other's way round."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from core.platform.media import AWS_SETTINGS, LocalStore, MediaStore, parse_media_url

_stores: dict[tuple, MediaStore] = {}
_stores_lock = threading.Lock()


def media_store(settings) -> MediaStore:  # noqa: ANN001 (core.platform.settings.Settings)
    """The store ``settings`` name; one per configuration and process (its S3 client is
    thread-safe and keeps its connections)."""
    url = getattr(settings, "media_url", "") or ""
    environment = tuple(os.environ.get(name, "") for name in AWS_SETTINGS)
    cache_key = (url, str(settings.data_dir), environment)
    with _stores_lock:
        store = _stores.get(cache_key)
        if store is None:
            store = _stores[cache_key] = build_store(url, Path(settings.data_dir))
        return store


def build_store(url: str, data_dir: Path) -> MediaStore:
    scheme, where, prefix, options = parse_media_url(url)
    if scheme == "local":
        return LocalStore(data_dir)
    if scheme == "file":
        return LocalStore(Path(where), spool_root=data_dir)
    # Lazy: boto3 (about a second to import) loads only when the store is a bucket.
    from core.platform.media_s3 import S3Store

    return S3Store(where, prefix, spool_root=data_dir, addressing=options.get("addressing", "auto"))
