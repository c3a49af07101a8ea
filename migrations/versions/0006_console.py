"""console: accounts, their grids, login sessions; indexes for triage, search and queues

Revision ID: 0006
Revises: 0002
Create Date: 2026-12-01 14:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from core.cases.models import TRIAGE_INDEX_PREDICATE

revision: str = '0006'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'consoleuser',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('password_hash', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('worker_id', sa.Integer(), nullable=True),
        sa.Column('department_id', sa.Integer(), nullable=True),
        sa.Column('language', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column('disabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('last_login_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['department_id'], ['department.id']),
        sa.ForeignKeyConstraint(['worker_id'], ['worker.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'consoleusergrid',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('grid_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['grid_id'], ['grid.id']),
        sa.ForeignKeyConstraint(['user_id'], ['consoleuser.id']),
        sa.PrimaryKeyConstraint('user_id', 'grid_id'),
    )
    op.create_table(
        'consolesession',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('data', sa.JSON(), nullable=True),
        sa.Column('remote', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['consoleuser.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_consolesession_user_id', 'consolesession', ['user_id'])
    op.create_index('ix_consolesession_expires_at', 'consolesession', ['expires_at'])

    predicate = sa.text(TRIAGE_INDEX_PREDICATE)
    op.create_index('ix_case_triage', 'case', ['created_at', 'id'],
                    postgresql_where=predicate, sqlite_where=predicate)
    op.create_index('ix_case_contact_phone', 'case', ['contact_phone'])
    op.create_index('ix_case_department_status', 'case', ['department_id', 'status'])
    op.create_index('ix_case_grid_created', 'case', ['grid_id', 'created_at'])
    op.create_index('ix_case_resident_created', 'case', ['resident_id', 'created_at'])
    if op.get_bind().dialect.name == 'postgresql':
        # pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it.
        op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
        op.execute('CREATE INDEX ix_case_description_trgm ON "case" USING gin (lower(description) gin_trgm_ops)')
    else:
        op.execute('CREATE INDEX ix_case_description_trgm ON "case" (lower(description))')
    op.create_index('ix_survey_channel_status', 'survey', ['channel', 'status'])
    op.create_index('ix_auditentry_action_remote_at', 'auditentry', ['action', 'remote', 'at'])


def downgrade() -> None:
    op.drop_index('ix_auditentry_action_remote_at', table_name='auditentry')
    op.drop_index('ix_survey_channel_status', table_name='survey')
    op.drop_index('ix_case_description_trgm', table_name='case')
    op.drop_index('ix_case_resident_created', table_name='case')
    op.drop_index('ix_case_grid_created', table_name='case')
    op.drop_index('ix_case_department_status', table_name='case')
    op.drop_index('ix_case_contact_phone', table_name='case')
    op.drop_index('ix_case_triage', table_name='case')
    op.drop_index('ix_consolesession_expires_at', table_name='consolesession')
    op.drop_index('ix_consolesession_user_id', table_name='consolesession')
    op.drop_table('consolesession')
    op.drop_table('consoleusergrid')
    op.drop_table('consoleuser')
