"""Keys other systems file Open311 requests with. A key is 32 random bytes shown once;
only its SHA-256 is kept (a key is a long random secret, so a fast hash is enough and a
copy of the database files nothing). Making and disabling a key is an audit row."""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlmodel import Session, select

from core.errors import InvalidInput, NotFound
from core.people import audit
from core.people.models import ApiKey
from core.platform.clock import utcnow

PREFIX = "gl_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def add_key(session: Session, name: str, *, actor: str) -> tuple[ApiKey, str]:
    """A new key for ``name``: (row, the key itself, to be shown once)."""
    name = (name or "").strip()
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"a key's name is 1-64 letters, digits, dots, dashes or underscores, not {name!r}",
                           code="apikey.bad_name", name=name)
    if session.exec(select(ApiKey).where(ApiKey.name == name)).first() is not None:
        raise InvalidInput(f"there is already a key named {name!r}", code="apikey.exists", name=name)
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, key_hash=digest(key), prefix=key[:10])
    session.add(row)
    session.flush()
    audit.record(session, actor=actor, action="apikey.add", target_type="apikey", target_id=name,
                 detail={"prefix": row.prefix})
    return row, key


def disable_key(session: Session, name: str, *, actor: str) -> ApiKey:
    row = session.exec(select(ApiKey).where(ApiKey.name == name)).first()
    if row is None:
        raise NotFound(f"no key named {name!r}", code="apikey.not_found", name=name)
    if row.disabled_at is None:
        row.disabled_at = utcnow()
        session.add(row)
        audit.record(session, actor=actor, action="apikey.disable", target_type="apikey", target_id=name)
    return row


def check_key(session: Session, key: str | None) -> ApiKey | None:
    """The enabled key this is, or None. Marks when it was last used (at most once a minute)."""
    if not key or len(key) > 200:
        return None
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest(key))).first()
    if row is None or row.disabled_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
        session.add(row)
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(ApiKey.name)).all())
