"""Builds the process's speech recognition pool from the settings."""

from __future__ import annotations

import functools
import logging

from core.platform.settings import Settings
from speech_models.catalogue import ModelNotFound, same_language
from speech_models.pool import SpeechPool
from speech_models.procpool import ProcessSpeechPool
from speech_models.transcriber import VoskTranscriber, get_transcriber

log = logging.getLogger(__name__)


def build_speech(settings: Settings):  # noqa: ANN201
    """A ``SpeechPool`` over the configured Vosk model (``GRIDLINE_SPEECH_WORKERS``
    recogniser processes, or threads with ``GRIDLINE_SPEECH_IN_PROCESS``), or ``None`` when no model is
    installed: the hotline and the bot still take petitions (audio kept, transcripts left
    for an operator) and the log says how to install one."""

    try:
        transcriber = get_transcriber(settings.speech_model or None, language=settings.speech_language)
    except ModelNotFound as exc:
        log.warning("speech recognition is off: %s", exc)
        return None
    log.info("speech model: %s", transcriber)
    language = transcriber.info.language  # None for a directory the catalogue does not know
    if language and not same_language(language, settings.speech_language):
        log.warning("speech model %s recognises %r, not %r (GRIDLINE_SPEECH_LANGUAGE): residents' words "
                    "will be mis-heard", transcriber.info.name, language, settings.speech_language)
    # No default recordings directory: the hotline writes each call's WAV itself, before
    # and without a recogniser, so a stream opened for recognition records nothing.
    if settings.speech_in_process:
        return SpeechPool(transcriber, workers=settings.speech_workers)
    # The model is loaded only in the recogniser processes, from the path resolved here.
    return ProcessSpeechPool(functools.partial(VoskTranscriber, transcriber.info),
                             processes=settings.speech_workers, info=transcriber.info)
