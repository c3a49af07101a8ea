"""staff chats: workers' and departments' linked Telegram chats, and their invitations

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-03 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'staffchat',
        sa.Column('chat_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('worker_id', sa.Integer(), nullable=True),
        sa.Column('department_id', sa.Integer(), nullable=True),
        sa.Column('language', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column('via', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('linked_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['department_id'], ['department.id']),
        sa.ForeignKeyConstraint(['worker_id'], ['worker.id']),
        sa.PrimaryKeyConstraint('chat_id'),
    )
    with op.batch_alter_table('staffchat', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staffchat_department_id'), ['department_id'], unique=True)
        batch_op.create_index(batch_op.f('ix_staffchat_worker_id'), ['worker_id'], unique=True)

    op.create_table(
        'staffinvite',
        sa.Column('nonce', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('worker_id', sa.Integer(), nullable=True),
        sa.Column('department_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('used_at', sa.DateTime(), nullable=True),
        sa.Column('used_by_chat', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(['department_id'], ['department.id']),
        sa.ForeignKeyConstraint(['worker_id'], ['worker.id']),
        sa.PrimaryKeyConstraint('nonce'),
    )
    with op.batch_alter_table('staffinvite', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staffinvite_department_id'), ['department_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_staffinvite_worker_id'), ['worker_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('staffinvite', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staffinvite_worker_id'))
        batch_op.drop_index(batch_op.f('ix_staffinvite_department_id'))
    op.drop_table('staffinvite')
    with op.batch_alter_table('staffchat', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staffchat_worker_id'))
        batch_op.drop_index(batch_op.f('ix_staffchat_department_id'))
    op.drop_table('staffchat')
