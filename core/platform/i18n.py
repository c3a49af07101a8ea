"""Words at the edge: one catalogue mechanism for every package that speaks to people.

A catalogue is a folder of ``<language>.toml`` files with the same tables, looked up by
dotted key (``errors.case.illegal_transition``). Each edge owns one: ``core/locales``
(what core's codes mean: errors, event reasons, status and report words), ``console/locales``,
``chat/locales``, ``ivr/prompts``. A language is offered where its file exists, so adding
a language is adding files, never code.

A deployment adds or overrides words without touching the package: ``GRIDLINE_LOCALES``
lists folders (separated like ``PATH``) laid out as ``<folder>/<catalogue>/<language>.toml``
(``<folder>/console/fr.toml``); their tables are merged over the packaged ones.

Core raises errors and writes event reasons as a code with parameters (``core/errors.py``);
:func:`say` turns a code into words. A placeholder may name a table to look its value up
in: ``{status:@status}`` says the status ``closed`` as ``status.closed`` of the language.
"""

from __future__ import annotations

import logging
import os
import string
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.platform.merging import deep_merge

DEFAULT = "zh"
ENV = "GRIDLINE_LOCALES"
log = logging.getLogger(__name__)


def _extra_folders() -> tuple[Path, ...]:
    return tuple(Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p)


@lru_cache
def _files(name: str, packaged: Path, extra: tuple[Path, ...]) -> dict[str, tuple[Path, ...]]:
    """language -> its files, packaged first, then each extra folder's."""
    found: dict[str, list[Path]] = {}
    for folder in (packaged, *(e / name for e in extra)):
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else ():
            found.setdefault(path.stem, []).append(path)
    return {lang: tuple(paths) for lang, paths in found.items()}


@lru_cache
def _load(paths: tuple[Path, ...]) -> dict:
    table: dict = {}
    for path in paths:
        table = deep_merge(table, tomllib.loads(path.read_text("utf-8")))
    return table


class _Lookup(string.Formatter):
    """``{value:@table}`` says ``value`` through ``table.<value>`` of the same language."""

    def __init__(self, catalogue: Catalogue, language: str):
        self.catalogue, self.language = catalogue, language

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec.startswith("@"):
            key = f"{format_spec[1:]}.{getattr(value, 'value', value)}"
            return self.catalogue.t(self.language, key) if self.catalogue.has(self.language, key) else str(value)
        return super().format_field(value, format_spec)


