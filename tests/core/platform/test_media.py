"""The media store's contract, the same on both backends: a local folder and a real
S3 server (SeaweedFS, tests/support/seaweed.py)."""

from __future__ import annotations

import hashlib
import os

import pytest

from core.platform.media import (
    LocalStore,
    MediaMismatch,
    MediaMissing,
    MediaSettingInvalid,
    MediaUnavailable,
    keep,
    parse_media_url,
)
from core.platform.media_stores import media_store
from core.platform.settings import Settings


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """Each backend as ``media_store(settings)`` builds it from GRIDLINE_MEDIA_URL."""
    data = tmp_path / "data"
    data.mkdir()
    if request.param == "local":
        return media_store(Settings(data_dir=data))
    bucket = request.getfixturevalue("s3_bucket")
    return media_store(Settings(data_dir=data, media_url=bucket.url))


def _spool(store, key: str, data: bytes):
    path = store.spool_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_file_put_is_what_comes_back_whole_and_in_ranges(store, tmp_path):
    data = os.urandom(200_000)  # several chunks
    source = tmp_path / "source.wav"
    source.write_bytes(data)
    stored = store.put_file("recordings/2026/12/CA1-1.wav", source)
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert source.exists()  # put_file never removes what it was given
    assert store.stat("recordings/2026/12/CA1-1.wav") == len(data)
    assert b"".join(store.open_range("recordings/2026/12/CA1-1.wav")) == data
    assert b"".join(store.open_range("recordings/2026/12/CA1-1.wav", 100, 70_000)) == data[100:70_000]
    assert b"".join(store.open_range("recordings/2026/12/CA1-1.wav", 199_990)) == data[199_990:]
    chunks = list(store.open_range("recordings/2026/12/CA1-1.wav"))
    assert len(chunks) > 1 and max(map(len, chunks)) <= 64 * 1024  # streamed, not read whole
    copy = store.get_to_file("recordings/2026/12/CA1-1.wav", tmp_path / "copy" / "x.wav")
    assert (tmp_path / "copy" / "x.wav").read_bytes() == data and copy.sha256 == stored.sha256


def test_bytes_put_and_deleted(store):
    stored = store.put_bytes("chat/2026/12/voice-a.ogg", b"OggS voice")
    assert stored.size == 10 and stored.sha256 == hashlib.sha256(b"OggS voice").hexdigest()
    assert store.get_bytes("chat/2026/12/voice-a.ogg") == b"OggS voice"
    store.delete("chat/2026/12/voice-a.ogg")
    assert store.stat("chat/2026/12/voice-a.ogg") is None
    store.delete("chat/2026/12/voice-a.ogg")  # twice is fine (shredding again)


def test_a_missing_object_is_missing_before_any_byte(store):
    assert store.stat("recordings/none.wav") is None
    with pytest.raises(MediaMissing):
        store.open_range("recordings/none.wav")
    with pytest.raises(FileNotFoundError):  # MediaMissing is one too
        store.open_range("recordings/none.wav", 5, 10)


@pytest.mark.parametrize("key", ["../etc/passwd", "recordings/../../x", "", "a\\b"])
def test_keys_never_leave_the_store(store, key):
    with pytest.raises(MediaMissing):
        store.put_bytes(key, b"x")


def test_parts_make_one_object(store):
    """Small sends are gathered into parts S3 accepts (5 MiB but the last)."""
    pieces = [os.urandom(700_000) for _ in range(9)] + [b"tail"]
    upload = store.begin_parts("recordings/2026/12/CA2-1.wav")
    for piece in pieces:
        upload.send(piece)
    stored = upload.complete()
    assert store.get_bytes("recordings/2026/12/CA2-1.wav") == b"".join(pieces)
    assert stored.size == sum(map(len, pieces))


def test_keep_uploads_and_then_removes_the_spool_copy(store):
    data = b"RIFF" + os.urandom(5000)
    spooled = _spool(store, "recordings/2026/12/CA3-1.wav", data)
    kept = keep(store, "recordings/2026/12/CA3-1.wav")
    assert not kept.pending and kept.object.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("recordings/2026/12/CA3-1.wav") == data
    # the default local store is the spool itself: the file stays where it is
    assert spooled.exists() == store.spool_is_store


def test_the_default_store_is_the_data_directory_so_old_rows_keep_working(tmp_path):
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "old.wav").write_bytes(b"RIFF old")
    store = media_store(Settings(data_dir=tmp_path))
    assert isinstance(store, LocalStore) and store.spool_is_store
    assert store.get_bytes("recordings/old.wav") == b"RIFF old"


