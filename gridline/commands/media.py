"""``gridline media``: the media store (``core.platform.media``): move a local store into a bucket,
and list attachments whose file is missing."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlmodel import select

from core.cases.models import Attachment
from core.platform.db import session_scope
from core.platform.media import (
    LocalStore,
    MediaMismatch,
    MediaUnavailable,
    sha256_of_file,
)
from core.platform.media_stores import media_store
from core.platform.settings import get_settings
from core.platform.uploads import failed_keys
from gridline.commands.common import console, fail, open_database

media_app = typer.Typer(help="Files of cases in the media store (GRIDLINE_MEDIA_URL).", no_args_is_help=True)

BATCH = 500


def _attachments(engine, after: int):  # noqa: ANN001, ANN202
    with session_scope(engine) as session:
        rows = session.exec(select(Attachment).where(Attachment.id > after).order_by(Attachment.id).limit(BATCH)).all()
        return [(a.id, a.path, a.size, a.sha256, a.upload_pending, a.case_id) for a in rows]


def _all_attachments(engine):  # noqa: ANN001, ANN202
    after = 0
    while rows := _attachments(engine, after):
        yield from rows
        after = rows[-1][0]


# Folders of the data directory that hold residents' files (ivr.state.RECORDINGS_DIR, chat
# media); never the database file, the speech models or anything else the folder holds.
MEDIA_FOLDERS = ("recordings", "chat")


def _unattached_files(root: Path, folders: set[str], named: set[str]):  # noqa: ANN202
    """(key, path) of the files under ``folders`` of ``root`` that no attachment names,
    in key order; temporary files (a leading dot: atomic writes, local parts) are skipped."""
    for folder in sorted(folders):
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts):
                continue
            key = relative.as_posix()
            if key not in named:
                yield key, path


@media_app.command("migrate")
def migrate(
    source: Path = typer.Option(None, "--from", help="the local folder to move (default: GRIDLINE_DATA_DIR)"),
) -> None:
    """Copy every attachment's file from the local folder into the store GRIDLINE_MEDIA_URL
    names, confirming each by sha256, then every other file of the media folders
    (recordings/, chat/, and the first folder of any attachment's key) that no attachment
    names: a survey comment or a turn whose call never filed it, kept under its own key so
    nothing a resident said stays on one machine. Resumable: a file already in the bucket
    with the recorded sha256 is skipped. The local files are left where they are."""
    settings = get_settings()
    engine = open_database()
    target = media_store(settings)
    if isinstance(target, LocalStore) and target.spool_is_store:
        fail("GRIDLINE_MEDIA_URL names no other store (it is empty: the data directory is the store); "
             "set it to s3://bucket/prefix")
    target.check()
    local = LocalStore(Path(source) if source else Path(settings.data_dir))
    counts = {"uploaded": 0, "already": 0, "waiting": 0, "missing": 0, "mismatch": 0, "outside": 0,
              "unattached": 0}
    problems: list[str] = []
    named: set[str] = set()
    folders = set(MEDIA_FOLDERS)
    for att_id, key, size, sha256, pending, _case in _all_attachments(engine):
        named.add(key)
        if not key.startswith("/") and "/" in key:
            folders.add(key.split("/", 1)[0])
        if pending:  # its media_upload job takes it
            counts["waiting"] += 1
            continue
        if key.startswith("/"):
            counts["outside"] += 1
            problems.append(f"attachment {att_id}: {key} lies outside the data directory (not moved)")
            continue
        try:
            if target.recorded_sha256(key) == sha256 and sha256 and target.stat(key) == size:
                counts["already"] += 1
                continue
            path = local.path(key)
            if not path.is_file():
                counts["missing"] += 1
                problems.append(f"attachment {att_id}: {key} is not in {local.root}")
                continue
            stored = target.put_file(key, path)
        except MediaMismatch as exc:
            counts["mismatch"] += 1
            problems.append(f"attachment {att_id}: {exc}")
            continue
        except MediaUnavailable as exc:
            fail(f"{target.description} cannot be reached ({exc}); run `gridline media migrate` again to resume")
        if sha256 and stored.sha256 != sha256:
            counts["mismatch"] += 1
            problems.append(f"attachment {att_id}: {key} has sha256 {stored.sha256}, the row says {sha256} "
                            "(uploaded as it is)")
            continue
        counts["uploaded"] += 1
    for key, path in _unattached_files(local.root, folders, named):
        try:
            size, digest = sha256_of_file(path)
            if target.recorded_sha256(key) == digest and target.stat(key) == size:
                counts["already"] += 1
                continue
            stored = target.put_file(key, path)
        except MediaMismatch as exc:
            counts["mismatch"] += 1
            problems.append(f"{key} (no attachment): {exc}")
            continue
        except MediaUnavailable as exc:
            fail(f"{target.description} cannot be reached ({exc}); run `gridline media migrate` again to resume")
        except OSError as exc:  # gone meanwhile (an upload job took it), unreadable
            problems.append(f"{key} (no attachment): {exc.strerror or exc}")
            continue
        if stored.sha256 != digest:
            counts["mismatch"] += 1
            problems.append(f"{key} (no attachment): stored with sha256 {stored.sha256}, the file has {digest}")
            continue
        counts["unattached"] += 1
    for line in problems[:200]:
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"into {target.description}: " + ", ".join(f"{n} {what}" for what, n in counts.items()),
                  highlight=False, soft_wrap=True)
    if counts["missing"] or counts["mismatch"]:
        raise typer.Exit(1)


def _failed_uploads(engine) -> dict[str, str]:  # noqa: ANN001
    with session_scope(engine) as session:
        return failed_keys(session)


@media_app.command("check")
def check(
    sha256: bool = typer.Option(False, "--sha256", help="also read every object back and compare its sha256"),
) -> None:
    """List attachments whose object is missing from the store, whose size (or with
    --sha256 content) differs from what was recorded, or whose upload was given up (the
    file kept in a spool). Exit status 1 when any is."""
    settings = get_settings()
    engine = open_database()
    store = media_store(settings)
    store.check()
    checked = waiting = 0
    problems: list[tuple[int, int | None, str, str]] = []
    failed = _failed_uploads(engine)
    for att_id, key, size, digest, pending, case_id in _all_attachments(engine):
        if pending:
            if key in failed:  # given up after media.upload_attempts: someone must take it
                problems.append((att_id, case_id, key, f"failed to upload; the file is kept in {failed[key] or 'a spool'}"))
            else:
                waiting += 1
            continue
        checked += 1
        try:
            found = store.stat(key)
            if found is None:
                problems.append((att_id, case_id, key, "missing"))
            elif size is not None and found != size:
                problems.append((att_id, case_id, key, f"size {found}, recorded {size}"))
            elif sha256 and digest and store.sha256(key).sha256 != digest:
                problems.append((att_id, case_id, key, "sha256 differs"))
        except MediaUnavailable as exc:
            fail(f"{store.description} cannot be reached: {exc}")
    for att_id, case_id, key, what in problems:
        console.print(f"attachment {att_id} (case id {case_id}): {key}: {what}", highlight=False, soft_wrap=True)
    console.print(f"{checked} attachment(s) checked in {store.description}: {len(problems)} with a problem"
                  + (f"; {waiting} waiting in a spool for upload" if waiting else ""),
                  highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
