"""Per-token request rate limit: a fixed one-minute window counted in the database.

The count lives in the database (``rate_windows``), so two ``shuyu serve`` processes behind
one balancer share one limit. Writing it on every request cost a committed (fsynced)
transaction per request, about a third of an authenticated request's time. So a process
*leases* a share of the window's allowance at once — one upsert adds the share to the
shared count — and serves that many requests from memory before it leases again. The
shared count never exceeds what was handed out, so the limit holds across processes; a
process that stops with part of its lease unused only makes that minute stricter. Leases
are a twentieth of the limit: with the default 600 a minute, one write per 30 requests,
and with a small limit (under 40) one write per request, exact as before.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from shuyu.errors import RateLimited
from shuyu.tables import rate_windows

__all__ = ["WINDOW_S", "check_rate", "token_key"]

WINDOW_S = 60
_LEASE_FRACTION = 20  # a lease is limit // 20 requests (at least one)


def token_key(token: str) -> str:
    """The key a token is counted under: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class _Lease:
    window: int
    granted: int = 0
    used: int = 0
    base: int = 0  # the shared count just before this lease


class _Limiter:
    """The leases of one process on one database; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, _Lease] = {}

    def take(self, engine: Engine, key: str, limit: int, window: int) -> tuple[bool, int]:
        """(allowed, requests of this window this process knows of, this one included)."""
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.window != window:
                if len(self._leases) > 10_000:  # a flood of made-up tokens: forget old ones
                    self._leases = {k: v for k, v in self._leases.items() if v.window == window}
                lease = self._leases[key] = _Lease(window)
            if lease.used >= lease.granted:
                want = max(1, limit // _LEASE_FRACTION)
                count = _add(engine, key, window, want)
                granted = max(0, want - max(0, count - limit))
                lease.granted, lease.used, lease.base = granted, 0, count - want
                if granted == 0:
                    return False, count
            lease.used += 1
            return True, lease.base + lease.used


_limiters: weakref.WeakKeyDictionary[Engine, _Limiter] = weakref.WeakKeyDictionary()
_limiters_lock = threading.Lock()


def _add(engine: Engine, key: str, window: int, n: int) -> int:
    """Add ``n`` to the shared count of (key, window); the count after."""
    with engine.begin() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = (
            insert(rate_windows)
            .values(token_key=key, window_start=window, count=n)
            .on_conflict_do_update(
                index_elements=[rate_windows.c.token_key, rate_windows.c.window_start],
                set_={"count": rate_windows.c.count + n},
            )
            .returning(rate_windows.c.count)
        )
        count = int(conn.execute(stmt).scalar_one())
        if count == n:
            # A new row: drop every earlier minute's rows (indexed; keeps the table small).
            conn.execute(sa.delete(rate_windows).where(rate_windows.c.window_start < window))
    return count


def check_rate(engine: Engine, key: str, limit_per_min: int, now_s: float | None = None) -> int:
    """Count one request for ``key``; raise :class:`RateLimited` past ``limit_per_min``.

    Returns the number of requests in the current window this process knows of, this one
    included (exact while one process serves the token).
    """
    now = time.time() if now_s is None else now_s
    window = int(now) - int(now) % WINDOW_S
    with _limiters_lock:
        limiter = _limiters.get(engine)
        if limiter is None:
            limiter = _limiters[engine] = _Limiter()
    allowed, count = limiter.take(engine, key, limit_per_min, window)
    if not allowed:
        retry_after = max(1, int(window + WINDOW_S - now))
        raise RateLimited(
            f"more than {limit_per_min} requests in a minute with this token",
            retry_after_s=retry_after,
            hint=f"wait {retry_after} s (Retry-After) and slow down; "
            "the limit is SHUYU_RATE_PER_TOKEN_PER_MIN",
        )
    return count
