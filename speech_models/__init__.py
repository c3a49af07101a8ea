"""Local speech recognition for Gridline: model catalogue, Vosk streaming, audio, text.

Imports nothing else of Gridline's. Names are loaded lazily, so ``speech_models.text``
(used by ``core`` for typed addresses) costs no numpy, vosk or PyAV import.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "audio": [
        "AudioError",
        "decode_file",
        "mulaw_decode",
        "mulaw_encode",
        "read_wav",
        "resample",
        "write_wav",
        "WavWriter",
    ],
    "catalogue": [
        "CATALOGUE",
        "DEFAULT_MODEL",
        "ENV_VAR",
        "FetchError",
        "ModelNotFound",
        "fetch",
        "installed_models",
        "resolve_model",
    ],
    "pool": ["PooledStream", "SpeechPool"],
    "procpool": ["ProcessSpeechPool", "RecogniserDied"],
    "text": ["Word", "convert_numerals", "normalize_text", "normalize_words"],
    "transcriber": [
        "Segment",
        "Transcriber",
        "Transcript",
        "TranscriptStream",
        "VoskTranscriber",
        "get_transcriber",
    ],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'speech_models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
