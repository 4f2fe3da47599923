"""Service state of the HTTP API, kept in the metadata database rather than process memory.

Keeping it in the database means two ``shuyu serve`` processes behind one load balancer
share one limit (DESIGN: no global state in process memory).
"""

from __future__ import annotations

import sqlalchemy as sa

from enclave.db import metadata

__all__ = ["rate_windows"]

# One row per (token, minute): a fixed-window request counter. The key is a hash of the
# bearer token, never the token. Whenever a row opens, every row of an earlier minute is
# deleted, so the table holds only the current minute's tokens, even under a flood of
# made-up tokens.
rate_windows = sa.Table(
    "rate_windows",
    metadata,
    sa.Column("token_key", sa.String(64), primary_key=True),  # sha256(token) hex
    sa.Column("window_start", sa.BigInteger, primary_key=True),  # unix seconds, minute-aligned
    sa.Column("count", sa.Integer, nullable=False),
    sa.Index("ix_rate_windows_window_start", "window_start"),
)
