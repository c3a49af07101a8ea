"""send_bucket: Telegram's message limits shared by every process; job.priority

Outgoing chat messages take a token from the bot's bucket and the chat's before they go
(core.platform.buckets), so N processes together keep to Telegram's 30 messages/s per bot
and about one a second per chat. Jobs get a priority: a worker's dispatch message is
claimed ahead of the day's digests and reminders.

Revision ID: 0020
Revises: 0018
Create Date: 2026-12-07 00:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0020'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_bucket",
        sa.Column("key", sa.String(length=96), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("priority")
    op.drop_table("send_bucket")
