"""What a resident's file really is, read from its bytes, never from what the sender said.

A Telegram client (or anyone speaking the Bot API) declares a voice note's ``mime_type``
freely: ``text/html`` served back inline in the console would run in an operator's
session. So a stored file gets a type only from its content, and only from a short
allow-list of audio a browser plays and images it shows; anything else is
``application/octet-stream`` and is offered as a download.

A file is one of the allowed types when both its first bytes carry the format's signature
(so a page with a recording pasted in later stays a page) and the real decoder agrees: PyAV
decodes an audio frame, Pillow decodes the whole image. Reading a hostile file never
raises: whatever goes wrong makes it ``application/octet-stream``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
from PIL import Image

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
WAV = "audio/wav"  # the hotline's recordings, which our own WAV writer makes

AUDIO = frozenset({"audio/ogg", "audio/mpeg", "audio/mp4", "audio/wav", "audio/webm"})
IMAGES = frozenset({"image/jpeg", "image/png", "image/webp"})
ALLOWED = AUDIO | IMAGES

EXTENSIONS = {"audio/ogg": ".ogg", "audio/mpeg": ".mp3", "audio/mp4": ".m4a", "audio/wav": ".wav",
              "audio/webm": ".webm", "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp",
              OCTET_STREAM: ".bin"}

# FFmpeg's demuxer (forced: never a guess from the name) → (the type, the audio codecs a
# browser plays in it)
_CONTAINERS = {
    "ogg": ("audio/ogg", {"opus", "vorbis", "flac"}),
    "mp3": ("audio/mpeg", {"mp3", "mp3float"}),
    "mp4": ("audio/mp4", {"aac", "mp3", "mp3float", "alac", "opus", "flac"}),
    "wav": ("audio/wav", {"pcm_s16le", "pcm_u8", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_mulaw", "pcm_alaw"}),
    "matroska": ("audio/webm", {"opus", "vorbis"}),
}
_IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAX_IMAGE_PIXELS = 40_000_000  # far beyond any phone photo; a bigger one is a download, never decoded
_HEAD = 64
_TAIL = 64  # where an image's end marker must be (a few padding bytes may follow it)
_PACKETS_TO_TRY = 64  # an audio stream decodes a frame within its first packets or is not audio


def servable(mime: str | None) -> str:
    """The type a stored file may be served with: its recorded type if that is on the
    allow-list, else ``application/octet-stream`` (also for rows older than the detection)."""
    value = (mime or "").split(";", 1)[0].strip().lower()
    return value if value in ALLOWED else OCTET_STREAM


def inline(mime: str | None) -> bool:
    """Whether a browser may show the file in place (play it, display it)."""
    return servable(mime) != OCTET_STREAM


def extension(mime: str | None) -> str:
    return EXTENSIONS[servable(mime)]


def detect(path: str | os.PathLike) -> str:
    """The allow-listed type of the file at ``path``, or ``application/octet-stream``.
    Reads the file: call it off the event loop."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except OSError as exc:
        log.warning("media type of %s: not readable (%s)", path, exc)
        return OCTET_STREAM
    try:
        if _image_signature(head):
            return _image(Path(path)) or OCTET_STREAM
        container = _audio_signature(head)
        if container:
            return _audio(Path(path), container) or OCTET_STREAM
    except Exception as exc:  # a hostile file may trip anything in a decoder: it is then not media
        log.info("media type of %s: not decodable (%s: %s)", path, type(exc).__name__, exc)
    return OCTET_STREAM


def _image_signature(head: bytes) -> bool:
    return (head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n")
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"))


def _audio_signature(head: bytes) -> str | None:
    """The demuxer the first bytes claim, if they claim one we allow."""
    if head.startswith(b"OggS"):
        return "ogg"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska / WebM
        return "matroska"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def _image(path: Path) -> str | None:
    with Image.open(path, formats=tuple(_IMAGE_FORMATS)) as im:
        if im.width * im.height > MAX_IMAGE_PIXELS:
            return None
        im.load()  # the whole image decodes: a forged body raises here
        mime = _IMAGE_FORMATS.get(im.format or "")
    # Pillow pads a cut-off image instead of raising once anything in the process has set
    # ImageFile.LOAD_TRUNCATED_IMAGES (WeasyPrint does on import), so the end is checked here.
    return mime if mime and _ends_whole(path, mime) else None


def _ends_whole(path: Path, mime: str) -> bool:
    """The file carries its format's end: JPEG's EOI marker, PNG's IEND chunk, or as many
    bytes as WebP's RIFF header says."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if mime == "image/webp":
            f.seek(4)
            return int.from_bytes(f.read(4), "little") + 8 <= size
        f.seek(max(0, size - _TAIL))
        tail = f.read()
    if mime == "image/png":
        return b"IEND" in tail
    return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def _audio(path: Path, container: str) -> str | None:
    mime, codecs = _CONTAINERS[container]
    with av.open(str(path), mode="r", format=container, metadata_errors="ignore") as media:
        audio = next((s for s in media.streams if s.type == "audio"), None)
        if audio is None or audio.codec_context.name not in codecs:
            return None
        for n, packet in enumerate(media.demux(audio)):
            if n >= _PACKETS_TO_TRY:
                break
            for frame in packet.decode():
                if frame.samples > 0:
                    return mime
    return None
