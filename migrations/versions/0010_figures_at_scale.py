"""figures at scale: survey outcomes on the case, covering and per-day indexes for the dashboard, reports and scores

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 19:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIGURES_COLUMNS = ["channel", "category_id", "grid_id", "worker_id", "department_id", "dispatched_at",
                   "responded_on_time", "resolved_on_time", "surveys_answered", "surveys_satisfied"]
# (index, table, key columns, columns carried on PostgreSQL)
COVERING = [
    ("ix_case_created_status", "case", ["created_at", "status"], FIGURES_COLUMNS),
    ("ix_case_closed_status", "case", ["closed_at", "status"], ["category_id", "grid_id", "worker_id",
                                                               "department_id"]),
    ("ix_case_status_grid", "case", ["status", "grid_id"], ["response_due", "resolution_due", "category_id",
                                                            "worker_id", "department_id"]),
    ("ix_caseevent_action_at", "caseevent", ["action", "at"], ["case_id", "id"]),
    ("ix_caseevent_case_at", "caseevent", ["case_id", "at"], ["id", "action", "on_time"]),
]
# The daily trend's counts (index, column, the predicate as core.cases.models writes it)
PER_DAY = [
    ("ix_case_received_day", "created_at", "status <> 'merged'"),
    ("ix_case_closed_day", "closed_at", "status = 'closed'"),
]


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    op.add_column('case', sa.Column('surveys_answered', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('case', sa.Column('surveys_satisfied', sa.Integer(), nullable=False, server_default='0'))
    # The answers given so far, counted the way core.reporting.figures counted them from the surveys.
    op.execute(
        'UPDATE "case" SET surveys_answered = s.answered, surveys_satisfied = s.satisfied FROM ('
        " SELECT case_id, count(*) AS answered,"
        " sum(CASE WHEN satisfied IN ('satisfied', 'basically') THEN 1 ELSE 0 END) AS satisfied"
        " FROM survey WHERE status = 'answered' GROUP BY case_id) AS s"
        ' WHERE "case".id = s.case_id')
    if _postgres():  # SQLite has no INCLUDE: its indexes stay as they are
        for name, table, keys, carried in COVERING:
            op.drop_index(name, table_name=table)
            op.create_index(name, table, keys, postgresql_include=carried)
    for name, column, predicate in PER_DAY:
        op.create_index(name, 'case', [column], postgresql_where=sa.text(predicate),
                        sqlite_where=sa.text(predicate))


def downgrade() -> None:
    for name, _, _ in PER_DAY:
        op.drop_index(name, table_name='case')
    if _postgres():
        for name, table, keys, _ in COVERING:
            op.drop_index(name, table_name=table)
            op.create_index(name, table, keys)
    op.drop_column('case', 'surveys_satisfied')
    op.drop_column('case', 'surveys_answered')
