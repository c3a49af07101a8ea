"""survey: caller_case_id — the follow-up of a merged duplicate's caller, on the surviving case

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 12:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0024'
down_revision: str | None = '0023'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch: SQLite adds a foreign key only by rebuilding the table (survey has no expression
    # index to lose). Every existing survey asked its own case's caller: NULL.
    with op.batch_alter_table('survey', schema=None) as batch_op:
        batch_op.add_column(sa.Column('caller_case_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_survey_caller_case_id'), ['caller_case_id'], unique=False)
        batch_op.create_foreign_key('fk_survey_caller_case_id_case', 'case', ['caller_case_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('survey', schema=None) as batch_op:
        batch_op.drop_constraint('fk_survey_caller_case_id_case', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_survey_caller_case_id'))
        batch_op.drop_column('caller_case_id')
