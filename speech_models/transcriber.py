"""Streaming speech-to-text on a local Vosk model, and a scripted fake with the same API.

A ``Transcriber`` opens ``TranscriptStream``s. A stream takes audio bytes of any chunk
size (pcm16 or 8-bit µ-law, at the caller's rate), returns partial and final
``Segment``s as it goes, and ``finish()`` returns the ``Transcript``. Streams are
synchronous and not thread-safe; ``speech_models.pool.SpeechPool`` runs them off the
event loop.

Threads, not processes: the Vosk binding calls libvosk through cffi, which releases the
GIL for the duration of each foreign call, so recognisers in different threads decode
in parallel on all cores while sharing one model in memory (a process per worker would
load the ~250 MB model once per process). ``tests/speech_models/test_transcriber.py``
checks that the GIL is released; ``bench/speech.py`` measures the scaling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .audio import AudioError, Resampler, decode_file, dither, mulaw_decode
from .catalogue import InstalledModel, resolve_model
from .text import Word, convert_numerals, normalize_words, strip_cjk_spaces

__all__ = [
    "BLOCK_MS",
    "Encoding",
    "FakeTranscriber",
    "Segment",
    "Transcriber",
    "Transcript",
    "TranscriptStream",
    "VoskTranscriber",
    "audio_key",
    "deterministic_model_dir",
    "get_transcriber",
    "load_vosk_model",
]

log = logging.getLogger(__name__)

Encoding = Literal["pcm16", "mulaw"]
# Audio reaches Vosk in blocks of this length whatever the caller's chunking, so the
# decoder sees the same call sequence (and endpoints) for the same audio.
BLOCK_MS = 100
PARTIAL_EVERY_S = 0.3  # audio seconds between partial results (each costs a traceback)


@dataclass(frozen=True)
class Segment:
    """A piece of transcript. Partial segments may still change; final ones will not."""

    text: str
    start: float
    end: float
    final: bool
    words: tuple[Word, ...] = ()
    raw_text: str = ""

    @property
    def confidence(self) -> float:
        return sum(w.conf for w in self.words) / len(self.words) if self.words else 0.0

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "final": self.final,
            "confidence": round(self.confidence, 4),
            "words": [w.to_dict() for w in self.words],
        }


@dataclass(frozen=True)
class Transcript:
    """The final result of a stream or file."""

    text: str
    segments: tuple[Segment, ...]
    duration: float  # seconds of audio received
    raw_text: str = ""

    @property
    def words(self) -> tuple[Word, ...]:
        return tuple(w for s in self.segments for w in s.words)

    @property
    def confidence(self) -> float:
        """Mean word confidence (0.0 when nothing was recognised)."""
        words = self.words
        return sum(w.conf for w in words) / len(words) if words else 0.0

    @property
    def empty(self) -> bool:
        return not self.text

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "confidence": round(self.confidence, 4),
            "duration": round(self.duration, 3),
            "segments": [s.to_dict() for s in self.segments],
        }


def _join_segments(texts: Iterable[str]) -> str:
    return strip_cjk_spaces(" ".join(t for t in texts if t))


# --- streams -----------------------------------------------------------------------


class TranscriptStream:
    """Common input handling: type checks, µ-law decoding, odd bytes, duration."""

    def __init__(self, sample_rate: int, encoding: Encoding, phrases: Sequence[str] | None):
        if encoding not in ("pcm16", "mulaw"):
            raise ValueError(f"encoding must be 'pcm16' or 'mulaw', not {encoding!r}")
        if not isinstance(sample_rate, int) or not 4000 <= sample_rate <= 192000:
            raise ValueError(f"unsupported sample rate {sample_rate!r}")
        self.sample_rate = sample_rate
        self.encoding: Encoding = encoding
        self.phrases = tuple(phrases) if phrases is not None else None
        self._odd = b""  # a pcm16 sample split across two chunks
        self._samples_in = 0
        self._finals: list[Segment] = []
        self._transcript: Transcript | None = None

    @property
    def duration(self) -> float:
        """Seconds of audio received so far."""
        return self._samples_in / self.sample_rate

    @property
    def finished(self) -> bool:
        return self._transcript is not None

    def _to_pcm(self, data: bytes | bytearray | memoryview) -> bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise AudioError(f"audio must be bytes, not {type(data).__name__}")
        if self._transcript is not None:
            raise RuntimeError("stream already finished")
        data = bytes(data)
        if self.encoding == "mulaw":
            pcm = mulaw_decode(data)
        else:
            data = self._odd + data
            cut = len(data) - len(data) % 2
            pcm, self._odd = data[:cut], data[cut:]
        self._samples_in += len(pcm) // 2
        return pcm

    def accept(self, data: bytes | bytearray | memoryview) -> list[Segment]:
        """Feed audio; returns the segments that became available (may be empty)."""
        raise NotImplementedError

    def finish(self) -> Transcript:
        """End of audio: returns the transcript (again on repeated calls)."""
        raise NotImplementedError

    def _make_transcript(self, raw_texts: Sequence[str]) -> Transcript:
        segs = tuple(s for s in self._finals if s.text)
        self._transcript = Transcript(
            text=_join_segments(s.text for s in segs),
            segments=segs,
            duration=self.duration,
            raw_text=" ".join(t for t in raw_texts if t),
        )
        if self._odd:
            log.debug("dropped a trailing odd byte of pcm16 audio")
        return self._transcript


_CJK_CHAR = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _segment_from_words(raw: list[Word], final: bool, raw_text: str) -> Segment:
    text, words = normalize_words(raw)
    start = words[0].start if words else 0.0
    end = words[-1].end if words else 0.0
    return Segment(text, start, end, final, tuple(words), raw_text)


class VoskStream(TranscriptStream):
    def __init__(
        self,
        transcriber: VoskTranscriber,
        sample_rate: int,
        encoding: Encoding,
        phrases: Sequence[str] | None,
        partials: bool,
    ):
        super().__init__(sample_rate, encoding, phrases)
        import vosk

        self._t = transcriber
        rate = transcriber.sample_rate
        grammar, self._allowed = transcriber.grammar(phrases)
        if grammar is None:
            self._rec = vosk.KaldiRecognizer(transcriber.model, rate)
        else:
            self._rec = vosk.KaldiRecognizer(transcriber.model, rate, grammar)
        self._rec.SetWords(True)
        self._resampler = Resampler(sample_rate, rate)
        self._dither = transcriber.dither_level
        self._model_samples = 0  # samples sent on to the recogniser (dither offset)
        self._block = rate * BLOCK_MS // 1000 * 2
        self._buf = bytearray()
        self._partials = partials
        self._partial_text = ""
        self._since_partial = 0
        self._partial_every = int(PARTIAL_EVERY_S * rate) * 2
        self._raw_texts: list[str] = []

    def _parse(self, result: str, final: bool) -> Segment | None:
        data = json.loads(result)
        words = [
            Word(w["word"], float(w["start"]), float(w["end"]), float(w.get("conf", 1.0)))
            for w in data.get("result", ())
            if self._keep(w["word"])
        ]
        raw_text = data.get("text", "")
        if not words:
            if raw_text:
                self._raw_texts.append(raw_text)
            return None
        self._raw_texts.append(raw_text)
        seg = _segment_from_words(words, True, raw_text)
        self._finals.append(seg)
        return seg

    def _keep(self, word: str) -> bool:
        if word == "[unk]" or word == "<UNK>":
            return False
        return self._allowed is None or word in self._allowed

    def _feed_blocks(self, pcm: bytes, flush: bool) -> list[Segment]:
        if self._dither:
            pcm = dither(pcm, self._model_samples, self._dither)
        self._model_samples += len(pcm) // 2
        self._buf += pcm
        out: list[Segment] = []
        pos = 0
        n = len(self._buf)
        while n - pos >= self._block or (flush and pos < n):
            block = bytes(self._buf[pos : pos + self._block])
            pos += len(block)
            self._since_partial += len(block)
            if self._rec.AcceptWaveform(block):
                seg = self._parse(self._rec.Result(), final=True)
                self._partial_text = ""
                if seg is not None:
                    out.append(seg)
        del self._buf[:pos]
        if self._partials and not flush and self._since_partial >= self._partial_every:
            self._since_partial = 0
            text = json.loads(self._rec.PartialResult()).get("partial", "")
            text = " ".join(w for w in text.split() if self._keep(w))
            if text and text != self._partial_text:
                self._partial_text = text
                norm = convert_numerals(strip_cjk_spaces(text))
                out.append(Segment(norm, 0.0, self.duration, False, (), text))
        return out

    def accept(self, data: bytes | bytearray | memoryview) -> list[Segment]:
        pcm = self._to_pcm(data)
        if not pcm:
            return []
        return self._feed_blocks(self._resampler.process(pcm), flush=False)

    def finish(self) -> Transcript:
        if self._transcript is not None:
            return self._transcript
        if self._samples_in:
            self._feed_blocks(self._resampler.flush(), flush=True)
            self._parse(self._rec.FinalResult(), final=True)
        return self._make_transcript(self._raw_texts)


# --- transcribers ------------------------------------------------------------------


class Transcriber:
    """Interface shared by the Vosk transcriber and the fake."""

    sample_rate: int = 16000  # the rate the model wants; files are decoded to it

    def open_stream(
        self,
        sample_rate: int = 8000,
        phrases: Sequence[str] | None = None,
        encoding: Encoding = "pcm16",
        *,
        partials: bool = True,
    ) -> TranscriptStream:
        raise NotImplementedError

    def transcribe_pcm(
        self, pcm: bytes, sample_rate: int, phrases: Sequence[str] | None = None
    ) -> Transcript:
        """Transcribe a whole pcm16 buffer."""
        stream = self.open_stream(sample_rate, phrases, "pcm16", partials=False)
        step = sample_rate * 2  # one second at a time keeps memory flat
        for i in range(0, len(pcm), step):
            stream.accept(pcm[i : i + step])
        return stream.finish()

    def transcribe_file(
        self, path: str | os.PathLike | bytes, phrases: Sequence[str] | None = None
    ) -> Transcript:
        """Transcribe an audio file (any format PyAV reads). Raises ``AudioError``."""
        audio = decode_file(path, self.sample_rate)
        return self.transcribe_pcm(audio.pcm, audio.sample_rate, phrases)

    def warm_up(self) -> None:
        """Load whatever is loaded lazily (the model)."""


def _conf_dither(conf_text: str) -> float | None:
    level = None
    for line in conf_text.splitlines():
        line = line.strip()
        if line.startswith("--dither="):
            try:
                level = float(line.split("=", 1)[1])
            except ValueError:
                level = None
    return level


def deterministic_model_dir(path: str | os.PathLike) -> tuple[Path, float]:
    """A view of the model with Kaldi's random dither off, and the level it had.

    Kaldi dithers features with a process-global random generator, so the same audio
    can give different words from run to run (we saw the last word of a sentence flip
    every other run). The view is a private directory of symlinks to the model with a
    copy of ``conf/mfcc.conf`` ending in ``--dither=0``; the stream then adds the same
    amount of noise itself, reproducibly (``audio.dither``).
    """
    path = Path(path).resolve()
    conf = path / "conf" / "mfcc.conf"
    if not conf.is_file():
        return path, 0.0
    text = conf.read_text(errors="replace")
    level = _conf_dither(text)
    level = 1.0 if level is None else level  # Kaldi's default
    if level == 0:
        return path, 0.0
    import shutil
    import tempfile

    base = Path(tempfile.gettempdir()) / f"gridline-vosk-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    if base.stat().st_uid != os.getuid():
        raise RuntimeError(f"{base} belongs to another user; refusing to use it")
    digest = hashlib.sha256(f"{path}\n{text}".encode()).hexdigest()[:16]
    view = base / f"{path.name}-{digest}"
    if (view / "conf" / "mfcc.conf").is_file():
        return view, level
    staging = Path(tempfile.mkdtemp(prefix=f".{view.name}.", dir=base))
    for item in path.iterdir():
        if item.name != "conf":
            (staging / item.name).symlink_to(item)
    (staging / "conf").mkdir()
    for item in (path / "conf").iterdir():
        if item.name != "mfcc.conf":
            (staging / "conf" / item.name).symlink_to(item)
    (staging / "conf" / "mfcc.conf").write_text(text.rstrip("\n") + "\n--dither=0\n")
    try:
        os.rename(staging, view)
    except OSError:  # another process made it first
        shutil.rmtree(staging, ignore_errors=True)
    return view, level


_models: dict[str, object] = {}
_models_lock = threading.Lock()


def load_vosk_model(path: str | os.PathLike):
    """The process-wide ``vosk.Model`` for ``path``, loaded on first use."""
    key = str(Path(path).resolve())
    with _models_lock:
        model = _models.get(key)
        if model is None:
            import vosk

            vosk.SetLogLevel(-1)
            try:
                model = vosk.Model(key)
            except Exception as e:  # the binding raises a bare Exception
                raise RuntimeError(f"cannot load the Vosk model at {key}: {e}") from None
            _models[key] = model
        return model


class VoskTranscriber(Transcriber):
    """Real recognition on a Vosk model, shared by every stream in the process."""

    def __init__(
        self,
        model: str | os.PathLike | InstalledModel | None = None,
        *,
        deterministic: bool = True,
    ):
        self.info = model if isinstance(model, InstalledModel) else resolve_model(model)
        self.sample_rate = self.info.sample_rate
        if deterministic:
            self.model_path, self.dither_level = deterministic_model_dir(self.info.path)
        else:
            self.model_path, self.dither_level = Path(self.info.path), 0.0
        self._model = None
        self._grammar_cache: dict[tuple[str, ...], tuple[str | None, frozenset | None]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VoskTranscriber({self.info.name!r}, path={str(self.info.path)!r})"

    @property
    def model(self):
        if self._model is None:
            self._model = load_vosk_model(self.model_path)
        return self._model

    def warm_up(self) -> None:
        _ = self.model

    @property
    def supports_phrases(self) -> bool:
        # Grammars need the lookahead graph (HCLr + Gr); static HCLG graphs ignore them,
        # in which case the output is filtered to the phrase words instead.
        g = Path(self.info.path) / "graph"
        return (g / "HCLr.fst").is_file() and (g / "Gr.fst").is_file()

    def _in_vocab(self, word: str) -> bool:
        return self.model.vosk_model_find_word(word) != -1

    def _split_to_vocab(self, word: str) -> list[str] | None:
        """Split an out-of-vocabulary Chinese word into vocabulary words (longest first)."""
        if not _CJK_CHAR.search(word):
            return None
        best: list[list[str] | None] = [None] * (len(word) + 1)
        best[0] = []
        for i in range(len(word)):
            if best[i] is None:
                continue
            for j in range(min(len(word), i + 6), i, -1):
                if self._in_vocab(word[i:j]):
                    cand = best[i] + [word[i:j]]
                    if best[j] is None or len(cand) < len(best[j]):
                        best[j] = cand
        return best[len(word)]

    def grammar(self, phrases: Sequence[str] | None) -> tuple[str | None, frozenset[str] | None]:
        """Vosk grammar JSON for ``phrases`` and the set of words it may output."""
        if phrases is None:
            return None, None
        if isinstance(phrases, str):
            raise TypeError("phrases must be a list of strings, not one string")
        key = tuple(phrases)
        with self._lock:
            cached = self._grammar_cache.get(key)
        if cached is not None:
            return cached
        usable, missing = [], []
        for phrase in phrases:
            tokens: list[str] = []
            for w in phrase.lower().split():
                if self._in_vocab(w):
                    tokens.append(w)
                elif (parts := self._split_to_vocab(w)) is not None:
                    tokens.extend(parts)
                else:
                    tokens = []
                    break
            (usable if tokens else missing).append(" ".join(tokens) if tokens else phrase)
        if missing:
            log.warning("phrases not in the model's vocabulary, ignored: %s", missing)
        if not usable:
            raise ValueError(f"none of the phrases is in the model's vocabulary: {list(phrases)}")
        allowed = frozenset(w for p in usable for w in p.split())
        items = list(dict.fromkeys(usable))
        if self._in_vocab("[unk]"):
            items.append("[unk]")  # speech off the list becomes [unk], not a forced phrase
        # ensure_ascii=False: Vosk's JSON reader does not decode \\uXXXX escapes
        grammar = json.dumps(items, ensure_ascii=False) if self.supports_phrases else None
        result = (grammar, allowed)
        with self._lock:
            self._grammar_cache[key] = result
        return result

    def open_stream(
        self,
        sample_rate: int = 8000,
        phrases: Sequence[str] | None = None,
        encoding: Encoding = "pcm16",
        *,
        partials: bool = True,
    ) -> TranscriptStream:
        return VoskStream(self, sample_rate, encoding, phrases, partials)


_shared: dict[str, VoskTranscriber] = {}
_shared_lock = threading.Lock()


def get_transcriber(model: str | os.PathLike | None = None) -> VoskTranscriber:
    """The process-wide transcriber for ``model`` (spec as in ``resolve_model``)."""
    info = resolve_model(model)
    key = str(info.path)
    with _shared_lock:
        t = _shared.get(key)
        if t is None:
            t = _shared[key] = VoskTranscriber(info)
        return t


# --- the fake ----------------------------------------------------------------------


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
    _queue: deque = field(default_factory=deque, repr=False)
    _by_hash: dict = field(default_factory=dict, repr=False)
    streams: list = field(default_factory=list, repr=False)  # every FakeStream opened
    transcripts: list = field(default_factory=list, repr=False)  # every Transcript returned
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def say(self, *texts: str) -> FakeTranscriber:
        with self._lock:
            self._queue.extend(texts)
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
            self._by_hash.clear()
            self.streams.clear()
            self.transcripts.clear()

    def _next_queued(self) -> str | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

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
        return _segment_from_words(words, True, raw)

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
            self._next_queued(),
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
