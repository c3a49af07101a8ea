"""Builds the speech recognition pool from the settings (filled in with speech_models)."""

from __future__ import annotations


def build_speech(settings):  # noqa: ANN001, ANN201
    return None
