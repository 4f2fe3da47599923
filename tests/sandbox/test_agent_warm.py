"""A warm session's held columns, in-process: a job reads only what it was granted *now*.

The agent keeps every column a session decrypted as a native DuckDB table in the same
instance the jobs' SQL runs in. These tests are the attack: a session decrypts ``salary``
for one job; the next job is granted ``region`` only and tries every route to ``salary`` —
its table name, the catalog, system tables and functions, views, CTE scope tricks, and
DuckDB functions that run SQL from a string. Each of the two checks in ``sql.run_sql``
(the syntax tree, then the binder) is also tested with the other switched off.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from sandbox.agent import sql as agent_sql
from sandbox.agent.crypto import KeyRing
from sandbox.agent.data import TableCache, TableSpec
from sandbox.agent.errors import AgentError
from sandbox.agent.main import Agent
from sandbox.agent.protocol import Frame, FrameReader
from sandbox.agent.sql import HELD, connect, run_sql
from sandbox.limits import SandboxLimits
from tests.sandbox.conftest import HELD_COLUMN_ROUTES as ROUTES
from tests.sandbox.conftest import DemoData, write_demo


@pytest.fixture
def session(demo_data: DemoData) -> Iterator[tuple[TableCache, dict[str, str], object]]:
    """A session that held ``salary`` (and ``age``) for an earlier job; now a job granted
    ``region`` only: its views, and the connection."""
    con = connect(held=True)
    cache = TableCache(demo_data.store, con)
    earlier = ("salary", "age")
    cache.views(
        {"people": TableSpec("people", demo_data.path, earlier)},
        KeyRing({k: demo_data.keys[k] for k in demo_data.key_ids_for(earlier)}),
    )
    ring = KeyRing({k: demo_data.keys[k] for k in demo_data.key_ids_for(["region"])})
    views = cache.views({"people": TableSpec("people", demo_data.path, ("region",))}, ring)
    yield cache, views, con
    con.close()


def test_a_job_reads_its_granted_column_from_the_held_tables(
    session: tuple[TableCache, dict[str, str], object],
) -> None:
    _, views, con = session
    out = run_sql(con, "SELECT region, count(*) AS n FROM people GROUP BY 1 ORDER BY 1", views)
    assert out.to_pylist() == [{"region": r, "n": 250} for r in ("east", "north", "south", "west")]
    assert run_sql(con, "SELECT * FROM people LIMIT 1", views).column_names == ["region"]


@pytest.mark.parametrize("sql", ROUTES)
def test_a_job_cannot_reach_a_column_held_for_an_earlier_job(
    session: tuple[TableCache, dict[str, str], object], sql: str
) -> None:
    _, views, con = session
    with pytest.raises(AgentError) as err:
        run_sql(con, sql, views)
    assert err.value.code in {"sql.not_allowed", "sql.error"}, sql


@pytest.mark.parametrize(
    "sql",
    # table functions bind no table: they are the syntax check's alone
    [r for r in ROUTES if ("__held" in r or "c0" in r) and "pragma_" not in r],
)
def test_the_binder_check_alone_refuses_held_tables(
    session: tuple[TableCache, dict[str, str], object],
    sql: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Second line: with the syntax-tree check off (only 'one SELECT' kept), every route
    that names a held table is still refused by what the statement binds to."""
    _, views, con = session

    def one_select(cur: object, sql: str, names: frozenset[str]) -> None:
        statements = cur.extract_statements(sql)  # type: ignore[attr-defined]
        assert len(statements) == 1

    monkeypatch.setattr(agent_sql, "check_syntax", one_select)
    with pytest.raises(AgentError) as err:
        run_sql(con, sql, views)
    # A route naming the held catalog binds fine: only the check stops it. An unqualified
    # "c0" does not even bind (the held catalog is not on the search path).
    expected = {"sql.not_allowed"} if HELD in sql else {"sql.not_allowed", "sql.error"}
    assert err.value.code in expected, sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM people",
        "WITH x AS (SELECT region FROM people) SELECT * FROM x",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT * FROM r",
        "SELECT * FROM (VALUES ('north'), ('x')) AS d(r) LEFT JOIN people ON region = r",
        "SELECT * FROM people, range(2)",
        "SELECT * FROM generate_series(1, 3)",
        "SELECT * FROM PEOPLE",
        "SELECT * FROM people t(a) USING SAMPLE 10",
    ],
)
def test_ordinary_selects_still_run(
    session: tuple[TableCache, dict[str, str], object], sql: str
) -> None:
    _, views, con = session
    assert run_sql(con, sql, views).num_rows > 0


