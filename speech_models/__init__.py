"""Local speech recognition for Gridline: model catalogue (``catalogue``), Vosk streaming
(``transcriber``, ``pool``), audio (``audio``), text (``text``).

Imports nothing else of Gridline's. Import the submodule you need: ``speech_models.text``
(used by ``core`` for typed addresses) costs no numpy, vosk or PyAV import.
"""