def test_a_local_store_elsewhere_copies_and_confirms(tmp_path):
    store = media_store(Settings(data_dir=tmp_path / "data", media_url=f"file://{tmp_path / 'media'}"))
    assert not store.spool_is_store
    spooled = _spool(store, "photos/p.jpg", b"\xff\xd8 jpeg")
    assert not keep(store, "photos/p.jpg").pending
    assert not spooled.exists() and (tmp_path / "media" / "photos" / "p.jpg").read_bytes() == b"\xff\xd8 jpeg"


def test_keep_when_the_bucket_is_down_leaves_the_file_waiting(seaweed, s3_bucket, tmp_path):
    store = media_store(Settings(data_dir=tmp_path, media_url=s3_bucket.url))
    spooled = _spool(store, "recordings/2026/12/CA4-1.wav", b"RIFF said while the bucket was away")
    seaweed.stop()
    try:
        with pytest.raises(MediaUnavailable):
            store.stat("recordings/2026/12/CA4-1.wav")
        kept = keep(store, "recordings/2026/12/CA4-1.wav")
        assert kept.pending and spooled.exists()
        assert kept.object.sha256 == hashlib.sha256(spooled.read_bytes()).hexdigest()
    finally:
        seaweed.start()
    assert not keep(store, "recordings/2026/12/CA4-1.wav").pending
    assert not spooled.exists()
    assert s3_bucket.read("recordings/2026/12/CA4-1.wav") == b"RIFF said while the bucket was away"


def test_a_changed_object_is_a_mismatch_not_a_success(s3_bucket, tmp_path, monkeypatch):
    """The read-back is what confirms: a server that kept other bytes than were sent is
    caught (simulated by another writer replacing the object between put and read-back)."""
    store = media_store(Settings(data_dir=tmp_path, media_url=s3_bucket.url))
    spooled = _spool(store, "recordings/x.wav", b"RIFF the real words")
    real_put = store.client.put_object

    def put_then_overwritten(**kwargs):
        answer = real_put(**kwargs)
        s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key=kwargs["Key"], Body=b"RIFF other")
        return answer

    monkeypatch.setattr(store.client, "put_object", put_then_overwritten)
    with pytest.raises(MediaMismatch):
        store.put_file("recordings/x.wav", spooled)  # its own read-back
    with pytest.raises(MediaMismatch):
        keep(store, "recordings/x.wav")
    assert spooled.exists()  # nothing is deleted on a mismatch


def test_check_names_the_setting(seaweed, s3_bucket, tmp_path, monkeypatch):
    media_store(Settings(data_dir=tmp_path, media_url=s3_bucket.url)).check()  # all well

    with pytest.raises(MediaSettingInvalid, match=r"^GRIDLINE_MEDIA_URL: no bucket 'nonesuch'"):
        media_store(Settings(data_dir=tmp_path, media_url="s3://nonesuch/m?addressing=path")).check()

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(MediaSettingInvalid, match=r"^AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: refused"):
        media_store(Settings(data_dir=tmp_path, media_url=s3_bucket.url)).check()

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nobody there
    with pytest.raises(MediaSettingInvalid, match=r"^AWS_ENDPOINT_URL=http://127.0.0.1:9: cannot reach"):
        media_store(Settings(data_dir=tmp_path, media_url=s3_bucket.url)).check()


@pytest.mark.parametrize(("url", "expected"), [
    ("", ("local", "", "", {})),
    ("file:///srv/media", ("file", "/srv/media", "", {})),
    ("s3://gridline-media/district/a", ("s3", "gridline-media", "district/a", {})),
    ("s3://gridline-media?addressing=virtual", ("s3", "gridline-media", "", {"addressing": "virtual"})),
])
def test_media_urls(url, expected):
    assert parse_media_url(url) == expected


@pytest.mark.parametrize("url", ["s3://A_b/x", "ftp://x", "s3://bucket/x?addressing=sideways", "file://host/x"])
def test_bad_media_urls_name_the_setting(url):
    from core.platform.settings import SettingsInvalid, get_settings

    os.environ["GRIDLINE_MEDIA_URL"] = url
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsInvalid, match="^GRIDLINE_MEDIA_URL="):
            get_settings()
    finally:
        del os.environ["GRIDLINE_MEDIA_URL"]
        get_settings.cache_clear()
