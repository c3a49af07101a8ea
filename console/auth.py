"""Accounts, passwords, login sessions and login rate limiting.

* Passwords: argon2id (argon2-cffi), rehashed on login when the parameters change.
* Sessions: aiohttp-session with a storage of our own in the database (``ConsoleSession``).
  The cookie holds 32 random bytes; the row is keyed by their SHA-256. Server-side
  sessions because logging out, disabling an account or changing its role must take
  effect on the next request, on every instance behind a load balancer, with no shared
  secret key to distribute and rotate.
* Throttling: failed logins are audit rows (``console.login_failed``); an attempt waits,
  unchecked, while one of its lanes (account and address, address, account, or the trusted
  browser's own) has had too many: ``console.throttle`` and rules.toml ``[console.login]``.
  Nothing locks: the wait doubles with each failure, up to a cap.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web
from aiohttp_session import AbstractStorage, Session
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func
from sqlmodel import Session as DbSession
from sqlmodel import select

from console import db, throttle
from console.access import ROLES, Principal, console_rules, principal_for
from console.config import get_console_settings
from console.i18n import languages
from console.models import ConsoleSession, ConsoleUser, ConsoleUserGrid
from console.throttle import Policy, Throttle
from core.errors import InvalidInput, NotFound
from core.people import audit
from core.people.models import Department, Worker
from core.places.models import Grid
from core.platform.clock import utcnow

COOKIE = "gridline_console"
# A trusted browser's tokens (console.throttle); sent only to the login page.
DEVICE_COOKIE = "gridline_device"
PRINCIPAL = web.RequestKey("console_principal", object)
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so a wrong name costs the same
    time; made at the first login, not at import (a hash costs every process ~0.2 s)."""
    return _hasher.hash(secrets.token_urlsafe(16))


MIN_PASSWORD = 10


def login_rules() -> dict:
    return console_rules()["login"]


# ---- accounts ----------------------------------------------------------------------------

def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters", code="console.user.short_password",
                           min=MIN_PASSWORD)
    return _hasher.hash(password)


def add_user(session: DbSession, name: str, password: str, role: str, *, grid_codes: list[str] | tuple = (),
             worker_code: str | None = None, department_code: str | None = None, language: str = "zh",
             actor: str = "cli") -> ConsoleUser:
    name = name.strip()
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        raise InvalidInput("a user name is 1 to 64 characters without spaces", code="console.user.bad_name")
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; one of {', '.join(ROLES)}", code="console.user.no_role", role=role)
    if session.exec(select(ConsoleUser.id).where(ConsoleUser.name == name)).first() is not None:
        raise InvalidInput(f"user {name} exists already", code="console.user.exists", name=name)
    worker = department = None
    if worker_code:
        worker = session.exec(select(Worker).where(Worker.code == worker_code)).first()
        if worker is None:
            raise NotFound(f"no worker {worker_code}", code="console.no_such", what="worker", item=worker_code)
    if department_code:
        department = session.exec(select(Department).where(Department.code == department_code)).first()
        if department is None:
            raise NotFound(f"no department {department_code}", code="console.no_such", what="department",
                               item=department_code)
    grids = []
    for code in grid_codes:
        grid = session.exec(select(Grid).where(Grid.code == code)).first()
        if grid is None:
            raise NotFound(f"no grid {code}", code="console.no_such", what="grid", item=code)
        grids.append(grid)
    if role == "worker" and worker is None and not grids:
        raise InvalidInput("a worker account needs --worker CODE or --grid CODE", code="console.user.worker_needs_owner")
    if role == "department" and department is None and not grids:
        raise InvalidInput("a department account needs --department CODE or --grid CODE",
                           code="console.user.department_needs_owner")
    if language not in languages():  # one console/locales/<lang>.toml each
        raise InvalidInput(f"language is one of {', '.join(languages())}", code="console.no_language",
                           language=language)
    user = ConsoleUser(name=name, password_hash=hash_password(password), role=role,
                       worker_id=worker.id if worker else None,
                       department_id=department.id if department else None, language=language)
    session.add(user)
    session.flush()
    for grid in grids:
        session.add(ConsoleUserGrid(user_id=user.id, grid_id=grid.id))
    audit.record(session, actor=actor, action="console.user_add", target_type="console_user", target_id=name,
                 detail={"role": role, "grids": list(grid_codes), "worker": worker_code,
                         "department": department_code})
    return user


