"""A scripted stand-in for the Vosk transcriber, for tests and the ``--fake`` benchmarks.

It recognises nothing: what a stream or a file "says" is scripted by the test. It has
the real ``Transcriber`` interface, so the hotline, the chat bot and ``SpeechPool`` run
unchanged on it, and its text goes through the real normalisation.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speech_models.audio import decode_file
from speech_models.text import Word
from speech_models.transcriber import Encoding, Segment, Transcriber, Transcript, TranscriptStream

__all__ = ["FakeStream", "FakeTranscriber", "audio_key", "scripted_fake"]


def audio_key(data: bytes) -> str:
    """The key ``FakeTranscriber.script`` matches: sha256 of the bytes fed or the file."""
    return hashlib.sha256(data).hexdigest()


class FakeStream(TranscriptStream):
    def __init__(self, fake: FakeTranscriber, sample_rate, encoding, phrases, partials, text):
        super().__init__(sample_rate, encoding, phrases)
        self._fake = fake
        self._queued = text
        self._partials = partials
        self._partial_sent = False
        self._hash = hashlib.sha256()
        self.received = 0  # bytes fed

    def accept(self, data) -> list[Segment]:
        if self._fake.poison and self._fake.poison in bytes(data):
            os._exit(70)  # as a crash in the decoder ends its process
        pcm = self._to_pcm(data)
        self._hash.update(bytes(data))
        self.received += len(data)
        if self._partials and pcm and not self._partial_sent:
            text = self._script_text()
            if text:
                self._partial_sent = True
                return [Segment(text, 0.0, self.duration, False, (), text)]
        return []

    def _script_text(self) -> str:
        scripted = self._fake._by_hash.get(self._hash.hexdigest())
        text = scripted if scripted is not None else self._queued
        if text is None:
            text = self._fake.default
        return self._fake._restrict(text, self.phrases)

    def finish(self) -> Transcript:
        if self._transcript is not None:
            return self._transcript
        raw = self._script_text()
        seg = self._fake._segment(raw, self.duration)
        if seg is not None:
            self._finals.append(seg)
        t = self._make_transcript([raw])
        self._fake.transcripts.append(t)
        return t


@dataclass
class FakeTranscriber(Transcriber):
    """Deterministic stand-in: returns scripted text, recognises nothing.

    What a stream or file "says", first match wins:
    1. ``script(audio, text)``: the sha256 of all bytes fed to a stream, or of a file's
       bytes, equals that of ``audio`` (bytes, a path, or a hex digest);
    2. ``say(text, ...)``: queued texts, taken in order by the next streams/files opened;
    3. ``default``.
    The text then goes through the same normalisation as real output ("三 号 楼" ->
    "3号楼"); with ``phrases``, text that is not one of the phrases comes back empty, as
    out-of-grammar speech does with the real recogniser. Corrupt files raise
    ``AudioError`` exactly as with the real one.
    """

    default: str = ""
    confidence: float = 0.9
    partials: bool = False
    sample_rate: int = 16000
    poison: bytes = b""  # audio containing these bytes ends the process (recogniser processes' tests)
    _queue: deque = field(default_factory=deque, repr=False)
    _grammar_queue: deque = field(default_factory=deque, repr=False)
    _by_hash: dict = field(default_factory=dict, repr=False)
    streams: list = field(default_factory=list, repr=False)  # every FakeStream opened
    transcripts: list = field(default_factory=list, repr=False)  # every Transcript returned
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def say(self, *texts: str) -> FakeTranscriber:
        with self._lock:
            self._queue.extend(texts)
        return self

    def say_in_grammar(self, *texts: str) -> FakeTranscriber:
        with self._lock:
            self._grammar_queue.extend(texts)
        return self

    def script(self, audio: bytes | str | os.PathLike, text: str) -> FakeTranscriber:
        if isinstance(audio, bytes):
            key = audio_key(audio)
        elif isinstance(audio, str) and re.fullmatch(r"[0-9a-f]{64}", audio):
            key = audio
        else:
            key = audio_key(Path(audio).read_bytes())
        with self._lock:
            self._by_hash[key] = text
        return self

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._grammar_queue.clear()
            self._by_hash.clear()
            self.streams.clear()
            self.transcripts.clear()

    def _next_queued(self, grammar: bool = False) -> str | None:
        with self._lock:
            queue = self._grammar_queue if grammar else self._queue
            return queue.popleft() if queue else None

    @staticmethod
    def _restrict(text: str, phrases: Sequence[str] | None) -> str:
        if phrases is None or not text:
            return text

        def key(s: str) -> str:
            return re.sub(r"\s+", "", s).casefold()

        return text if key(text) in {key(p) for p in phrases} else ""

    def _segment(self, raw: str, duration: float) -> Segment | None:
        tokens = raw.split()
        if not tokens:
            return None
        step = duration / len(tokens) if duration else 0.0
        words = [
            Word(tok, round(i * step, 3), round((i + 1) * step, 3), self.confidence)
            for i, tok in enumerate(tokens)
        ]
        return Segment.from_words(words, raw)

    def open_stream(
        self,
        sample_rate: int = 8000,
        phrases: Sequence[str] | None = None,
        encoding: Encoding = "pcm16",
        *,
        partials: bool | None = None,
    ) -> FakeStream:
        s = FakeStream(
            self,
            sample_rate,
            encoding,
            phrases,
            self.partials if partials is None else partials,
            self._next_queued(grammar=phrases is not None),
        )
        with self._lock:
            self.streams.append(s)
        return s

    def transcribe_file(
        self, path: str | os.PathLike | bytes, phrases: Sequence[str] | None = None
    ) -> Transcript:
        raw_bytes = path if isinstance(path, bytes) else Path(path).read_bytes()
        audio = decode_file(path, self.sample_rate)  # same errors as the real thing
        stream = self.open_stream(self.sample_rate, phrases, "pcm16", partials=False)
        stream._hash = hashlib.sha256(raw_bytes)  # files are keyed by their bytes
        stream._samples_in = len(audio.pcm) // 2
        return stream.finish()


def scripted_fake(scripts: dict[str, str] | None = None, *, default: str = "", confidence: float = 0.9,
                  poison: bytes = b"") -> FakeTranscriber:
    """A ``FakeTranscriber`` made from picklable arguments, for a recogniser process:
    ``ProcessSpeechPool(functools.partial(scripted_fake, {audio_key(audio): text}))``.
    Its streams and transcripts stay in that process; tests read what came back."""
    fake = FakeTranscriber(default=default, confidence=confidence, poison=poison)
    for key, text in (scripts or {}).items():
        fake.script(key, text)
    return fake
