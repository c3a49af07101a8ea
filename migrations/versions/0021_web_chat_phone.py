"""web chat: a device's verified phone, its open progress stream, and the SMS codes

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 01:50:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0021'
down_revision: str | None = '0020'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("web_chat_device") as batch:
        batch.add_column(sa.Column("phone", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("phone_verified_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("live_until", sa.DateTime(), nullable=True))
    op.create_table(
        "web_chat_phone_code",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_web_chat_phone_code_device_id", "web_chat_phone_code", ["device_id"])
    op.create_index("ix_web_chat_phone_code_phone", "web_chat_phone_code", ["phone"])
    op.create_index("ix_web_chat_phone_code_created_at", "web_chat_phone_code", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_web_chat_phone_code_created_at", "web_chat_phone_code")
    op.drop_index("ix_web_chat_phone_code_phone", "web_chat_phone_code")
    op.drop_index("ix_web_chat_phone_code_device_id", "web_chat_phone_code")
    op.drop_table("web_chat_phone_code")
    with op.batch_alter_table("web_chat_device") as batch:
        batch.drop_column("live_until")
        batch.drop_column("phone_verified_at")
        batch.drop_column("phone")
