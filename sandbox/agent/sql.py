"""Run one SQL statement in a locked-down in-memory DuckDB over the job's tables.

Two lines of defence, both inside the container (which is the real boundary):

1. the statement: exactly one, and it must be a ``SELECT`` (so ``COPY``, ``ATTACH``,
   ``INSTALL``, ``LOAD``, ``SET``, ``PRAGMA``, ``CREATE`` … are refused before running);
   and it may read only the job's own tables (:func:`check_tables`);
2. the engine: ``enable_external_access=false`` (no files, no network, no
   ``read_csv('/etc/passwd')``), extension install/auto-load and community extensions off,
   Python replacement scans off (a name never reaches a Python variable), then
   ``lock_configuration=true`` so no statement can switch any of it back on.

A warm session keeps its decrypted columns in this same DuckDB instance, as native tables
in a catalog of their own (:data:`HELD`, see ``data.py``), so a job there must not be able
to name them. A job's tables are therefore views, made by the agent for that job only, over
exactly the columns it was granted, and the statement is checked twice before it runs:

* its syntax tree (``json_serialize_sql``): every table it reads is an unqualified name of
  one of the job's tables or of a CTE in scope, or a ``VALUES`` list, a subquery, a join, or
  one of :data:`TABLE_FUNCTIONS`; any other table function (``query``, ``query_table``,
  ``duckdb_tables()``, ``pragma_storage_info`` …), ``DESCRIBE``/``SUMMARIZE``/``SHOW``,
  ``PIVOT``, time travel (``AT``) and qualified names (``held.c1``, ``information_schema.…``)
  are refused;
* what it binds to (DuckDB's own binder, ``get_table_names``): the base tables it touches,
  through views and subqueries, must be among those behind the job's own views.

DuckDB's error messages can quote data values (a failed cast names the value), so a
failure becomes a code and the message is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa

from .errors import AgentError

__all__ = ["HELD", "TABLE_FUNCTIONS", "check_syntax", "connect", "quote", "run_sql"]

# The catalog holding a warm session's decrypted columns (an in-memory, compressed database).
HELD = "__held"

# Table functions a job may use in FROM: they make rows out of their arguments only.
TABLE_FUNCTIONS: frozenset[str] = frozenset({"range", "generate_series"})

# Table references a statement may contain; anything else (SHOW_REF, PIVOT, …) is refused.
_TABLE_REFS = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY"})
# Other table reference types DuckDB knows: refused wherever they appear in the tree.
_OTHER_REFS = frozenset(
    {"TABLE_FUNCTION", "SHOW_REF", "PIVOT", "COLUMN_DATA", "DELIM_GET", "CTE", "BOUND_TABLE_REF"}
)
_NO_AT: tuple[object, ...] = (None, {})

# Statements that passed check_syntax, by (SQL, table names): the check depends on nothing
# else, and a session repeats its statements (a DP query's rewritten SQL does not change
# with epsilon). Refusals are not remembered.
_PASSED: dict[tuple[str, frozenset[str]], None] = {}
_PASSED_MAX = 256
_PASSED_MAX_CHARS = 64 * 1024


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(memory_bytes: int | None = None, threads: int | None = None, held: bool = False) -> Any:
    """A fresh in-memory DuckDB with external access off and its configuration locked.

    ``held``: also attach the in-memory, compressed catalog :data:`HELD` in which a warm
    session keeps its decrypted columns (attached before the configuration is locked).
    """
    config: dict[str, Any] = {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
        "python_enable_replacements": False,
    }
    if memory_bytes:
        # Leave DuckDB below the container's hard limit, so a big query fails with a code
        # instead of the whole sandbox being OOM-killed.
        config["memory_limit"] = f"{max(memory_bytes * 6 // 10, 32 * 1024**2) // 1024**2}MB"
    if threads:
        config["threads"] = max(1, threads)
    con = duckdb.connect(":memory:", config=config)
    if held:
        con.execute(f"ATTACH ':memory:' AS {HELD} (COMPRESS)")
    con.execute("SET lock_configuration = true")
    return con


def check_syntax(con: Any, sql: str, names: frozenset[str]) -> None:
    """Refuse a statement that is not one SELECT reading only ``names`` (see module doc)."""
    if (sql, names) in _PASSED:
        return
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error:
        raise AgentError("sql.parse") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise AgentError("sql.not_allowed")
    try:
        raw = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
        tree = json.loads(raw)
    except (duckdb.Error, ValueError, IndexError, RecursionError):
        raise AgentError("sql.not_allowed") from None
    if not isinstance(tree, dict) or tree.get("error") is not False:
        raise AgentError("sql.not_allowed")
    try:
        _walk(tree.get("statements"), names)
    except RecursionError:
        raise AgentError("sql.not_allowed") from None
    if len(sql) <= _PASSED_MAX_CHARS:
        if len(_PASSED) >= _PASSED_MAX:
            del _PASSED[next(iter(_PASSED))]
        _PASSED[sql, names] = None


def _walk(node: object, names: frozenset[str]) -> None:
    """Check every table reference in the tree, with CTE names in scope exactly where
    DuckDB resolves them: a CTE body sees the CTEs before it (and itself when recursive),
    the rest of the query sees them all."""
    if isinstance(node, list):
        for item in node:
            _walk(item, names)
        return
    if not isinstance(node, dict):
        return
    ctes = node.get("cte_map")
    entries = ctes.get("map") if isinstance(ctes, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        key, body = entry.get("key"), entry.get("value")
        if not isinstance(key, str) or not isinstance(body, dict):
            raise AgentError("sql.not_allowed")
        query = body.get("query_node")
        recursive = isinstance(query, dict) and query.get("type") == "RECURSIVE_CTE_NODE"
        _walk(body, names | {key.casefold()} if recursive else names)
        names = names | {key.casefold()}
    kind = node.get("type")
    if "class" not in node and (
        ("sample" in node and "alias" in node) or (isinstance(kind, str) and kind in _OTHER_REFS)
    ):  # a table reference (expressions have a class)
        _check_ref(node, names)
    for key, value in node.items():
        if key != "cte_map":
            _walk(value, names)


def _check_ref(ref: Mapping[str, Any], names: frozenset[str]) -> None:
    kind = ref.get("type")
    if ref.get("at_clause") not in _NO_AT:
        raise AgentError("sql.not_allowed")
    if kind == "BASE_TABLE":
        name = ref.get("table_name")
        if ref.get("catalog_name") or ref.get("schema_name") or not isinstance(name, str):
            raise AgentError("sql.not_allowed")
        if name.casefold() not in names:  # DuckDB matches names case-insensitively
            raise AgentError("sql.not_allowed")
    elif kind == "TABLE_FUNCTION":
        fn = ref.get("function") or {}
        if fn.get("catalog") or fn.get("schema") or fn.get("function_name") not in TABLE_FUNCTIONS:
            raise AgentError("sql.not_allowed")
    elif kind not in _TABLE_REFS:
        raise AgentError("sql.not_allowed")


def run_sql(con: Any, sql: str, tables: Mapping[str, pa.Table | str]) -> pa.Table:
    """Run ``sql`` over the job's tables in a cursor of its own; the result as Arrow.

    A table is an Arrow table (registered for this job) or the ``SELECT`` of a view over
    held columns (created for this job). Both vanish with the cursor after the job.
    """
    cur = con.cursor()
    try:
        check_syntax(cur, sql, frozenset(n.casefold() for n in tables))
        for name, table in tables.items():
            if isinstance(table, str):
                cur.execute(f"CREATE TEMP VIEW {quote(name)} AS {table}")
            else:
                cur.register(name, table)
        if any(isinstance(t, str) for t in tables.values()):
            everything_own = "SELECT 1 FROM " + ", ".join(quote(n) for n in tables)  # noqa: S608
            own = cur.get_table_names(everything_own, qualified=True)
            if not cur.get_table_names(sql, qualified=True) <= own:
                raise AgentError("sql.not_allowed")
        return cur.sql(sql).to_arrow_table()
    except duckdb.PermissionException:
        raise AgentError("sql.not_allowed") from None
    except duckdb.OutOfMemoryException:
        raise AgentError("limit.memory") from None
    except MemoryError:
        raise AgentError("limit.memory") from None
    except duckdb.Error:
        raise AgentError("sql.error") from None
    finally:
        cur.close()
