"""core.platform.media_types: a stored file's type comes from its bytes, on real media made here
with PyAV and Pillow; whatever else a resident can send (a page, a script, an SVG, junk,
a file cut short, a page with a recording glued on) is application/octet-stream, and
reading it never raises."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.platform import media_types
from core.platform.media_types import ALLOWED, OCTET_STREAM, detect
from tests.support.media_samples import audio, image

SCRIPT = b"fetch('/console/users').then(r => r.text()).then(t => { document.title = t })"
PAGE = b"<!doctype html><html><body><script src='/console/cases/1/files/1'></script></body></html>"
SVG = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'><script>alert(2)</script></svg>"


def write(tmp_path, data: bytes, name: str = "file.oga"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("kind", "expected"), [
    ("ogg", "audio/ogg"), ("mp3", "audio/mpeg"), ("m4a", "audio/mp4"), ("wav", "audio/wav"), ("webm", "audio/webm"),
])
def test_real_audio_is_recognised(tmp_path, kind, expected):
    # the name says nothing: a voice note is stored as .oga whatever it is
    assert detect(write(tmp_path, audio(kind))) == expected


@pytest.mark.parametrize(("kind", "expected"), [("jpeg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")])
def test_real_images_are_recognised(tmp_path, kind, expected):
    assert detect(write(tmp_path, image(kind), "photo.jpg")) == expected


@pytest.mark.parametrize("data", [
    pytest.param(PAGE, id="html"),
    pytest.param(SCRIPT, id="javascript"),
    pytest.param(SVG, id="svg"),
    pytest.param(b"", id="empty"),
    pytest.param(bytes(random.Random(20).randrange(256) for _ in range(20_000)), id="random"),
    pytest.param(b"\xff\xfb\x90\x00" + bytes(random.Random(21).randrange(256) for _ in range(20_000)), id="mp3-sync-junk"),
    pytest.param(b"OggS" + bytes(range(256)) * 20, id="ogg-signature-junk"),
    pytest.param(b"ID3" + PAGE, id="id3-then-html"),
    pytest.param(b"RIFF\x00\x10\x00\x00WAVE" + PAGE, id="wave-signature-then-html"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + PAGE, id="png-signature-then-html"),
    pytest.param(b"\xff\xd8\xff\xe0" + SCRIPT, id="jpeg-signature-then-script"),
    pytest.param(b"\x00\x00\x00\x18ftypM4A " + SCRIPT, id="mp4-signature-then-script"),
    pytest.param(b"\x1a\x45\xdf\xa3" + SVG, id="ebml-signature-then-svg"),
])
def test_anything_else_is_a_download(tmp_path, data):
    assert detect(write(tmp_path, data)) == OCTET_STREAM


@pytest.mark.parametrize("kind", ["ogg", "mp3", "m4a", "wav", "webm"])
def test_audio_cut_off_in_its_headers_is_a_download(tmp_path, kind):
    whole = audio(kind)
    for keep in (4, 16, 40, 44):  # 44: a WAV header with not one sample after it
        assert detect(write(tmp_path, whole[:keep])) == OCTET_STREAM, keep


@pytest.mark.parametrize("kind", ["jpeg", "webp"])
def test_an_image_cut_short_is_a_download(tmp_path, kind):
    whole = image(kind, (320, 240))
    assert detect(write(tmp_path, whole[: len(whole) // 2])) == OCTET_STREAM


@pytest.mark.parametrize("kind", ["jpeg", "png", "webp"])
def test_an_image_cut_short_is_a_download_even_when_pillow_pads_cut_images(tmp_path, kind, monkeypatch):
    """WeasyPrint (the PDF reports) sets Pillow's LOAD_TRUNCATED_IMAGES on import, in the
    same process as the chat's downloads."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    whole = image(kind, (320, 240))
    assert detect(write(tmp_path, whole)) == f"image/{kind}"
    assert detect(write(tmp_path, whole[: len(whole) // 2])) == OCTET_STREAM


def test_recordings_glued_after_a_page_do_not_make_it_audio(tmp_path):
    """A polyglot that opens as a page is a page, however much real audio follows."""
    for kind in ("ogg", "mp3", "wav"):
        assert detect(write(tmp_path, PAGE + audio(kind))) == OCTET_STREAM, kind
        assert detect(write(tmp_path, b"\n" + audio(kind))) == OCTET_STREAM, kind


def test_an_image_too_big_to_decode_is_a_download_without_decoding(tmp_path):
    from PIL import Image

    path = tmp_path / "huge.png"
    Image.new("1", (8000, 6000)).save(path)  # 48 megapixels in a few kilobytes
    assert detect(path) == OCTET_STREAM


def test_a_missing_or_unreadable_path_is_a_download(tmp_path):
    assert detect(tmp_path / "nowhere.oga") == OCTET_STREAM
    assert detect(tmp_path) == OCTET_STREAM


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["ogg", "mp3", "m4a", "wav", "webm", "jpeg", "png", "webp"]),
       flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=12),
       cut=st.one_of(st.none(), st.integers(min_value=0)))
def test_damaged_media_never_raises(tmp_path, kind, flips, cut):
    """Real files with bytes overwritten and cut anywhere: an allowed type or a download,
    never an exception."""
    data = bytearray(image(kind) if kind in ("jpeg", "png", "webp") else audio(kind, 0.3))
    for at, value in flips:
        data[at % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    assert detect(write(tmp_path, bytes(data))) in ALLOWED | {OCTET_STREAM}


@pytest.mark.parametrize(("recorded", "served", "inline"), [
    ("audio/ogg", "audio/ogg", True),
    ("audio/ogg; codecs=opus", "audio/ogg", True),
    ("IMAGE/PNG", "image/png", True),
    ("text/html", OCTET_STREAM, False),
    ("text/javascript", OCTET_STREAM, False),
    ("image/svg+xml", OCTET_STREAM, False),
    ("audio/x-wav", OCTET_STREAM, False),
    (None, OCTET_STREAM, False),
    ("", OCTET_STREAM, False),
])
def test_the_served_type_is_checked_against_the_allow_list(recorded, served, inline):
    assert media_types.servable(recorded) == served
    assert media_types.inline(recorded) is inline