def test_the_syntax_check_alone_refuses_system_tables_and_table_functions() -> None:
    """First line, without any held table: it refuses by shape, not by what exists."""
    con = connect()
    for sql in ROUTES[1:]:
        with pytest.raises(AgentError) as err:
            agent_sql.check_syntax(con, sql, frozenset({"people"}))
        assert err.value.code == "sql.not_allowed", sql


def test_the_dp_rewritten_sql_passes_the_checks(
    session: tuple[TableCache, dict[str, str], object],
) -> None:
    """The shape of egress.dp's rewrite: CTEs, a VALUES domain, a LEFT JOIN."""
    _, views, con = session
    sql = (
        'WITH __raw AS (SELECT "t0"."region" AS "__g0" FROM "people" AS "t0"), '
        '__agg AS (SELECT "__g0", COUNT(*) AS "__p0" FROM __raw AS __bounded GROUP BY "__g0") '
        'SELECT d."__g0" AS "__g0", COALESCE(a."__p0", 0) AS "__p0" FROM (SELECT * FROM '
        "(VALUES ('north'), ('south'), ('nowhere')) AS \"__d__g0\"(\"__g0\")) AS d "
        'LEFT JOIN __agg AS a ON a."__g0" = d."__g0" ORDER BY d."__g0"'
    )
    assert run_sql(con, sql, views).to_pylist() == [
        {"__g0": "north", "__p0": 250},
        {"__g0": "nowhere", "__p0": 0},
        {"__g0": "south", "__p0": 250},
    ]


def test_columns_held_by_different_jobs_line_up_row_for_row(tmp_path: Path) -> None:
    """Held columns are joined by position: loaded in different jobs, from several files
    and row groups, with several threads, they must still be the same rows."""
    demo = write_demo(tmp_path / "store", rows=120_000, parts=3)
    con = connect(threads=2, held=True)
    cache = TableCache(demo.store, con)

    def ring(cols: tuple[str, ...]) -> KeyRing:
        return KeyRing({k: demo.keys[k] for k in demo.key_ids_for(cols)})

    for cols in (("age",), ("salary", "region")):  # two jobs, two loads
        cache.views({"people": TableSpec("people", demo.path, cols)}, ring(cols))
    every = ("region", "age", "salary")
    views = cache.views({"people": TableSpec("people", demo.path, every)}, ring(every))
    assert run_sql(con, "SELECT * FROM people", views).equals(demo.table)
    assert cache.load({"people": TableSpec("p", demo.path, every)}, ring(every))["people"].equals(
        demo.table
    )


def test_held_columns_are_compressed_after_the_answer(demo_data: DemoData) -> None:
    """The job that decrypts does not wait for compression; the agent compresses between
    jobs (``Agent.after_answer``), and later jobs scan compressed native tables."""
    agent = Agent(demo_data.store, keep_tables=True)
    _result(_job(agent, demo_data, "SELECT count(*) FROM people", ("region", "salary")))
    con = agent._con

    def compression(table: str) -> set[str]:
        rows = con.execute(
            f"SELECT DISTINCT compression FROM pragma_storage_info('{HELD}.main.{table}') "
            "WHERE segment_type <> 'VALIDITY'"
        ).fetchall()
        return {r[0] for r in rows}

    assert compression("c0") == {"Uncompressed"}
    agent.after_answer()
    assert "Uncompressed" not in compression("c0") | compression("c1")
    again = _job(agent, demo_data, "SELECT max(salary) AS m FROM people", ("salary",))
    assert _result(again).to_pylist() == [{"m": max(demo_data.table.column("salary").to_pylist())}]


# --- whole job lines through the agent ------------------------------------------------------


def _job(agent: Agent, demo: DemoData, sql: str, columns: tuple[str, ...]) -> list[Frame]:
    line = bytes(demo.spec(sql, columns=columns).job_line(SandboxLimits()))
    return FrameReader(10**8).feed(b"".join(agent.handle(line)))


