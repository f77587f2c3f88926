"""Login throttling: failed logins counted per user, per address and per (user, address).

Each key has a number of free failures; after that every failure makes the next attempt wait
1 s, 2 s, 4 s ... up to a cap, so guessing slows down exponentially. The per-user counter does
not apply from an address the user has logged in from before, so an attacker elsewhere cannot
lock the real user out; nothing blocks longer than the cap, and failures are forgotten after a
while. An attempt is counted *before* the password is checked (and forgiven when it was right),
so a burst of parallel guesses cannot slip past the counters. The counters live in the
database: several auth replicas throttle together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from twinstack.store.models import LoginFailures, utcnow


@dataclass(frozen=True)
class ThrottlePolicy:
    pair_free: int = 5  # failures of one user from one address
    user_free: int = 20  # of one user from every address (a distributed guess)
    address_free: int = 100  # from one address on every user (password spraying)
    max_delay: float = 900.0
    memory: float = 3600.0  # failures older than this are forgotten


def _known(user: str, address: str) -> str:
    return f"known:{user}@{address}"


def login_keys(s: Session, user: str, address: str | None,
               policy: ThrottlePolicy) -> dict[str, int]:
    """The counters a login attempt touches, each with its number of free failures."""
    if not address:
        return {f"user:{user}": policy.user_free}
    keys = {f"pair:{user}@{address}": policy.pair_free, f"addr:{address}": policy.address_free}
    if s.get(LoginFailures, _known(user, address)) is None:
        keys[f"user:{user}"] = policy.user_free
    return keys


def _rows(s: Session, keys: dict[str, int]) -> dict[str, LoginFailures]:
    """The counters of `keys`, created if missing and locked for this transaction."""
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    for key in keys:
        s.execute(insert(LoginFailures).values(key=key, failures=0, updated_at=now)
                  .on_conflict_do_nothing(index_elements=["key"]))
    query = select(LoginFailures).where(LoginFailures.key.in_(list(keys)))
    return {row.key: row for row in s.scalars(query.with_for_update())}


def begin_attempt(s: Session, keys: dict[str, int], policy: ThrottlePolicy) -> float | None:
    """Seconds the caller must still wait, or None: then the attempt is counted as a failure
    until `forgive()` says the password was right."""
    now = utcnow()
    rows = _rows(s, keys)
    wait = max(((row.blocked_until - now).total_seconds() for row in rows.values()
                if row.blocked_until is not None), default=0.0)
    if wait > 0:
        return wait
    for key, row in rows.items():
        if now - row.updated_at > timedelta(seconds=policy.memory):
            row.failures = 0
        row.failures += 1
        row.updated_at = now
        over = row.failures - keys[key]
        row.blocked_until = now + timedelta(seconds=min(policy.max_delay, 2.0 ** (over - 1))) \
            if over > 0 else None
    s.flush()
    return None


def forgive(s: Session, user: str, address: str | None, keys: dict[str, int]) -> None:
    """The password was right: clear the user's counters, take back the address's count, and
    remember the address as one this user logs in from."""
    rows = _rows(s, keys)
    for key, row in rows.items():
        if key.startswith("addr:"):
            row.failures = max(0, row.failures - 1)
            row.blocked_until = None if row.failures <= keys[key] else row.blocked_until
    s.execute(delete(LoginFailures).where(
        LoginFailures.key.in_([k for k in keys if not k.startswith("addr:")])))
    if address:
        _rows(s, {_known(user, address): 0})[_known(user, address)].updated_at = utcnow()
    s.flush()


def forget_before(s: Session, failures: datetime, known: datetime) -> int:
    """Drop counters untouched since `failures` and remembered addresses unused since `known`,
    so the table holds only what recent attempts left; returns how many rows went."""
    stale = (LoginFailures.key.startswith("known:") & (LoginFailures.updated_at < known)) | \
        (~LoginFailures.key.startswith("known:") & (LoginFailures.updated_at < failures))
    result = s.execute(delete(LoginFailures).where(stale))
    return int(result.rowcount)  # type: ignore[attr-defined]
