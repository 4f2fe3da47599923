"""Factories for the egress-gate tests: a synthetic people table, its catalog, aggregates.

Values are made up; ids look like real ones (18-character ID numbers, P-prefixed person
ids, two- or three-character names) so the identifier scans face realistic strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from egress.checks import ColumnInfo, DatasetInfo, OutputSpec, Thresholds
from egress.checks.stats_sql import Measure, run_aggregate

SALT = "test-unit-salt"
DISTRICTS = [chr(ord("A") + i) for i in range(8)]
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"

CATALOG: dict[str, DatasetInfo] = {
    "people": DatasetInfo(
        "people",
        "person_id",
        (
            ColumnInfo("person_id", "string", "identifier", "L4"),
            ColumnInfo("id_number", "string", "identifier", "L4"),
            ColumnInfo("name", "string", "identifier", "L4"),
            ColumnInfo("district", "string", "quasi_identifier", "L2"),
            ColumnInfo("age", "int", "quasi_identifier", "L3"),
            ColumnInfo("sex", "string", "quasi_identifier", "L2"),
            ColumnInfo("income", "float", "sensitive", "L3"),
        ),
        version=1,
    )
}


def people(n: int = 2000, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = [f"P{i:07d}" for i in range(n)]
    birth = rng.integers(0, 365 * 60, n)
    id_numbers = [
        f"{110101 + int(rng.integers(0, 90)):06d}{19600101 + int(b) % 400000:08d}"
        f"{int(rng.integers(0, 9999)):04d}"
        for b in birth
    ]
    names = [
        _SURNAMES[int(rng.integers(0, len(_SURNAMES)))]
        + "".join(_GIVEN[int(rng.integers(0, len(_GIVEN)))] for _ in range(int(rng.integers(1, 3))))
        for _ in range(n)
    ]
    return pa.table(
        {
            "person_id": ids,
            "id_number": id_numbers,
            "name": names,
            "district": [DISTRICTS[int(i)] for i in rng.integers(0, len(DISTRICTS), n)],
            "age": rng.integers(18, 90, n).astype(np.int64),
            "sex": [("F", "M")[int(i)] for i in rng.integers(0, 2, n)],
            "income": np.round(rng.lognormal(10.5, 0.6, n), 2),
        }
    )


def source_conn(table: pa.Table) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.register("people", table)
    return conn


def aggregate(
    conn: duckdb.DuckDBPyConnection,
    keys: Sequence[str],
    measures: Sequence[Measure],
    *,
    where: str | None = None,
    name: str = "result",
    mode: Any = "sdc_aggregate",
) -> OutputSpec:
    return run_aggregate(
        conn,
        "people",
        keys,
        measures,
        "person_id",
        SALT,
        datasets=("people",),
        name=name,
        where=where,
        mode=mode,
    )


COUNT = Measure("n", "count")
SUM_INCOME = Measure("total_income", "sum", "income")
MEAN_INCOME = Measure("mean_income", "mean", "income")
DEFAULT = Thresholds()
