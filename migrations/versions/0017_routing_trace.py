"""case.routing_trace: why routing chose the grid, as codes with parameters (issue 22)

Old rows keep their free-text ``routing_reason``; the forms routing wrote in English
(point, boundary, registered household) become a trace too, so every edge says them in its
reader's language. Gazetteer reasons stay as they were written: the edges show them as text.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 00:45:00
"""
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written by core/places/routing.py before traces (see git history); exact forms only.
_OLD_FORMS = (
    (re.compile(r"point in polygon (\S+)"), lambda m: [{"code": "point", "params": {"grid": m[1]}}]),
    (re.compile(r"point on boundary of (\S+) \(also (.+)\); lowest code"),
     lambda m: [{"code": "point_boundary", "params": {"grid": m[1], "others": m[2]}}]),
    (re.compile(r"registered household (\S+)"), lambda m: [{"code": "household", "params": {"household": m[1]}}]),
    (re.compile(r"registered household (\S+) \(number also in (\d+) other grids\)"),
     lambda m: [{"code": "household_shared", "params": {"household": m[1], "others": int(m[2])}}]),
)


def trace_of(reason: str | None) -> list[dict] | None:
    for pattern, build in _OLD_FORMS:
        m = pattern.fullmatch(reason or "")
        if m:
            return build(m)
    return None


def upgrade() -> None:
    op.add_column("case", sa.Column("routing_trace", sa.JSON(), nullable=True))
    case = sa.table("case", sa.column("id", sa.Integer), sa.column("routing_reason", sa.String),
                    sa.column("routing_trace", sa.JSON))
    bind = op.get_bind()
    rows = bind.execute(sa.select(case.c.id, case.c.routing_reason).where(
        sa.or_(case.c.routing_reason.like("point %"), case.c.routing_reason.like("registered household %")))).all()
    for case_id, reason in rows:
        trace = trace_of(reason)
        if trace is not None:
            bind.execute(case.update().where(case.c.id == case_id).values(routing_trace=trace, routing_reason=None))


def downgrade() -> None:
    # A trace is said in English again, as routing_reason was before.
    case = sa.table("case", sa.column("id", sa.Integer), sa.column("routing_reason", sa.String),
                    sa.column("routing_trace", sa.JSON))
    bind = op.get_bind()
    english = {
        "point": "point in polygon {grid}",
        "point_boundary": "point on boundary of {grid} (also {others}); lowest code",
        "household": "registered household {household}",
        "household_shared": "registered household {household} (number also in {others} other grids)",
    }
    for case_id, trace in bind.execute(sa.select(case.c.id, case.c.routing_trace).where(
            case.c.routing_trace.is_not(None))).all():
        words = []
        for step in trace or []:
            template = english.get(step.get("code"))
            words.append(template.format(**step.get("params", {})) if template else str(step.get("code")))
        bind.execute(case.update().where(case.c.id == case_id).values(routing_reason="; ".join(words)[:256]))
    op.drop_column("case", "routing_trace")  # SQLite 3.35+ drops a plain column in place
