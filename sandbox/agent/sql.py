"""Run one SQL statement in a locked-down in-memory DuckDB over the job's Arrow tables.

Two lines of defence, both inside the container (which is the real boundary):

1. the statement: exactly one, and it must be a ``SELECT`` (so ``COPY``, ``ATTACH``,
   ``INSTALL``, ``LOAD``, ``SET``, ``PRAGMA``, ``CREATE`` … are refused before running);
2. the engine: ``enable_external_access=false`` (no files, no network, no
   ``read_csv('/etc/passwd')``), extension install/auto-load and community extensions off,
   then ``lock_configuration=true`` so no statement can switch any of it back on.

DuckDB's error messages can quote data values (a failed cast names the value), so a
failure becomes a code and the message is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa

from .errors import AgentError

__all__ = ["connect", "run_sql"]


def connect(memory_bytes: int | None = None, threads: int | None = None) -> Any:
    """A fresh in-memory DuckDB with external access off and its configuration locked."""
    config: dict[str, Any] = {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
    }
    if memory_bytes:
        # Leave DuckDB below the container's hard limit, so a big query fails with a code
        # instead of the whole sandbox being OOM-killed.
        config["memory_limit"] = f"{max(memory_bytes * 6 // 10, 32 * 1024**2) // 1024**2}MB"
    if threads:
        config["threads"] = max(1, threads)
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET lock_configuration = true")
    return con


def run_sql(con: Any, sql: str, tables: Mapping[str, pa.Table]) -> pa.Table:
    """Register the tables, check the statement, run it; the result as an Arrow table."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error:
        raise AgentError("sql.parse") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise AgentError("sql.not_allowed")
    registered: list[str] = []
    try:
        for name, table in tables.items():
            con.register(name, table)
            registered.append(name)
        return con.sql(sql).to_arrow_table()
    except duckdb.PermissionException:
        raise AgentError("sql.not_allowed") from None
    except duckdb.OutOfMemoryException:
        raise AgentError("limit.memory") from None
    except MemoryError:
        raise AgentError("limit.memory") from None
    except duckdb.Error:
        raise AgentError("sql.error") from None
    finally:
        for name in registered:
            con.unregister(name)
