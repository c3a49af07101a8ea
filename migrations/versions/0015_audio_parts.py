"""audio_part: a call's live audio held in the database when the spool and the store fail

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-12 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audio_part",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("key", "seq"),
    )
    op.create_index("ix_audio_part_key", "audio_part", ["key"])


def downgrade() -> None:
    op.drop_index("ix_audio_part_key", table_name="audio_part")
    op.drop_table("audio_part")
