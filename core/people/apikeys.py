"""Keys other systems file Open311 requests with. A key is 32 random bytes shown once;
only its SHA-256 is kept (a key is a long random secret, so a fast hash is enough and a
copy of the database files nothing). Making and disabling a key is an audit row."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import event, update
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, select

from core.errors import InvalidInput, NotFound
from core.people import audit
from core.people.models import ApiKey
from core.platform.clock import utcnow
from core.platform.rules import load_rules

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
        session.info[_DISABLED_HERE] = True
        audit.record(session, actor=actor, action="apikey.disable", target_type="apikey", target_id=name)
    return row


@dataclass(frozen=True)
class VerifiedKey:
    """An enabled key as a request needs it: who is calling."""

    id: int
    name: str


@dataclass
class _Trusted:
    key: VerifiedKey
    verified_at: datetime
    last_used_at: datetime | None


# Keys this process verified, by digest. A client sends the same key with every request; its
# row (and an ORM object) per request was a statement of its own on every Open311 POST.
_TRUSTED: dict[str, _Trusted] = {}
_DISABLED_HERE = "gridline.apikeys.disabled"  # session.info: this transaction disabled a key
_ROW = select(ApiKey.id, ApiKey.name, ApiKey.disabled_at, ApiKey.last_used_at)


def check_key(session: Session, key: str | None) -> VerifiedKey | None:
    """The enabled key this is, or None. Marks when it was last used (at most once a minute).

    A key verified less than ``[open311] key_trusted_seconds`` ago is not read again. A key
    disabled by this process is forgotten when that transaction commits (refused at once);
    one disabled by another process is read again, and refused, once its trust runs out."""
    if not key or len(key) > 200:
        return None
    hashed = digest(key)
    now = utcnow()
    trusted = _TRUSTED.get(hashed)
    if trusted is None or not 0 <= (now - trusted.verified_at).total_seconds() < _trusted_seconds():
        row = session.execute(_ROW.where(ApiKey.key_hash == hashed)).first()
        if row is None or row.disabled_at is not None:
            _TRUSTED.pop(hashed, None)
            return None
        trusted = _Trusted(VerifiedKey(row.id, row.name), now, row.last_used_at)
        _TRUSTED[hashed] = trusted
    if trusted.last_used_at is None or (now - trusted.last_used_at).total_seconds() > 60:
        session.execute(update(ApiKey).where(ApiKey.id == trusted.key.id).values(last_used_at=now))
        trusted.last_used_at = now
    return trusted.key


def forget_verified() -> None:
    """Trust no key verified before (a test that empties its database)."""
    _TRUSTED.clear()


def _trusted_seconds() -> float:
    return float(load_rules()["open311"]["key_trusted_seconds"])


@event.listens_for(OrmSession, "after_commit")
def _forget_after_disabling(session: OrmSession) -> None:
    # After the commit, not before: a request verifying the key meanwhile would have read it
    # still enabled and trusted it again.
    if session.info.pop(_DISABLED_HERE, False):
        forget_verified()


@event.listens_for(OrmSession, "after_rollback")
def _nothing_disabled(session: OrmSession) -> None:
    session.info.pop(_DISABLED_HERE, None)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(ApiKey.name)).all())
