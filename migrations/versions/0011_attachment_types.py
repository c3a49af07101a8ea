"""attachment types from the bytes: no stored file keeps a type off the allow-list

Before 0011 a chat voice note kept the ``mime_type`` its sender declared, and the console
served it back inline with it (issue 20: a "voice note" of type text/html ran script in
an operator's session). Every row whose type is not on the allow-list (or is missing) gets
the type its bytes have, read by ``core.platform.media_types.detect`` from the data directory of
the settings the migration runs with, and ``application/octet-stream`` when the file is
not there (or is no allowed audio or image). Rows already on the allow-list keep their
type: the console serves every file with nosniff and a sandboxing CSP whatever it says.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-11 09:00:00
"""
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# The allow-list as it stood at 0011 (a migration does not change with later code).
ALLOWED = ("audio/ogg", "audio/mpeg", "audio/mp4", "audio/wav", "audio/webm", "image/jpeg", "image/png", "image/webp")
OCTET_STREAM = "application/octet-stream"
CHUNK = 500


def _data_dir() -> Path | None:
    try:
        from core.platform.storage import data_dir  # a revision loads the code only when it runs

        root = data_dir()
    except Exception as exc:  # settings that do not load: the rows still become downloads
        log.warning("0011: no data directory (%s): attachment types are not re-read from the files", exc)
        return None
    return root if root.is_dir() else None


def _type_of(root: Path | None, stored: str) -> str:
    from core.platform.media_types import detect  # a revision loads the code only when it runs
    from core.platform.storage import resolve  # a revision loads the code only when it runs

    path = resolve(stored, root) if root is not None or Path(stored).is_absolute() else None
    if path is None or not path.is_file():
        return OCTET_STREAM
    found = detect(path)
    return found if found in ALLOWED else OCTET_STREAM


def upgrade() -> None:
    conn = op.get_bind()
    attachment = sa.table('attachment', sa.column('id', sa.Integer), sa.column('path', sa.String),
                          sa.column('mime_type', sa.String))
    rows = conn.execute(sa.select(attachment.c.id, attachment.c.path).where(
        sa.or_(attachment.c.mime_type.is_(None), attachment.c.mime_type.not_in(ALLOWED)))
        .order_by(attachment.c.id)).all()
    if not rows:
        return
    root = _data_dir()
    by_type: dict[str, list[int]] = defaultdict(list)
    for att_id, path in rows:
        by_type[_type_of(root, path)].append(att_id)
    for mime, ids in by_type.items():
        for i in range(0, len(ids), CHUNK):
            conn.execute(attachment.update().where(attachment.c.id.in_(ids[i:i + CHUNK])).values(mime_type=mime))
    log.info("0011: %d attachment type(s) re-read from the bytes: %s", len(rows),
             ", ".join(f"{len(ids)} {mime}" for mime, ids in sorted(by_type.items())))


def downgrade() -> None:
    # Nothing to undo: the types a sender declared are not kept anywhere, and putting an
    # unchecked type back would only reopen the hole. The schema did not change.
    pass