def _result(frames: list[Frame]) -> pa.Table:
    assert frames[-1].kind == "done", frames[-1].name
    return pa.ipc.open_stream(frames[0].payload).read_all()


def test_a_warm_agent_answers_each_job_from_its_own_grant(demo_data: DemoData) -> None:
    agent = Agent(demo_data.store, keep_tables=True)
    full = ("region", "age", "salary")
    first = _result(_job(agent, demo_data, "SELECT sum(salary) AS s FROM people", full))
    assert first.to_pylist() == [{"s": sum(demo_data.table.column("salary").to_pylist())}]
    only_age = _result(_job(agent, demo_data, "SELECT * FROM people", ("age",)))
    assert only_age.column_names == ["age"]
    assert only_age.column("age").to_pylist() == demo_data.table.column("age").to_pylist()
    for sql in ROUTES:
        frames = _job(agent, demo_data, sql, ("age",))
        assert [f.kind for f in frames] == ["error"], sql
        assert frames[0].name in {"sql.not_allowed", "sql.error"}, sql
    # The job's keys are still checked for held columns: without the high key, no salary.
    spec = demo_data.spec(
        "SELECT sum(salary) AS s FROM people",
        columns=("salary",),
        key_ids=demo_data.key_ids_for(["age"]),
    )
    frames = FrameReader(10**8).feed(b"".join(agent.handle(bytes(spec.job_line(SandboxLimits())))))
    assert [(f.kind, f.name) for f in frames] == [("error", "data.key_missing")]


def test_a_warm_python_job_gets_arrow_tables_of_its_columns(demo_data: DemoData) -> None:
    agent = Agent(demo_data.store, keep_tables=True)
    _result(_job(agent, demo_data, "SELECT 1 AS x FROM people LIMIT 1", ("region", "salary")))
    code = (
        "df = shuyu.table('people')\n"
        "shuyu.emit_metric('rows', len(df))\n"
        "shuyu.emit_metric('cols', len(df.columns))\n"
        "shuyu.emit_metric('total', float(df['salary'].sum()))\n"
    )
    spec = demo_data.spec(code, kind="python", columns=("salary",))
    frames = FrameReader(10**8).feed(b"".join(agent.handle(bytes(spec.job_line(SandboxLimits())))))
    metrics = {f.name: json.loads(f.payload) for f in frames if f.kind == "metric"}
    assert metrics == {
        "rows": 1000,
        "cols": 1,
        "total": sum(demo_data.table.column("salary").to_pylist()),
    }


def test_a_cold_agent_keeps_nothing_between_jobs(demo_data: DemoData) -> None:
    agent = Agent(demo_data.store, keep_tables=False)
    _result(_job(agent, demo_data, "SELECT count(*) FROM people", ("salary",)))
    frames = _job(agent, demo_data, f"SELECT * FROM {HELD}.main.c0", ("age",))
    assert [(f.kind, f.name) for f in frames] == [("error", "sql.not_allowed")]


def test_the_syntax_check_remembers_only_passes_and_only_so_many() -> None:
    con = connect()
    names = frozenset({"people"})
    for i in range(agent_sql._PASSED_MAX + 10):
        agent_sql.check_syntax(con, f"SELECT {i} FROM people", names)
    assert len(agent_sql._PASSED) <= agent_sql._PASSED_MAX
    for _ in range(2):
        with pytest.raises(AgentError):
            agent_sql.check_syntax(con, f"SELECT * FROM {HELD}.main.c0", names)
    # the same text with other table names is checked again, not taken from memory
    agent_sql.check_syntax(con, "SELECT 1 FROM people", names)
    with pytest.raises(AgentError):
        agent_sql.check_syntax(con, "SELECT 1 FROM people", frozenset({"other"}))


def test_a_deeply_nested_statement_is_refused_not_crashed() -> None:
    con = connect()
    # DuckDB parses it; its syntax tree is deeper than Python's recursion limit
    sql = "SELECT * FROM " + "(SELECT * FROM " * 400 + "people" + ") x" * 400
    with pytest.raises(AgentError) as err:
        agent_sql.check_syntax(con, sql, frozenset({"people"}))
    assert err.value.code == "sql.not_allowed"
