"""Login throttling: failed logins slow down; nothing is ever locked.

Every failed login is an audit row (``console.login_failed``: account, address, and the
trusted browser it came from, if any), so the counting holds across restarts and every
instance. An attempt is judged by *lanes*; each lets a few failures pass, then makes the
next attempt wait ``base · 2^k`` seconds after the last failure (k = failures beyond the
free ones, at most ``max_delay_seconds``). While a lane waits the password is not checked.

    pair      one account from one address (someone mistyping, or one guesser);
              a success of that account from that address starts it again
    address   spraying: failures from one address that touch many account names; every
              attempt from there waits, for any account
    account   distributed guessing: many failures on one account from anywhere; every
              attempt on it waits
    device    a trusted browser (OWASP's "device cookie": a random token set at a
              successful login, valid ``device_trust_days`` for that account) is judged
              by its own failures only, so neither a sprayer behind the office's NAT nor a
              guesser of the admin's name slows down a colleague who has logged in there before

Attempts without a device cookie go through the pair, address and account lanes; the
longest wait wins. An admin clears a lane (an audited ``console.login_unthrottle`` row):
the failures it covers, before it, count no more.

The rules are ``[console.login]`` in rules.toml.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, text
from sqlmodel import Session, select

from core.people import audit
from core.people.models import AuditEntry
from core.platform.clock import utcnow

FAILED = "console.login_failed"
SUCCEEDED = "console.login"
CLEARED = "console.login_unthrottle"
TRUSTED = "console.device_trust"
DEVICE_TARGET = "console_device"
THROTTLE_TARGET = "login_throttle"
# A device cookie holds the tokens of the last few accounts that logged in with that browser.
DEVICE_TOKENS_PER_COOKIE = 4
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
# The admin page reads at most this many recent failures (a flood must not stall the page).
LIST_LIMIT = 20_000


@dataclass(frozen=True)
class Policy:
    window: timedelta
    base_seconds: float
    max_seconds: float
    free_per_pair: int
    spray_accounts: int
    free_per_account: int
    free_per_device: int
    device_trust: timedelta

    @classmethod
    def from_rules(cls, rules: dict) -> Policy:
        return cls(
            window=timedelta(minutes=float(rules["window_minutes"])),
            base_seconds=float(rules["base_delay_seconds"]),
            max_seconds=float(rules["max_delay_seconds"]),
            free_per_pair=int(rules["free_failures_per_pair"]),
            spray_accounts=int(rules["spray_accounts_per_address"]),
            free_per_account=int(rules["free_failures_per_account"]),
            free_per_device=int(rules["free_failures_per_device"]),
            device_trust=timedelta(days=float(rules["device_trust_days"])),
        )

    def delay(self, beyond: int) -> timedelta:
        """The wait after the failure that is ``beyond`` failures past the free ones (0: the first)."""
        return timedelta(seconds=min(self.max_seconds, self.base_seconds * 2 ** min(beyond, 40)))


@dataclass(frozen=True)
class Failure:
    id: int
    at: datetime
    account: str
    address: str
    device: str | None  # the trusted browser it came from


@dataclass(frozen=True)
class Throttle:
    kind: str  # pair, address, account, device
    account: str | None  # None: any account (address lane)
    address: str | None  # None: any address (account lane)
    failures: int
    wait_until: datetime
    device: str | None = None

    def seconds_left(self, now: datetime) -> int:
        return max(0, int(-(-(self.wait_until - now).total_seconds() // 1)))  # rounded up


# ---- device cookies ----------------------------------------------------------------------

def device_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def device_id(digest: str) -> str:
    """What failure rows and the admin page show of a trusted browser (not enough to forge it)."""
    return digest[:16]


def cookie_tokens(cookie: str | None) -> list[str]:
    tokens = [t for t in (cookie or "").split(".") if _TOKEN.match(t)]
    return tokens[:DEVICE_TOKENS_PER_COOKIE]


def trusted_accounts(session: Session, tokens: Sequence[str], policy: Policy,
                     now: datetime) -> dict[str, tuple[str, datetime]]:
    """token → (the account it was issued to, when), for the tokens of a cookie still valid."""
    if not tokens:
        return {}
    by_digest = {device_digest(t): t for t in tokens}
    rows = session.exec(select(AuditEntry.target_id, AuditEntry.detail, AuditEntry.at).where(
        AuditEntry.target_type == DEVICE_TARGET, AuditEntry.target_id.in_(list(by_digest)),
        AuditEntry.action == TRUSTED, AuditEntry.at >= now - policy.device_trust)).all()
    return {by_digest[digest]: (str((detail or {}).get("account", "")), at) for digest, detail, at in rows}


def trust_device(session: Session, token: str, account: str, address: str) -> None:
    audit.record(session, actor=f"console:{account}", action=TRUSTED, target_type=DEVICE_TARGET,
                 target_id=device_digest(token), detail={"account": account}, remote=address)


# ---- one checked attempt per account at a time ----------------------------------------------

_checking: set[str] = set()
_checking_guard = threading.Lock()


def advisory_key(lane: str) -> int:
    return int.from_bytes(hashlib.sha256(f"gridline-login:{lane}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def alone_on(session: Session, lane: str) -> Iterator[bool]:
    """Whether this is the only attempt in ``lane`` (an account name; for a trusted browser,
    the account and the browser) being judged and checked right now.
    Without it, parallel attempts would all be judged against the same count of failures
    (as many guesses at once as there are database threads). In this process a set of
    names; across instances on PostgreSQL a transaction-level advisory lock, held until
    the attempt's failure row is committed. The one that does not get it is told to wait a
    second, without waiting here (a flood must not hold the database threads)."""
    with _checking_guard:
        if lane in _checking:
            yield False
            return
        _checking.add(lane)
    try:
        if session.get_bind().dialect.name == "postgresql" and not session.execute(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": advisory_key(lane)}).scalar():
            yield False
            return
        yield True
    finally:
        with _checking_guard:
            _checking.discard(lane)


# ---- reading the trail -------------------------------------------------------------------

@dataclass
class Trail:
    failures: list[Failure]
    clears: list[tuple[int, str | None, str | None]]  # (id, account or None, address or None)
    # The newest success of an account from an address (no trusted browser), and with a browser.
    pair_success: dict[tuple[str, str], int]
    device_success: dict[tuple[str, str], int]

    def cleared(self, f: Failure) -> bool:
        return any(cid > f.id and (acc is None or acc == f.account) and (addr is None or addr == f.address)
                   for cid, acc, addr in self.clears)


def read_trail(session: Session, since: datetime, *, account: str | None = None, address: str | None = None,
               limit: int | None = None) -> Trail:
    """The failures of the window that concern ``account`` or ``address`` (both None: all),
    with the clears and successes that end them."""
    stmt = select(AuditEntry.id, AuditEntry.at, AuditEntry.target_id, AuditEntry.remote, AuditEntry.detail).where(
        AuditEntry.action == FAILED, AuditEntry.at >= since)
    if account is not None or address is not None:
        stmt = stmt.where(or_(AuditEntry.target_id == account, AuditEntry.remote == address))
    stmt = stmt.order_by(AuditEntry.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    failures = [Failure(i, at, acc or "", addr or "", (detail or {}).get("device"))
                for i, at, acc, addr, detail in session.exec(stmt).all()]
    failures.reverse()
    clears = [(i, (d or {}).get("account"), (d or {}).get("address")) for i, d in session.exec(
        select(AuditEntry.id, AuditEntry.detail).where(AuditEntry.action == CLEARED, AuditEntry.at >= since)).all()]
    ok = select(AuditEntry.id, AuditEntry.target_id, AuditEntry.remote, AuditEntry.detail).where(
        AuditEntry.action == SUCCEEDED, AuditEntry.at >= since)
    if account is not None:
        ok = ok.where(AuditEntry.target_id == account)
    pair_success: dict[tuple[str, str], int] = {}
    device_success: dict[tuple[str, str], int] = {}
    for i, acc, addr, detail in session.exec(ok).all():
        device = (detail or {}).get("device")
        key, book = ((acc or "", device), device_success) if device else ((acc or "", addr or ""), pair_success)
        book[key] = max(book.get(key, 0), i)
    return Trail(failures, clears, pair_success, device_success)


# ---- judging -----------------------------------------------------------------------------

def _lane(kind: str, failures: list[Failure], free: int, policy: Policy, *, account: str | None,
          address: str | None, device: str | None = None) -> Throttle | None:
    if len(failures) < free or not failures or free < 0:
        return None
    last = failures[-1]
    return Throttle(kind, account, address, len(failures), last.at + policy.delay(len(failures) - free), device)


def _spray(failures: list[Failure], policy: Policy, address: str) -> Throttle | None:
    """Waits start at the failure that brings the address's distinct account names to the
    threshold; each failure after it doubles the wait."""
    names: set[str] = set()
    beyond = -1
    for f in failures:
        if beyond >= 0:
            beyond += 1
            continue
        names.add(f.account)
        if len(names) >= policy.spray_accounts:
            beyond = 0
    if beyond < 0:
        return None
    return Throttle("address", None, address, len(failures), failures[-1].at + policy.delay(beyond))


def pair_throttle(trail: Trail, policy: Policy, account: str, address: str) -> Throttle | None:
    reset = trail.pair_success.get((account, address), 0)
    mine = [f for f in trail.failures if f.device is None and f.account == account and f.address == address
            and f.id > reset and not trail.cleared(f)]
    return _lane("pair", mine, policy.free_per_pair, policy, account=account, address=address)


def address_throttle(trail: Trail, policy: Policy, address: str) -> Throttle | None:
    mine = [f for f in trail.failures if f.device is None and f.address == address and not trail.cleared(f)]
    return _spray(mine, policy, address)


def account_throttle(trail: Trail, policy: Policy, account: str) -> Throttle | None:
    mine = [f for f in trail.failures if f.device is None and f.account == account and not trail.cleared(f)]
    return _lane("account", mine, policy.free_per_account, policy, account=account, address=None)


def device_throttle(trail: Trail, policy: Policy, account: str, device: str) -> Throttle | None:
    reset = trail.device_success.get((account, device), 0)
    mine = [f for f in trail.failures if f.device == device and f.account == account and f.id > reset
            and not trail.cleared(f)]
    lane = _lane("device", mine, policy.free_per_device, policy, account=account, address=None, device=device)
    if lane is not None and mine:
        return Throttle("device", account, mine[-1].address, lane.failures, lane.wait_until, device)
    return lane


def longest(throttles: Iterable[Throttle | None], now: datetime) -> Throttle | None:
    waiting = [t for t in throttles if t is not None and t.wait_until > now]
    return max(waiting, key=lambda t: t.wait_until, default=None)


def judge(session: Session, policy: Policy, account: str, address: str, device: str | None) -> Throttle | None:
    """The wait that applies to this attempt now, or None: it may be checked."""
    now = utcnow()
    trail = read_trail(session, now - policy.window, account=account, address=address)
    if device is not None:
        return longest([device_throttle(trail, policy, account, device)], now)
    return longest([pair_throttle(trail, policy, account, address), address_throttle(trail, policy, address),
                    account_throttle(trail, policy, account)], now)


def current_throttles(session: Session, policy: Policy) -> list[Throttle]:
    """Every lane that makes attempts wait now (for the admin page), longest wait first."""
    now = utcnow()
    trail = read_trail(session, now - policy.window, limit=LIST_LIMIT)
    lanes: list[Throttle | None] = []
    pairs = {(f.account, f.address) for f in trail.failures if f.device is None}
    lanes += [pair_throttle(trail, policy, a, r) for a, r in sorted(pairs)]
    lanes += [address_throttle(trail, policy, r) for r in sorted({r for _, r in pairs})]
    lanes += [account_throttle(trail, policy, a) for a in sorted({a for a, _ in pairs})]
    devices = {(f.account, f.device) for f in trail.failures if f.device is not None}
    lanes += [device_throttle(trail, policy, a, d) for a, d in sorted(devices)]
    waiting = [t for t in lanes if t is not None and t.wait_until > now]
    return sorted(waiting, key=lambda t: t.wait_until, reverse=True)


def clear(session: Session, *, account: str | None, address: str | None, actor: str, remote: str | None) -> None:
    """Forget the failures of ``account`` (None: any) from ``address`` (None: any) so far."""
    if account is None and address is None:
        raise ValueError("name an account, an address or both")
    audit.record(session, actor=actor, action=CLEARED, target_type=THROTTLE_TARGET,
                 target_id=f"{account or '*'}@{address or '*'}", detail={"account": account, "address": address},
                 remote=remote)
