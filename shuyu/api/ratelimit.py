"""Per-token request rate limit: a fixed one-minute window counted in the database.

One upsert per request (``INSERT .. ON CONFLICT DO UPDATE .. RETURNING``) counts the request
and reads the count in the same statement, so two replicas of the API share the limit and
cannot both let the 601st request through. The token is hashed before it is stored.
"""

from __future__ import annotations

import hashlib
import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from shuyu.errors import RateLimited
from shuyu.tables import rate_windows

__all__ = ["WINDOW_S", "check_rate", "token_key"]

WINDOW_S = 60


def token_key(token: str) -> str:
    """The key a token is counted under: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_rate(engine: Engine, key: str, limit_per_min: int, now_s: float | None = None) -> int:
    """Count one request for ``key``; raise :class:`RateLimited` past ``limit_per_min``.

    Returns the number of requests in the current window, this one included.
    """
    now = time.time() if now_s is None else now_s
    window = int(now) - int(now) % WINDOW_S
    with engine.begin() as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = (
            insert(rate_windows)
            .values(token_key=key, window_start=window, count=1)
            .on_conflict_do_update(
                index_elements=[rate_windows.c.token_key, rate_windows.c.window_start],
                set_={"count": rate_windows.c.count + 1},
            )
            .returning(rate_windows.c.count)
        )
        count = int(conn.execute(stmt).scalar_one())
        if count == 1:
            # A new row: drop every earlier minute's rows (indexed; keeps the table small).
            conn.execute(sa.delete(rate_windows).where(rate_windows.c.window_start < window))
    if count > limit_per_min:
        retry_after = max(1, int(window + WINDOW_S - now))
        raise RateLimited(
            f"more than {limit_per_min} requests in a minute with this token",
            retry_after_s=retry_after,
            hint=f"wait {retry_after} s (Retry-After) and slow down; "
            "the limit is SHUYU_RATE_PER_TOKEN_PER_MIN",
        )
    return count