def set_disabled(session: DbSession, name: str, disabled: bool, *, actor: str, remote: str | None = None) -> ConsoleUser:
    user = session.exec(select(ConsoleUser).where(ConsoleUser.name == name)).first()
    if user is None:
        raise NotFound(f"no user {name}", code="console.user.not_found", name=name)
    if user.disabled != disabled:
        user.disabled = disabled
        session.add(user)
        if disabled:  # logged out everywhere at once
            session.exec(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
        audit.record(session, actor=actor, action="console.user_disable" if disabled else "console.user_enable",
                     target_type="console_user", target_id=name, remote=remote)
    return user


def set_password(session: DbSession, name: str, password: str, *, actor: str) -> ConsoleUser:
    user = session.exec(select(ConsoleUser).where(ConsoleUser.name == name)).first()
    if user is None:
        raise NotFound(f"no user {name}", code="console.user.not_found", name=name)
    user.password_hash = hash_password(password)
    session.add(user)
    session.exec(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
    audit.record(session, actor=actor, action="console.user_password", target_type="console_user", target_id=name)
    return user


def count_users(session: DbSession) -> int:
    return int(session.exec(select(func.count()).select_from(ConsoleUser)).one())


# ---- where a request comes from ----------------------------------------------------------

def client_address(request: web.Request) -> str:
    """The peer address; behind a configured proxy, the nearest address in X-Forwarded-For
    that is not one of our proxies (a client can prepend anything it likes)."""
    peer = request.remote or ""
    nets = get_console_settings().proxy_networks()
    if not nets or not _in(peer, nets):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, nets):
            return hop[:64]
    return peer


def _in(address: str, nets) -> bool:  # noqa: ANN001
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in nets)


# ---- login -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoginResult:
    user: ConsoleUser | None
    # Set when the attempt was refused unchecked: what makes it wait, and for how long.
    throttle: Throttle | None = None
    retry_seconds: int = 0
    # The browser's new device cookie after a success (None: keep the one it has).
    device_cookie: str | None = None

    @property
    def limited(self) -> bool:
        return self.throttle is not None


def login_policy() -> Policy:
    return Policy.from_rules(login_rules())


def device_for(session: DbSession, name: str, cookie: str | None, policy: Policy) -> tuple[str | None, dict]:
    """The trusted-browser token of ``name`` in ``cookie`` (or None), and every valid token
    of the cookie with its account and age."""
    tokens = throttle.cookie_tokens(cookie)
    trusted = throttle.trusted_accounts(session, tokens, policy, utcnow())
    mine = next((tok for tok in tokens if tok in trusted and trusted[tok][0] == name), None)
    return mine, trusted


def attempt_login(session: DbSession, name: str, password: str, remote: str,
                  device_cookie: str | None = None) -> LoginResult:
    """Check a name and password, unless a throttle makes the attempt wait (then the
    password is not looked at). Every checked outcome is an audit row; a success from a
    browser without a valid device cookie for the account gives it one."""
    name = name.strip()[:64]
    policy = login_policy()
    token, trusted = device_for(session, name, device_cookie, policy)
    device = throttle.device_id(throttle.device_digest(token)) if token else None
    # A trusted browser is judged by its own failures, so it queues behind nobody else's attempts.
    with throttle.alone_on(session, f"{name}\n{device}" if device else name) as alone:
        if not alone:  # another attempt in the same lanes is being checked this instant
            busy = Throttle("busy", name, remote, 0, utcnow() + timedelta(seconds=1))
            return LoginResult(None, throttle=busy, retry_seconds=1)
        return _attempt(session, name, password, remote, policy, token, trusted, device)


