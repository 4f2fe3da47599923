"""Shared helpers of the DP tests: the demo `residents` catalog, synthetic data, DuckDB."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import duckdb
import numpy as np
import pyarrow as pa

from egress.dp import ColumnSpec, CompiledQuery, DatasetCatalog

DISTRICTS = tuple(f"D{i:02d}" for i in range(10))
BENEFITS = ("none", "pension", "disability", "housing")
OCCUPATIONS = ("farmer", "teacher", "doctor", "driver", "clerk")


def residents_catalog(
    *, max_rows: int = 1, verified: bool = False, version: int = 1
) -> DatasetCatalog:
    return DatasetCatalog.build(
        "residents",
        privacy_unit="person_id",
        max_rows_per_unit=max_rows,
        version=version,
        unit_bound_verified=verified,
        columns=[
            ColumnSpec("person_id", "int", "identifier"),
            ColumnSpec("id_number", "string", "identifier"),
            ColumnSpec("name", "string", "identifier"),
            ColumnSpec("district", "string", "quasi_identifier", domain=DISTRICTS),
            ColumnSpec("age", "int", "quasi_identifier", bounds=(0, 100)),
            ColumnSpec("sex", "string", "quasi_identifier", domain=("M", "F")),
            ColumnSpec("income", "float", "sensitive", bounds=(0, 1_000_000)),
            ColumnSpec("benefit_type", "string", "sensitive", domain=BENEFITS),
            ColumnSpec("visits", "int", "attribute", bounds=(0, 50)),
            ColumnSpec("occupation", "string", "attribute"),
        ],
    )


def visits_catalog(*, max_rows: int = 5, verified: bool = False) -> DatasetCatalog:
    return DatasetCatalog.build(
        "clinic_visits",
        privacy_unit="pid",
        max_rows_per_unit=max_rows,
        unit_bound_verified=verified,
        columns=[
            ColumnSpec("pid", "int", "identifier"),
            ColumnSpec("cost", "float", "sensitive", bounds=(0, 5_000)),
            ColumnSpec("clinic", "string", "attribute", domain=("north", "south", "east")),
        ],
    )


def catalogs(*cats: DatasetCatalog) -> Callable[[str], DatasetCatalog]:
    by_name = {c.name: c for c in cats} if cats else {"residents": residents_catalog()}

    def lookup(name: str) -> DatasetCatalog:
        return by_name[name]

    return lookup


def make_residents(n: int, seed: int = 0, rows_per_unit: int = 1) -> pa.Table:
    """`n` people, each with `rows_per_unit` rows (the same person, other visits/income)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n), rows_per_unit)
    m = ids.size
    person = {
        "district": rng.choice(DISTRICTS, n),
        "age": rng.integers(0, 100, n),
        "sex": rng.choice(["M", "F"], n),
        "benefit_type": rng.choice(BENEFITS, n),
        "occupation": rng.choice(OCCUPATIONS, n, p=[0.4, 0.3, 0.15, 0.1, 0.05]),
    }
    return pa.table(
        {
            "person_id": ids,
            "id_number": [f"4301{i:014d}" for i in ids],
            "name": [f"name{i}" for i in ids],
            "district": person["district"][ids],
            "age": person["age"][ids],
            "sex": person["sex"][ids],
            "income": np.round(rng.gamma(2.0, 30_000.0, m), 2),
            "benefit_type": person["benefit_type"][ids],
            "visits": rng.poisson(3, m),
            "occupation": person["occupation"][ids],
        }
    )


def duck(tables: Mapping[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name, t in tables.items():
        con.register(name, t)
    return con


def run_exact(compiled: CompiledQuery, con: duckdb.DuckDBPyConnection) -> pa.Table:
    return con.sql(compiled.rewritten_sql).to_arrow_table()
