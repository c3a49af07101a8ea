"""the hotline's service figures (GB/T 33358-2016): when a call was answered, its transfer to a person

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 03:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0023'
down_revision: str | None = '0022'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIGURES_COLUMNS = ["answered_at", "transferred_at", "transfer_status", "outcome", "ended_at", "duration_s"]


def upgrade() -> None:
    with op.batch_alter_table("callsession") as batch:
        batch.add_column(sa.Column("answered_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("transferred_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("transfer_status", sa.String(length=16), nullable=True))
    # Calls taken before this revision: the greeting went out in the answer to the webhook
    # that created the row, so they were answered as they arrived (the wait is not known).
    op.execute("UPDATE callsession SET answered_at = started_at WHERE direction = 'inbound'")
    op.create_index("ix_callsession_direction_started", "callsession", ["direction", "started_at"],
                    postgresql_include=FIGURES_COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_callsession_direction_started", "callsession")
    with op.batch_alter_table("callsession") as batch:
        batch.drop_column("transfer_status")
        batch.drop_column("transferred_at")
        batch.drop_column("answered_at")
