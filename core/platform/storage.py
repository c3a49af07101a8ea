"""Where residents' files live: under the data directory, recorded by a path relative to
it, so the data directory can move (or be restored elsewhere) without rewriting rows."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from core.platform.settings import get_settings


def data_dir() -> Path:
    return Path(get_settings().data_dir)


def stored_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """The form kept in the database: relative to the data directory (POSIX separators).
    A path outside it is kept absolute, so nothing is ever mis-recorded."""
    root_path = Path(root) if root is not None else data_dir()
    target = Path(path)
    if not target.is_absolute():
        return PurePosixPath(*target.parts).as_posix()
    try:
        return target.resolve().relative_to(root_path.resolve()).as_posix()
    except ValueError:
        return str(target)


def resolve(stored: str, root: str | os.PathLike | None = None) -> Path:
    """The file on disk for a stored path (relative ones are under the data directory)."""
    target = Path(stored)
    if target.is_absolute():
        return target
    return (Path(root) if root is not None else data_dir()) / target