class Catalogue:
    """The words of one edge: ``<packaged>/<language>.toml`` plus ``GRIDLINE_LOCALES``."""

    def __init__(self, name: str, packaged: Path, *, fallback: Catalogue | None = None):
        self.name, self.packaged, self.fallback = name, packaged, fallback

    def _files(self) -> dict[str, tuple[Path, ...]]:
        return _files(self.name, self.packaged, _extra_folders())

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages with a file, Mandarin first."""
        return tuple(sorted(self._files(), key=lambda lang: (lang != DEFAULT, lang)))

    def table(self, language: str) -> dict:
        """The whole catalogue of ``language`` (Mandarin's where there is no file for it)."""
        files = self._files()
        return _load(files.get(language) or files[DEFAULT])

    def _find(self, language: str, key: str) -> tuple[bool, Any]:
        node: Any = self.table(language)
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node

    def has(self, language: str, key: str) -> bool:
        return self._find(language, key)[0] or (language != DEFAULT and self._find(DEFAULT, key)[0]) or (
            self.fallback is not None and self.fallback.has(language, key))

    def get(self, language: str, key: str) -> Any:
        """The raw value at ``key``; a language's file may leave keys to Mandarin's. A key
        that is nowhere is a bug: KeyError (the catalogue tests find it)."""
        for lang in (language, DEFAULT):
            found, value = self._find(lang, key)
            if found:
                return value
        if self.fallback is not None:
            return self.fallback.get(language, key)
        raise KeyError(f"{self.name} catalogue has no {key!r}")

    def t(self, language: str, key: str, **values: object) -> str:
        text = str(self.get(language, key))
        return _Lookup(self, language).vformat(text, (), values) if values else text

    def language(self, asked: str | None) -> str:
        """``asked`` if this catalogue speaks it, else Mandarin."""
        return asked if asked in self._files() else DEFAULT


CORE = Catalogue("core", Path(__file__).resolve().parent.parent / "locales")


def say(language: str, code: str, params: dict | None = None, *, catalogue: Catalogue = CORE,
        default: str | None = None) -> str:
    """The words of a core code (``errors.<code>`` or ``reasons.<code>`` …, the full key) in
    ``language``; ``default`` (else the code) where no catalogue knows it."""
    fallback = default if default is not None else code
    if not catalogue.has(language, code) or not isinstance(catalogue.get(language, code), str):
        return fallback
    try:  # always formatted: the words of a code are a template, even when it has no parameters
        return _Lookup(catalogue, language).vformat(str(catalogue.get(language, code)), (), params or {})
    except (KeyError, IndexError):  # a parameter the words ask for is missing: say what we can
        log.warning("%s catalogue: %s in %s lacks a parameter (has %s)", catalogue.name, code, language,
                    sorted(params or {}))
        return fallback


def error_text(language: str, exc: Exception, *, catalogue: Catalogue = CORE) -> str:
    """A core error in ``language``: ``errors.<code>`` with the error's parameters, or the
    English sentence where the catalogue has no words for its code yet."""
    code = getattr(exc, "code", None)
    params = getattr(exc, "params", None) or {}
    message = getattr(exc, "message", None) or str(exc)
    if not code or "." not in code:  # a class's default code says too little: keep the sentence
        return message
    return say(language, f"errors.{code}", params, catalogue=catalogue, default=message)


ROUTING_TRACE = "routing.trace"  # an event reason whose words are the trace in its data


def routing_text(language: str, trace: list | tuple | None, *, catalogue: Catalogue = CORE) -> str:
    """Why a case went to its grid, in ``language``: each step of the trace core recorded
    (``{"code": …, "params": {…}}``, words at ``routing.<code>``), joined. A list parameter
    (the names of a conflict) is joined the language's way; a step no catalogue knows is
    shown as its code, so nothing recorded is hidden."""
    separator = say(language, "routing.separator", catalogue=catalogue, default="; ")
    joiner = say(language, "routing.list_separator", catalogue=catalogue, default=", ")
    out = []
    for s in trace or ():
        if not isinstance(s, dict) or not s.get("code"):
            continue
        params = {k: joiner.join(map(str, v)) if isinstance(v, list | tuple) else v
                  for k, v in (s.get("params") or {}).items()}
        out.append(say(language, f"routing.{s['code']}", params, catalogue=catalogue, default=str(s["code"])))
    return separator.join(out)


def case_routing_text(language: str, trace: list | None, reason: str | None, *,
                      catalogue: Catalogue = CORE) -> str | None:
    """A case's routing for people: its trace where core recorded one, else the reason
    written before traces (or typed, or a console code such as ``console.located``)."""
    if trace:
        return routing_text(language, trace, catalogue=catalogue)
    return reason_text(language, reason, catalogue=catalogue)


def reason_text(language: str, reason: str | None, data: dict | None = None, *,
                catalogue: Catalogue = CORE) -> str | None:
    """An event's reason for people. Core writes a code (``sweep.response_overdue``) with its
    parameters in the event's data (``data["reason_params"]``); rows written before codes,
    and reasons people typed, are shown as they are. A routing event's reason is
    ``routing.trace``: its words are the trace in ``data["routing_trace"]``."""
    if reason == ROUTING_TRACE and (data or {}).get("routing_trace"):
        return routing_text(language, data["routing_trace"], catalogue=catalogue)
    params = (data or {}).get("reason_params") or {}
    return say(language, f"reasons.{reason}", params, catalogue=catalogue, default=reason) if reason else reason
