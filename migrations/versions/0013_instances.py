"""instances that share nothing but the database: Instance leases, StreamSegment handover, CallSession.instance_id

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-12 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0013'
# Only this line changes when the migration is chained after another one.
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'instance',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('host', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('heartbeat_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_instance_heartbeat_at'), 'instance', ['heartbeat_at'], unique=False)
    op.create_table(
        'streamsegment',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('call_sid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('segment', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('instance_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('audio_path', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column('duration', sa.Float(), nullable=False),
        sa.Column('speech_s', sa.Float(), nullable=False),
        sa.Column('transcript', sa.JSON(), nullable=True),
        sa.Column('final', sa.Boolean(), nullable=False),
        sa.Column('live', sa.Boolean(), nullable=False),
        sa.Column('ended_by', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column('audio_closed', sa.Boolean(), nullable=False),
        sa.Column('done', sa.Boolean(), nullable=False),
        sa.Column('end_requested', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('call_sid', 'segment', name='uq_streamsegment_turn'),
    )
    op.create_index(op.f('ix_streamsegment_updated_at'), 'streamsegment', ['updated_at'], unique=False)
    # A plain ALTER (no batch copy of the table): SQLite adds a column in place.
    op.add_column('callsession', sa.Column('instance_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
    unsettled = sa.text("case_id IS NULL AND outcome IS NULL")
    op.create_index('ix_callsession_unsettled', 'callsession', ['updated_at'], unique=False,
                    postgresql_where=unsettled, sqlite_where=unsettled)


def downgrade() -> None:
    op.drop_index('ix_callsession_unsettled', table_name='callsession')
    op.drop_column('callsession', 'instance_id')  # SQLite 3.35+ drops a plain column in place
    op.drop_index(op.f('ix_streamsegment_updated_at'), table_name='streamsegment')
    op.drop_table('streamsegment')
    op.drop_index(op.f('ix_instance_heartbeat_at'), table_name='instance')
    op.drop_table('instance')
