"""Fixtures for the sandbox tests: a small encrypted dataset, job specs, the Docker engine.

The dataset is written with the enclave's own Parquet encryption
(:mod:`enclave.parquet_crypto`), so every test that reads it in the agent also checks that
the agent's copy of the KMS client matches the enclave's.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enclave.parquet_crypto import encryption_properties
from sandbox.agent.sql import HELD
from sandbox.job import JobKind, JobSpec, TableGrant
from sandbox.limits import SandboxLimits

# Every route a job may try to a column a warm session holds for an earlier job but the job
# was not granted now (sandbox/agent/sql.py); held tables are __held.main.c0, c1, ….
HELD_COLUMN_ROUTES = [
    "SELECT salary FROM people",
    f"SELECT * FROM {HELD}.main.c0",
    f"SELECT * FROM {HELD}.c0",
    f'SELECT * FROM "{HELD}"."main"."c0"',
    f"FROM {HELD}.main.c0",
    "SELECT * FROM c0",
    "SELECT * FROM main.people",
    "SELECT * FROM temp.people",
    f"SELECT (SELECT max(v) FROM {HELD}.main.c0)",
    f"SELECT * FROM people WHERE EXISTS (SELECT 1 FROM {HELD}.main.c0 WHERE v > 0)",
    f"SELECT region FROM people UNION ALL SELECT CAST(v AS VARCHAR) FROM {HELD}.main.c0",
    f"SELECT * FROM people POSITIONAL JOIN {HELD}.main.c0",
    f"SELECT * FROM people, LATERAL (SELECT * FROM {HELD}.main.c0) x",
    f"WITH people AS (SELECT * FROM {HELD}.main.c0) SELECT * FROM people",
    "SELECT * FROM (WITH c0 AS (SELECT 1) SELECT * FROM c0), c0",
    "SELECT * FROM (WITH duckdb_columns AS (SELECT 1) SELECT 1), duckdb_columns",
    "WITH a AS (SELECT * FROM c0), c0 AS (SELECT 1) SELECT * FROM a",
    f"SELECT * FROM query_table('{HELD}.main.c0')",
    f"SELECT * FROM query('SELECT * FROM {HELD}.main.c0')",
    f"SELECT * FROM pragma_storage_info('{HELD}.main.c0')",  # min/max statistics
    f"SELECT * FROM pragma_table_info('{HELD}.main.c0')",
    "SELECT * FROM duckdb_tables()",
    "SELECT * FROM duckdb_tables",
    "SELECT * FROM duckdb_columns()",
    "SELECT * FROM duckdb_views()",
    "SELECT * FROM duckdb_databases()",
    "SELECT * FROM information_schema.columns",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM pg_catalog.pg_class",
    "SELECT * FROM sqlite_master",
    "DESCRIBE people",
    f"SUMMARIZE {HELD}.main.c0",
    "SHOW ALL TABLES",
    "PIVOT people ON region",
    "SELECT * FROM people AT (VERSION => 1)",
    "SELECT * FROM __load",  # the agent's own loading name
    "EXPLAIN SELECT * FROM people",
]

DATASET = "ds_test"
COLUMNS_BY_GRADE = {"low": ["region", "age"], "high": ["salary"]}


@dataclass
class DemoData:
    store: Path
    table: pa.Table
    keys: dict[str, bytes] = field(repr=False)
    path: str = f"{DATASET}/v1"

    def key_ids_for(self, columns: Sequence[str]) -> list[str]:
        grades = {g for g, cols in COLUMNS_BY_GRADE.items() for c in columns if c in cols}
        return [f"{DATASET}.footer", *(f"{DATASET}.{g}" for g in sorted(grades))]

    def spec(
        self,
        code: str,
        kind: JobKind = "sql",
        columns: Sequence[str] = ("region", "age"),
        key_ids: Sequence[str] | None = None,
        **kw: Any,
    ) -> JobSpec:
        ids = self.key_ids_for(columns) if key_ids is None else key_ids
        return JobSpec(
            job_id=kw.pop("job_id", f"J-{uuid.uuid4().hex[:12]}"),
            kind=kind,
            code=code,
            tables={"people": TableGrant(self.path, tuple(columns))},
            keys={k: self.keys[k] for k in ids},
            **kw,
        )


def write_demo(store: Path, rows: int = 1000, parts: int = 2) -> DemoData:
    keys = {f"{DATASET}.{g}": secrets.token_bytes(32) for g in ("footer", *COLUMNS_BY_GRADE)}
    table = pa.table(
        {
            "region": [("north", "south", "east", "west")[i % 4] for i in range(rows)],
            "age": [18 + i % 60 for i in range(rows)],
            "salary": [1000.0 + 7 * i for i in range(rows)],
        }
    )
    folder = store / DATASET / "v1"
    folder.mkdir(parents=True)
    step = -(-rows // parts)
    for i in range(parts):
        props = encryption_properties(DATASET, keys, COLUMNS_BY_GRADE)
        pq.write_table(
            table.slice(i * step, step),
            folder / f"part-{i:05d}.parquet",
            encryption_properties=props,
        )
    return DemoData(store, table, keys)


@pytest.fixture
def demo_data(tmp_path: Path) -> DemoData:
    return write_demo(tmp_path / "store")


@pytest.fixture
def small_limits() -> SandboxLimits:
    return SandboxLimits(
        memory_bytes=512 * 1024**2,
        pids_limit=64,
        cpus=1.0,
        tmpfs_bytes=16 * 1024**2,
        timeout_s=30.0,
        max_output_bytes=4 * 1024**2,
    )


# --- Docker -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    from sandbox.engine import docker_client as make
    from sandbox.errors import EngineUnavailable

    try:
        client = make()
    except EngineUnavailable:
        if os.environ.get("CI"):
            pytest.fail("CI must run the Docker tests: no engine (scripts/ensure-docker.sh)")
        pytest.skip("no Docker engine")
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_image_id(docker_client: Any) -> str:
    """The sandbox image (built by `shuyu image build` in scripts/test.sh; reused here)."""
    from sandbox.image import build_image

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shuyu" / "image"
    return build_image(docker_client, "shuyu-sandbox", cache).image_id
