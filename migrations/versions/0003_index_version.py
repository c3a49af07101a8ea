"""index_version: one counter per cache, bumped with every change to grids, the gazetteer,
households or the calendar, so each process rebuilds its routing indexes when it moves

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 13:00:00
"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        'indexversion',
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('changed_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    op.bulk_insert(table, [{'name': 'routing', 'version': 0, 'changed_at': now}])


def downgrade() -> None:
    op.drop_table('indexversion')
