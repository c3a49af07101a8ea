"""case: confidential (保密处理) — who the resident is, kept from all but operators and admins

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 03:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0022'
down_revision: str | None = '0021'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # add_column, not batch: a batch rebuild of "case" on SQLite would lose its expression
    # index (ix_case_description_trgm). Every existing case is not confidential.
    op.add_column('case', sa.Column('confidential', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column('case', 'confidential')  # SQLite 3.35+ drops a plain column in place
