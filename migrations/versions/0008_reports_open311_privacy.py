"""reports, Open311 and privacy: Case.shredded_at, API keys, indexes for trends, surveys and event lists

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTERs, no batch mode: SQLite adds a nullable column in place, and a batch copy
    # of "case" would lose its expression index (ix_case_description_trgm).
    op.add_column('case', sa.Column('shredded_at', sa.DateTime(), nullable=True))
    op.create_index('ix_case_created_status', 'case', ['created_at', 'status'], unique=False)
    op.create_index('ix_case_closed_status', 'case', ['closed_at', 'status'], unique=False)
    op.create_index('ix_survey_created', 'survey', ['created_at'], unique=False)
    op.create_index('ix_caseevent_action_at', 'caseevent', ['action', 'at'], unique=False)
    op.create_table(
        'apikey',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('key_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('prefix', sqlmodel.sql.sqltypes.AutoString(length=12), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('disabled_at', sa.DateTime(), nullable=True),
        sa.Column('last_used_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('key_hash'),
        sa.UniqueConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('apikey')
    op.drop_index('ix_caseevent_action_at', table_name='caseevent')
    op.drop_index('ix_survey_created', table_name='survey')
    op.drop_index('ix_case_closed_status', table_name='case')
    op.drop_index('ix_case_created_status', table_name='case')
    op.drop_column('case', 'shredded_at')  # SQLite 3.35+ drops a plain column in place
