"""phone follow-up survey and progress SMS: SurveyCall, Resident.do_not_call, Resident.sms_opted_out_at

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTERs (no batch copy of the table): SQLite adds a column in place.
    op.add_column('resident', sa.Column('do_not_call', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column('resident', sa.Column('sms_opted_out_at', sa.DateTime(), nullable=True))
    op.create_table(
        'surveycall',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('survey_id', sa.Integer(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('token', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('call_sid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column('answered_by', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=True),
        sa.Column('result', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=True),
        sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=True),
        sa.Column('intent_at', sa.DateTime(), nullable=False),
        sa.Column('placed_at', sa.DateTime(), nullable=True),
        sa.Column('ended_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['survey_id'], ['survey.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('survey_id', 'attempt', name='uq_surveycall_attempt'),
        sa.UniqueConstraint('token'),
        sa.UniqueConstraint('call_sid'),
    )
    op.create_index(op.f('ix_surveycall_survey_id'), 'surveycall', ['survey_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_surveycall_survey_id'), table_name='surveycall')
    op.drop_table('surveycall')
    op.drop_column('resident', 'sms_opted_out_at')  # SQLite 3.35+ drops a plain column in place
    op.drop_column('resident', 'do_not_call')
