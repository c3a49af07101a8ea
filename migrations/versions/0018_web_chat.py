"""web chat: devices (dialog state, draft, conversation), answered posts, the signing key

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 00:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_chat_device",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("resident_id", sa.Integer(), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("draft", sa.JSON(), nullable=True),
        sa.Column("messages", sa.JSON(), nullable=True),
        sa.Column("grid_hint", sa.String(length=64), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_web_chat_device_resident_id", "web_chat_device", ["resident_id"])
    op.create_table(
        "web_chat_request",
        sa.Column("device_id", sa.String(length=40), primary_key=True),
        sa.Column("key", sa.String(length=64), primary_key=True),
        sa.Column("answer", sa.JSON(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_web_chat_request_at", "web_chat_request", ["at"])
    op.create_table(
        "web_chat_secret",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("web_chat_secret")
    op.drop_index("ix_web_chat_request_at", "web_chat_request")
    op.drop_table("web_chat_request")
    op.drop_index("ix_web_chat_device_resident_id", "web_chat_device")
    op.drop_table("web_chat_device")
