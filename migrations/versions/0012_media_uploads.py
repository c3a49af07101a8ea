"""attachments waiting in the spool for the media store

``upload_pending`` is true while an attachment's file could not yet be kept in the media
store (the bucket was unreachable) and waits in the spool of the instance that received
it, for a ``media_upload`` job. Every row before 0012 lies in the data directory, which is
the default store: none waits.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("attachment") as batch:
        batch.add_column(sa.Column("upload_pending", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index("ix_attachment_upload_pending", ["upload_pending"])


def downgrade() -> None:
    with op.batch_alter_table("attachment") as batch:
        batch.drop_index("ix_attachment_upload_pending")
        batch.drop_column("upload_pending")
