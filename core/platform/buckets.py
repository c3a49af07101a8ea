"""Token buckets in the database, shared by every process that sends on the same account.

A bucket (``send_bucket`` row) holds up to ``burst`` tokens and gains ``rate`` a second;
sending one message takes one token from each bucket it is counted in (the bot's and the
chat's). ``take`` takes from all of them or from none, in one transaction: each bucket is
one atomic upsert (``INSERT … ON CONFLICT DO UPDATE … WHERE there is a token RETURNING``),
so two processes can never both spend the last token. Buckets are taken in the order
given, the widest (the bot's) last, so concurrent takers lock rows in one order and never
deadlock, and the hot row is held only for the rest of a short transaction.

The clock is the database's on PostgreSQL (instances on several machines agree on it);
on SQLite, whose database one machine owns, it is this machine's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, text

from core.platform.db import session_scope


@dataclass(frozen=True)
class Bucket:
    key: str  # e.g. "tg:bot:7012345678", "tg:chat:6000000001"
    rate: float  # tokens gained a second
    burst: float  # tokens at most (1 = evenly spaced, never two at once)


@dataclass(frozen=True)
class Taken:
    """What ``take`` did: ``ok`` (a token from every bucket), else how long to wait and
    which bucket was short (its key)."""

    ok: bool
    wait: float = 0.0
    short: str = ""


_NOW = {
    "postgresql": "extract(epoch from statement_timestamp())",
    "sqlite": ":now",
}
_LEAST = {"postgresql": "LEAST", "sqlite": "MIN"}

_TAKE = """
INSERT INTO send_bucket (key, tokens, stamp) VALUES (:key, :burst - 1, {now})
ON CONFLICT (key) DO UPDATE
   SET tokens = {least}(:burst, send_bucket.tokens + ({now} - send_bucket.stamp) * :rate) - 1,
       stamp = {now}
 WHERE {least}(:burst, send_bucket.tokens + ({now} - send_bucket.stamp) * :rate) >= 1
RETURNING tokens
"""

_LOOK = """
SELECT {least}(:burst, tokens + ({now} - stamp) * :rate) FROM send_bucket WHERE key = :key
"""


def _sql(engine: Engine, template: str) -> str:
    dialect = engine.dialect.name
    return template.format(now=_NOW.get(dialect, ":now"), least=_LEAST.get(dialect, "MIN"))


def take(engine: Engine, buckets: list[Bucket]) -> Taken:
    """One token from each of ``buckets``, or none at all (then: how long until the short
    bucket has one; nothing was taken from the others)."""
    take_sql, look_sql = _sql(engine, _TAKE), _sql(engine, _LOOK)
    with session_scope(engine) as session:
        for bucket in buckets:
            params = {"key": bucket.key, "rate": bucket.rate, "burst": bucket.burst, "now": time.time()}
            if session.execute(text(take_sql), params).first() is not None:
                continue
            available = session.execute(text(look_sql), params).scalar()
            session.rollback()  # the tokens taken from the buckets before this one go back
            missing = 1.0 - float(available if available is not None else 0.0)
            return Taken(False, max(missing, 0.0) / bucket.rate, bucket.key)
    return Taken(True)


def forget(engine: Engine, prefix: str, older_than_s: float) -> int:
    """Delete the buckets under ``prefix`` untouched for ``older_than_s`` seconds (a full
    bucket is the same as no row)."""
    sql = _sql(engine, "DELETE FROM send_bucket WHERE key LIKE :prefix AND stamp < {now} - :age")
    with session_scope(engine) as session:
        result = session.execute(text(sql), {"prefix": prefix + "%", "age": older_than_s, "now": time.time()})
        return result.rowcount or 0
