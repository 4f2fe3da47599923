"""Trusted statements the agent runs over a Python job's tables before operator code starts.

The host uses this for the desensitized sample view (R1.5, 004 §4(3)): models are trained
on a sampled, pseudonymized, generalized copy of the data. The host sends the statements
that bind the scenario's pseudonym key, materialize the sample and reset the key
(``policies.desensitize.SampleView.statements``); the agent runs them in a DuckDB
connection of their own, takes the tables they made and closes the connection. Operator
code therefore never shares a session with the key, and it sees only the tables the prelude
produced, under the job's table names: the raw tables are dropped. In the job line::

    "prelude": {"statements": [["SET VARIABLE v = ?", ["<base64 bytes>"]],
                               ["CREATE OR REPLACE TABLE s AS SELECT …", []]],
                "tables": {"<job table>": "<table the statements made>"}}

Statement parameters are bytes (base64 on the wire). A failure is a bug in trusted code
(``agent.internal``) or a memory limit (``limit.memory``); the engine's message, which could
quote data values, is dropped.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from .errors import AgentError
from .sql import connect

__all__ = ["Prelude", "parse_prelude", "run_prelude"]


@dataclass(frozen=True)
class Prelude:
    """The statements to run (parameters may be key material) and the tables they make."""

    statements: tuple[tuple[str, tuple[bytes, ...]], ...] = field(repr=False)
    tables: Mapping[str, str]


def parse_prelude(raw: object) -> Prelude | None:
    """The job line's ``prelude``, validated; None when the job has none."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise AgentError("job.invalid")
    statements, tables = raw.get("statements"), raw.get("tables")
    if not isinstance(statements, list) or not isinstance(tables, dict) or not tables:
        raise AgentError("job.invalid")
    parsed: list[tuple[str, tuple[bytes, ...]]] = []
    for item in statements:
        if not (isinstance(item, list) and len(item) == 2):
            raise AgentError("job.invalid")
        sql, params = item
        if not isinstance(sql, str) or not isinstance(params, list):
            raise AgentError("job.invalid")
        try:
            values = tuple(base64.b64decode(p, validate=True) for p in params)
        except (binascii.Error, TypeError, ValueError):
            raise AgentError("job.invalid") from None
        parsed.append((sql, values))
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in tables.items()):
        raise AgentError("job.invalid")
    return Prelude(tuple(parsed), dict(tables))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run_prelude(
    prelude: Prelude,
    tables: Mapping[str, pa.Table],
    memory_bytes: int | None = None,
    threads: int | None = None,
) -> dict[str, pa.Table]:
    """Run the statements over ``tables``; the job's tables are the ones they made."""
    con = connect(memory_bytes, threads)
    try:
        for name, table in tables.items():
            con.register(name, table)
        for sql, params in prelude.statements:
            con.execute(sql, list(params))
        return {
            name: con.sql(f"SELECT * FROM {_quote(source)}").to_arrow_table()  # noqa: S608
            for name, source in prelude.tables.items()
        }
    except (duckdb.OutOfMemoryException, MemoryError):
        raise AgentError("limit.memory") from None
    except duckdb.Error:
        raise AgentError("agent.internal") from None
    finally:
        con.close()
