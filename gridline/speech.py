"""Builds the process's speech recognition pool from the settings."""

from __future__ import annotations

import logging

from core.settings import Settings

log = logging.getLogger(__name__)


def build_speech(settings: Settings):  # noqa: ANN201
    """A ``SpeechPool`` over the configured Vosk model, or ``None`` when no model is
    installed: the hotline and the bot still take petitions (audio kept, transcripts left
    for an operator) and the log says how to install one."""
    from speech_models.catalogue import ModelNotFound
    from speech_models.pool import SpeechPool
    from speech_models.transcriber import get_transcriber

    try:
        transcriber = get_transcriber(settings.speech_model or None)
    except ModelNotFound as exc:
        log.warning("speech recognition is off: %s", exc)
        return None
    log.info("speech model: %s", transcriber)
    language = getattr(transcriber.info, "language", None)
    if language and not language.startswith("zh"):
        log.warning("speech model %s recognises %r, not Mandarin: residents' words will be mis-heard; "
                    "set GRIDLINE_SPEECH_MODEL to a Mandarin model (gridline models fetch vosk-model-small-cn-0.22)",
                    transcriber.info.name, language)
    # No default recordings directory: the hotline writes each call's WAV itself, before
    # and without a recogniser, so a stream opened for recognition records nothing.
    return SpeechPool(transcriber, workers=settings.speech_workers)
