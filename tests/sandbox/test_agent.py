"""The agent in-process: reading enclave-encrypted files, locked DuckDB, RestrictedPython."""

from __future__ import annotations

import io
import zipfile

import pyarrow as pa
import pytest

from sandbox.agent.api import Artifacts, JobApi, holdout_mask
from sandbox.agent.crypto import KeyRing
from sandbox.agent.data import TableCache, TableSpec, parse_datasets
from sandbox.agent.errors import AgentError
from sandbox.agent.protocol import FrameReader
from sandbox.agent.restricted import run_python
from sandbox.agent.sql import connect, run_sql
from tests.sandbox.conftest import DemoData


def _load(demo: DemoData, columns: tuple[str, ...], key_ids: list[str]) -> dict[str, pa.Table]:
    ring = KeyRing({k: demo.keys[k] for k in key_ids})
    return TableCache(demo.store).load({"people": TableSpec("people", demo.path, columns)}, ring)


def test_a_file_written_by_the_enclave_reads_in_the_agent(demo_data: DemoData) -> None:
    cols = ("region", "age", "salary")
    tables = _load(demo_data, cols, demo_data.key_ids_for(cols))
    assert tables["people"].equals(demo_data.table)


def test_a_column_whose_key_was_not_released_cannot_be_read(demo_data: DemoData) -> None:
    with pytest.raises(AgentError) as err:
        _load(demo_data, ("salary",), demo_data.key_ids_for(["age"]))  # low key only
    assert err.value.code == "data.key_missing"


def test_without_the_footer_key_nothing_reads(demo_data: DemoData) -> None:
    with pytest.raises(AgentError) as err:
        _load(demo_data, ("age",), [f"{demo_data.path.split('/')[0]}.low"])
    assert err.value.code == "data.key_missing"


def test_a_warm_cache_does_not_serve_columns_to_a_job_without_their_keys(
    demo_data: DemoData,
) -> None:
    cache = TableCache(demo_data.store, connect(held=True))
    spec = {"people": TableSpec("people", demo_data.path, ("salary",))}
    full = KeyRing({k: demo_data.keys[k] for k in demo_data.key_ids_for(["salary"])})
    assert cache.load(spec, full)["people"].num_rows == 1000
    with pytest.raises(AgentError) as err:
        cache.load(spec, KeyRing({k: demo_data.keys[k] for k in demo_data.key_ids_for(["age"])}))
    assert err.value.code == "data.key_missing"


@pytest.mark.parametrize(
    "raw",
    [
        {"people": {"path": "../etc", "columns": ["a"]}},
        {"people": {"path": "/etc", "columns": ["a"]}},
        {"people": {"path": "ds/v1", "columns": []}},
        ["not", "a", "dict"],
    ],
)
def test_dataset_paths_outside_the_data_root_are_refused(raw: object) -> None:
    with pytest.raises(AgentError) as err:
        parse_datasets(raw)
    assert err.value.code == "job.invalid"


# --- SQL --------------------------------------------------------------------------------------


@pytest.fixture
def people() -> dict[str, pa.Table]:
    return {"people": pa.table({"region": ["a", "b", "a"], "age": [30, 40, 50]})}


def test_one_select_runs_and_returns_arrow(people: dict[str, pa.Table]) -> None:
    out = run_sql(connect(), "SELECT region, sum(age) s FROM people GROUP BY 1 ORDER BY 1", people)
    assert out.to_pylist() == [{"region": "a", "s": 80}, {"region": "b", "s": 40}]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "COPY people TO '/tmp/out.csv'",
        "ATTACH '/tmp/x.db' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "PRAGMA enable_external_access",
        "CREATE TABLE t AS SELECT 1",
        "SELECT 1; SELECT 2",
        "SELECT * FROM people; COPY people TO '/tmp/x'",
        "SELECT * FROM query('COPY people TO ''/tmp/x.csv''')",
        "SELECT * FROM 'data/ds/v1/part-00000.parquet'",
    ],
)
def test_refused_sql_never_runs(people: dict[str, pa.Table], sql: str) -> None:
    con = connect()
    with pytest.raises(AgentError) as err:
        run_sql(con, sql, people)
    assert err.value.code in {"sql.not_allowed", "sql.error"}
    # and the configuration is still locked down afterwards
    rows = con.execute(
        "SELECT value FROM duckdb_settings() WHERE name IN "
        "('enable_external_access', 'lock_configuration') ORDER BY name"
    ).fetchall()
    assert rows == [("false",), ("true",)]


def test_sql_errors_carry_no_data_values(people: dict[str, pa.Table]) -> None:
    with pytest.raises(AgentError) as err:
        run_sql(connect(), "SELECT CAST(region AS INTEGER) FROM people", people)
    assert err.value.code == "sql.error"
    assert str(err.value) == "sql.error"  # the engine's message (quoting 'a') is gone


# --- RestrictedPython ---------------------------------------------------------------------


def _py(source: str, tables: dict[str, pa.Table] | None = None) -> Artifacts:
    artifacts = Artifacts()
    run_python(
        source, JobApi(tables or {"people": pa.table({"x": [1.0, 2.0, 3.0]})}, {}, artifacts)
    )
    return artifacts


def _code(source: str) -> str:
    with pytest.raises(AgentError) as err:
        _py(source)
    return err.value.code


