"""attachments are the one record of a case's files; the audit trail

Case.audio_path and Case.photos duplicated the Attachment rows (and the hotline's paths
were absolute): their files become Attachment rows, stored relative to the data directory
where they were under it, and the columns go. AuditEntry records changes that are not
case events and views of personal data.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 12:40:00
"""
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _relative(path: str) -> str:
    from core.platform.storage import stored_path  # a revision loads the code only when it runs

    return stored_path(Path(path))


def upgrade() -> None:
    op.create_table(
        'auditentry',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=48), nullable=False),
        sa.Column('target_type', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('target_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('detail', sa.JSON(), nullable=True),
        sa.Column('remote', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('auditentry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_auditentry_at'), ['at'], unique=False)
        batch_op.create_index('ix_auditentry_target', ['target_type', 'target_id'], unique=False)

    conn = op.get_bind()
    case = sa.table('case', sa.column('id', sa.Integer), sa.column('audio_path', sa.String),
                    sa.column('photos', sa.JSON), sa.column('created_at', sa.DateTime))
    attachment = sa.table('attachment', sa.column('case_id', sa.Integer), sa.column('kind', sa.String),
                          sa.column('path', sa.String), sa.column('mime_type', sa.String),
                          sa.column('created_at', sa.DateTime))
    rows = conn.execute(sa.select(case.c.id, case.c.audio_path, case.c.photos, case.c.created_at).where(
        sa.or_(case.c.audio_path.is_not(None), case.c.photos.is_not(None)))).all()
    for case_id, audio_path, photos, created_at in rows:
        have = set(conn.execute(sa.select(attachment.c.path).where(attachment.c.case_id == case_id)).scalars())
        files = [("recording", audio_path, "audio/wav")] if audio_path else []
        files += [("photo", p, "image/jpeg") for p in (photos or [])]
        for kind, path, mime in files:
            if path in have:
                continue
            have.add(path)
            conn.execute(attachment.insert().values(case_id=case_id, kind=kind, path=path, mime_type=mime,
                                                    created_at=created_at))
    # The hotline stored absolute paths; keep them relative to the data directory from now on.
    att = sa.table('attachment', sa.column('id', sa.Integer), sa.column('path', sa.String))
    for att_id, path in conn.execute(sa.select(att.c.id, att.c.path)).all():
        relative = _relative(path)
        if relative != path:
            conn.execute(att.update().where(att.c.id == att_id).values(path=relative))

    with op.batch_alter_table('case', schema=None) as batch_op:
        batch_op.drop_column('audio_path')
        batch_op.drop_column('photos')


def downgrade() -> None:
    with op.batch_alter_table('case', schema=None) as batch_op:
        batch_op.add_column(sa.Column('photos', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('audio_path', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True))
    conn = op.get_bind()
    case = sa.table('case', sa.column('id', sa.Integer), sa.column('audio_path', sa.String),
                    sa.column('photos', sa.JSON))
    attachment = sa.table('attachment', sa.column('id', sa.Integer), sa.column('case_id', sa.Integer),
                          sa.column('kind', sa.String), sa.column('path', sa.String))
    by_case: dict[int, dict] = {}
    for case_id, kind, path in conn.execute(
            sa.select(attachment.c.case_id, attachment.c.kind, attachment.c.path)
            .where(attachment.c.case_id.is_not(None)).order_by(attachment.c.id)).all():
        entry = by_case.setdefault(case_id, {"audio_path": None, "photos": []})
        if kind in ("recording", "voice"):
            entry["audio_path"] = path  # the last one, as the column held before
        elif kind == "photo":
            entry["photos"].append(path)
    for case_id, entry in by_case.items():
        conn.execute(case.update().where(case.c.id == case_id).values(
            audio_path=entry["audio_path"], photos=entry["photos"] or None))
    with op.batch_alter_table('auditentry', schema=None) as batch_op:
        batch_op.drop_index('ix_auditentry_target')
        batch_op.drop_index(batch_op.f('ix_auditentry_at'))
    op.drop_table('auditentry')