def _attempt(session: DbSession, name: str, password: str, remote: str, policy: Policy, token: str | None,
             trusted: dict, device: str | None) -> LoginResult:
    waiting = throttle.judge(session, policy, name, remote, device)
    if waiting is not None:
        return LoginResult(None, throttle=waiting, retry_seconds=max(1, waiting.seconds_left(utcnow())))
    user = session.exec(select(ConsoleUser).where(ConsoleUser.name == name)).first()
    ok = False
    try:
        ok = _hasher.verify(user.password_hash if user else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        ok = False
    device_detail = {"device": device} if device else {}
    if not ok or user is None or user.disabled:
        audit.record(session, actor=f"console:{name or '?'}", action=throttle.FAILED,
                     target_type="console_user", target_id=name,
                     detail={"reason": "disabled" if ok and user and user.disabled else "bad_credentials",
                             **device_detail},
                     remote=remote)
        return LoginResult(None)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = utcnow()
    session.add(user)
    audit.record(session, actor=f"console:{name}", action=throttle.SUCCEEDED, target_type="console_user",
                 target_id=name, detail=device_detail or None, remote=remote)
    cookie = None
    # A token is renewed halfway through its life, so a browser in daily use stays trusted.
    if token is None or utcnow() - trusted[token][1] > policy.device_trust / 2:
        fresh = secrets.token_urlsafe(32)
        throttle.trust_device(session, fresh, name, remote)
        others = sorted((tok for tok in trusted if trusted[tok][0] != name), key=lambda tok: trusted[tok][1],
                        reverse=True)
        cookie = ".".join([fresh, *others][:throttle.DEVICE_TOKENS_PER_COOKIE])
    return LoginResult(user, device_cookie=cookie)


# ---- sessions in the database -------------------------------------------------------------

def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _load(session: DbSession, digest: str) -> tuple[dict, Principal] | None:
    now = utcnow()
    row = session.get(ConsoleSession, digest)
    if row is None:
        return None
    rules = login_rules()
    idle = timedelta(minutes=float(rules["idle_minutes"]))
    if row.expires_at <= now or row.last_seen_at + idle <= now:
        session.delete(row)
        return None
    user = session.get(ConsoleUser, row.user_id)
    if user is None or user.disabled:
        session.delete(row)
        return None
    if now - row.last_seen_at > timedelta(minutes=1):  # one write a minute, not one a request
        row.last_seen_at = now
        session.add(row)
    return dict(row.data or {}), principal_for(session, user)


def _store(session: DbSession, digest: str | None, data: dict, remote: str) -> str | None:
    """Create (digest None: returns the new token), update or, for empty data, delete."""
    if digest is not None and not data:
        session.exec(delete(ConsoleSession).where(ConsoleSession.id == digest))
        return None
    if digest is not None:
        row = session.get(ConsoleSession, digest)
        if row is not None:
            row.data = dict(data)
            session.add(row)
            return None
    if not data.get("user_id"):
        return None
    token = secrets.token_urlsafe(32)
    now = utcnow()
    hours = float(login_rules()["max_hours"])
    session.add(ConsoleSession(id=_digest(token), user_id=int(data["user_id"]), data=dict(data), remote=remote,
                               created_at=now, last_seen_at=now, expires_at=now + timedelta(hours=hours)))
    return token


def purge_expired(session: DbSession) -> int:
    result = session.exec(delete(ConsoleSession).where(ConsoleSession.expires_at <= utcnow()))
    return result.rowcount or 0


class DatabaseStorage(AbstractStorage):
    """aiohttp-session storage keeping the session in ``ConsoleSession``. Loading a
    session also loads its account: ``request[PRINCIPAL]``."""

    def __init__(self, *, secure: bool, path: str = "/console/"):
        super().__init__(cookie_name=COOKIE, path=path, httponly=True, secure=secure, samesite="Lax",
                         max_age=None)

    async def load_session(self, request: web.Request) -> Session:
        token = self.load_cookie(request)
        if token and len(token) < 100:
            digest = _digest(token)
            found = await db.run(request, _load, digest)
            if found is not None:
                data, principal = found
                request[PRINCIPAL] = principal
                return Session(digest, data={"created": None, "session": data}, new=False)
        return Session(None, data=None, new=True)

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        data = dict(session)
        if session.empty:
            if session.identity is not None:
                await db.run(request, _store, session.identity, {}, "")
            self.save_cookie(response, "", max_age=None)
            return
        token = await db.run(request, _store, None if session.new else session.identity, data,
                             client_address(request))
        if token is not None:
            self.save_cookie(response, token, max_age=None)