def test_a_python_job_can_compute_and_emit_table_metric_and_model() -> None:
    arts = _py(
        "import numpy as np\n"
        "from sklearn.linear_model import LinearRegression\n"
        "df = shuyu.table('people')\n"
        "df['y'] = df['x'] * 2\n"
        "total = 0\n"
        "for v in df['x']:\n"
        "    total += v\n"
        "shuyu.emit_metric('total', total)\n"
        "shuyu.emit_table('doubled', df)\n"
        "shuyu.emit_model('lr', LinearRegression().fit(df[['x']], df['y']))\n"
    )
    frames = FrameReader(10**8).feed(b"".join(arts.frames))
    assert [(f.kind, f.name) for f in frames] == [
        ("metric", "total"),
        ("table", "doubled"),
        ("model", "lr"),
    ]
    assert frames[0].payload == b"6.0"
    assert "schema.json" in zipfile.ZipFile(io.BytesIO(frames[2].payload)).namelist()


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("x = '{0.__class__}'.format(1)", "python.not_allowed"),
        ("f = 'a{0}'.format\n", "python.not_allowed"),
        ("s = '{}'\nf = getattr(s, 'format')", "python.not_allowed"),
        ("x = ().__class__.__bases__[0].__subclasses__()", "python.compile"),
        ("x = getattr((), '__class__')", "python.not_allowed"),
        ("def g():\n    yield 1\nx = g().gi_frame", "python.compile"),
        ("def g():\n    yield 1\nx = getattr(g(), 'gi_frame')", "python.not_allowed"),
        ("import sys\nx = sys._getframe().f_back", "python.compile"),
        ("try:\n    pass\nexcept* ValueError:\n    pass", "python.compile"),
        ("import operator\nf = operator.attrgetter('__class__')", "python.not_allowed"),
        ("from operator import attrgetter", "python.not_allowed"),
        ("import os", "python.not_allowed"),
        # fixing numpy's global generator would let the operator know a DP model's noise
        ("import numpy as np\nnp.random.seed(1)", "python.not_allowed"),
        ("from numpy.random import seed", "python.not_allowed"),
        ("import numpy as np\nnp.random.set_state(np.random.get_state())", "python.not_allowed"),
        ("import subprocess", "python.not_allowed"),
        ("import pandas\npandas.read_csv('/etc/passwd')", "python.not_allowed"),
        ("import pandas\nx = pandas.io", "python.not_allowed"),
        ("import numpy\nnumpy.load('/data/x')", "python.not_allowed"),
        ("import numpy\nx = numpy.ctypeslib", "python.not_allowed"),
        ("shuyu.table('people').to_csv('/tmp/x')", "python.not_allowed"),
        ("shuyu.table('people').to_pickle('/tmp/x')", "python.not_allowed"),
        ("shuyu.table('people').query('x > 1')", "python.not_allowed"),
        ("x = shuyu._tables", "python.compile"),
        ("x = getattr(shuyu, '_tables')", "python.not_allowed"),
        ("open('/etc/passwd')", "python.not_allowed"),
        ("eval('1')", "python.compile"),
        ("exec('x = 1')", "python.compile"),
        ("x = type(1)", "python.not_allowed"),
        ("import math\nmath.pi = 3", "python.error"),
        ("from sklearn import datasets", "python.not_allowed"),
        ("shuyu.table('nope')", "data.unknown_table"),
        ("shuyu.emit_metric('Bad Name', 1)", "python.bad_artifact"),
        ("shuyu.emit_metric('m', float('nan'))", "python.bad_artifact"),
        ("shuyu.emit_model('m', shuyu)", "python.bad_artifact"),
        ("x = 1 / 0", "python.error"),
        ("def f(:\n  pass", "python.compile"),
    ],
)
def test_restricted_python_refuses_escapes(source: str, code: str) -> None:
    assert _code(source) == code


def test_the_holdout_never_reaches_the_job_and_is_reproducible() -> None:
    table = pa.table({"x": list(range(1000))})
    arts = Artifacts()
    from sandbox.agent.api import HoldoutSpec

    api = JobApi({"t": table}, {"t": HoldoutSpec(0.2, 7)}, arts)
    seen = set(api.table("t")["x"])
    held = {i for i, h in enumerate(holdout_mask(1000, 0.2, 7)) if h}
    assert seen.isdisjoint(held)
    assert len(seen) + len(held) == 1000
    assert 150 < len(held) < 250


def test_a_warm_cache_serves_a_job_with_the_same_keys_from_memory(
    demo_data: DemoData,
) -> None:
    import secrets
    import shutil

    cache = TableCache(demo_data.store, connect(held=True))
    spec = {"people": TableSpec("people", demo_data.path, ("salary",))}
    ids = demo_data.key_ids_for(["salary"])
    first = cache.load(spec, KeyRing({k: demo_data.keys[k] for k in ids}))
    shutil.rmtree(demo_data.store / demo_data.path)  # no decrypting possible any more
    again = cache.load(spec, KeyRing({k: demo_data.keys[k] for k in ids}))
    assert again["people"].equals(first["people"])
    forged = {k: secrets.token_bytes(32) for k in ids}  # right ids, wrong keys
    with pytest.raises(AgentError) as err:
        cache.load(spec, KeyRing(forged))
    assert err.value.code in {"data.key_missing", "data.unavailable"}
