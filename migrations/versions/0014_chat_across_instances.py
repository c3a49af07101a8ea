"""chat across instances: the Telegram inbox in a table of its own with the chat of each update, and a version per chat

Before 0014 the inbox of accepted Telegram updates was ``channelstate`` rows (namespace
``tg_inbox``, key = update id) and an instance assumed that it had written every change of
a chat's dialog since it started. With several instances a chat's updates land on any of
them: ``chat_inbox`` keeps the chat of each update (so the instance that holds a chat takes
its earlier updates first, in order) and ``chat_head`` a version raised by every write of a
chat's state (so an instance reloads a chat only when another one changed it). Updates
still in the inbox move across, both ways.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-20 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INBOX_NAMESPACE = "tg_inbox"  # as chat/inbox.py kept it before 0014


def _chat_of(data: object) -> int | None:
    """The chat an update belongs to (its user's id when it has no chat), as PTB's
    ``effective_chat`` / ``effective_user`` find it, for the two kinds Gridline asks for."""
    if not isinstance(data, dict):
        return None
    for kind in ("message", "edited_message", "channel_post", "edited_channel_post"):
        chat = (data.get(kind) or {}).get("chat") or {}
        if isinstance(chat.get("id"), int):
            return chat["id"]
    query = data.get("callback_query") or {}
    chat = (query.get("message") or {}).get("chat") or {}
    if isinstance(chat.get("id"), int):
        return chat["id"]
    user = query.get("from") or {}
    return user["id"] if isinstance(user.get("id"), int) else None


def _state():
    return sa.table('channelstate', sa.column('namespace', sa.String), sa.column('key', sa.String),
                    sa.column('data', sa.JSON), sa.column('updated_at', sa.DateTime))


def _inbox():
    return sa.table('chat_inbox', sa.column('update_id', sa.BigInteger), sa.column('chat_id', sa.BigInteger),
                    sa.column('data', sa.JSON), sa.column('accepted_at', sa.DateTime),
                    sa.column('retry_at', sa.DateTime))


def upgrade() -> None:
    op.create_table(
        'chat_inbox',
        sa.Column('update_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('chat_id', sa.BigInteger(), nullable=True),
        sa.Column('data', sa.JSON(), nullable=True),
        sa.Column('accepted_at', sa.DateTime(), nullable=False),
        sa.Column('retry_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('update_id'),
    )
    op.create_index('ix_chat_inbox_chat', 'chat_inbox', ['chat_id', 'update_id'])
    op.create_table(
        'chat_head',
        sa.Column('chat_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('version', sa.BigInteger(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('chat_id'),
    )
    conn = op.get_bind()
    state, inbox = _state(), _inbox()
    rows = conn.execute(sa.select(state.c.key, state.c.data, state.c.updated_at)
                        .where(state.c.namespace == INBOX_NAMESPACE)).all()
    moved = [{"update_id": int(key), "chat_id": _chat_of(data), "data": data, "accepted_at": at, "retry_at": None}
             for key, data, at in rows if key.lstrip("-").isdigit()]
    if moved:
        conn.execute(inbox.insert(), moved)
    conn.execute(state.delete().where(state.c.namespace == INBOX_NAMESPACE))


def downgrade() -> None:
    conn = op.get_bind()
    state, inbox = _state(), _inbox()
    rows = conn.execute(sa.select(inbox.c.update_id, inbox.c.data, inbox.c.accepted_at)).all()
    if rows:
        conn.execute(state.insert(), [{"namespace": INBOX_NAMESPACE, "key": str(update_id), "data": data,
                                       "updated_at": at} for update_id, data, at in rows])
    op.drop_table('chat_head')
    op.drop_index('ix_chat_inbox_chat', table_name='chat_inbox')
    op.drop_table('chat_inbox')
