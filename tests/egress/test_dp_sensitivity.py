"""Attack tests: does any query end with more sensitivity than the gate declared?

For each query, the rewritten SQL runs in an in-process DuckDB on a dataset and on its
neighbours — one person added (with more rows than the catalog allows and values far
outside the public bounds, NaN, NULL, values that make expressions raise) or one person
removed. Every exact part must change by at most its declared sensitivity: L1 and L2 over
the vector of groups, and per group. Queries that try to escape (self-joins, duplicated
CTEs, arithmetic and CASE tricks, division by tiny values, absent groups) either are refused
(see test_dp_sql.py) or pass this test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from egress.dp import CompiledQuery, compile_query
from tests.egress.dp_support import (
    catalogs,
    duck,
    make_residents,
    residents_catalog,
    run_exact,
    visits_catalog,
)

QUERIES = [
    # the five benchmark queries
    "SELECT COUNT(*) FROM residents",
    "SELECT district, COUNT(*) FROM residents GROUP BY district",
    "SELECT district, SUM(income) FROM residents GROUP BY district",
    "SELECT district, sex, AVG(age) FROM residents GROUP BY district, sex",
    "SELECT benefit_type, district, COUNT(*) FROM residents WHERE age >= 60 "
    "GROUP BY benefit_type, district",
    # more rows per person: self-join, duplicated CTE, a CTE joined three times
    "SELECT COUNT(*), SUM(a.income) FROM residents a JOIN residents b ON a.person_id = b.person_id",
    "WITH a AS (SELECT * FROM residents), b AS (SELECT * FROM residents) "
    "SELECT a.district, COUNT(*) FROM a JOIN b ON a.person_id = b.person_id GROUP BY 1",
    "WITH a AS (SELECT person_id, income FROM residents) SELECT SUM(x.income) FROM a x "
    "JOIN a y ON x.person_id = y.person_id JOIN a z ON z.person_id = y.person_id",
    # escaping the clamp: arithmetic, CASE, tiny divisors
    "SELECT SUM(income * 1000) FROM residents",
    "SELECT district, SUM(income * income) FROM residents GROUP BY district",
    "SELECT SUM(CASE WHEN age > 99 THEN income * 1000000 ELSE -income END) FROM residents",
    "SELECT SUM(income / (age + 0.000001)) FROM residents",
    "SELECT AVG(income / (visits + 1)), AVG(-age * 3 + 7) FROM residents",
    "SELECT sex, SUM(GREATEST(income, 5000000)), SUM(ABS(age - 200)) FROM residents GROUP BY sex",
    # every aggregate
    "SELECT district, AVG(age), VARIANCE(income), STDDEV(visits), VAR_POP(age) "
    "FROM residents GROUP BY district",
    "SELECT sex, MEDIAN(income), QUANTILE_CONT(age, 0.9), QUANTILE_DISC(visits, 0.1) "
    "FROM residents GROUP BY sex",
    "SELECT COUNT(DISTINCT person_id), COUNT(age), COUNT(*) FILTER (WHERE income > 1e5) "
    "FROM residents",
    # expressions that raise on some rows: TRY keeps the job from failing on one person
    "SELECT COUNT(*) FROM residents WHERE 1 / (age - 50) > 0",
    "SELECT SUM(visits) FILTER (WHERE CAST(occupation AS INT) > 0) FROM residents",
    # absent groups and private group keys
    "SELECT district, COUNT(*) FROM residents WHERE income > 999999 GROUP BY district",
    "SELECT CASE WHEN age >= 60 THEN 'old' ELSE 'young' END AS band, COUNT(*) "
    "FROM residents GROUP BY band",
    "SELECT occupation, COUNT(*), SUM(visits) FROM residents GROUP BY occupation",
    "SELECT occupation, district, AVG(age) FROM residents GROUP BY occupation, district",
    # HAVING/ORDER BY do not touch the exact table
    "SELECT district, COUNT(*) AS n FROM residents GROUP BY district HAVING SUM(income) > 0 "
    "ORDER BY n DESC LIMIT 2",
]

INTRUDER_ROWS = 40  # far above max_rows_per_unit


def intruder(person_id: int) -> pa.Table:
    """One person with many rows and values chosen to break bounds and expressions."""
    n = INTRUDER_ROWS
    rng = np.random.default_rng(person_id)
    income = [1e12, -1e9, float("nan"), float("inf"), None, 0.0, 999_999.0, 1e6] * (n // 8)
    age = [500, -3, None, 50, 100, 0, 60, 99] * (n // 8)
    return pa.table(
        {
            "person_id": [person_id] * n,
            "id_number": ["x"] * n,
            "name": ["intruder"] * n,
            "district": [f"D0{i % 10}" if i % 5 else "ZZZ" for i in range(n)],
            "age": pa.array(age, type=pa.int64()),
            "sex": ["F", "M", "X", None] * (n // 4),
            "income": pa.array(income, type=pa.float64()),
            "benefit_type": ["pension"] * n,
            "visits": pa.array(rng.integers(0, 10**6, n), type=pa.int64()),
            "occupation": [f"unique-{i % 7}" for i in range(n)],
        }
    )


def with_intruder(base: pa.Table, person_id: int, rows: int | None = None) -> pa.Table:
    extra = intruder(person_id)
    if rows is not None:
        extra = extra.slice(0, rows)
    return pa.concat_tables([base, extra.cast(base.schema)])


def without(base: pa.Table, person_id: int) -> pa.Table:
    mask = pa.compute.not_equal(base.column("person_id"), person_id)
    return base.filter(mask)


def by_group(c: CompiledQuery, t: pa.Table) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = t.to_pylist()
    return {tuple(r[g] for g in c.group_columns): r for r in rows}


def assert_within_sensitivity(c: CompiledQuery, a: pa.Table, b: pa.Table) -> None:
    ga, gb = by_group(c, a), by_group(c, b)
    keys = set(ga) | set(gb)
    for p in c.parts:
        if p.kind == "histogram":
            for k in keys:
                ha = dict(ga.get(k, {}).get(p.column) or [])
                hb = dict(gb.get(k, {}).get(p.column) or [])
                moved = sum(abs(ha.get(s, 0) - hb.get(s, 0)) for s in set(ha) | set(hb))
                assert moved <= p.linf, f"{p.column}: {moved} rows moved in group {k}"
            continue
        deltas = [
            float(gb.get(k, {}).get(p.column) or 0) - float(ga.get(k, {}).get(p.column) or 0)
            for k in keys
        ]
        l1 = sum(abs(d) for d in deltas)
        l2 = math.sqrt(sum(d * d for d in deltas))
        linf = max((abs(d) for d in deltas), default=0.0)
        assert l1 <= p.l1 + 1e-9, f"{p.column} ({p.kind}): L1 change {l1} > {p.l1}"
        assert l2 <= p.l2 + 1e-9, f"{p.column} ({p.kind}): L2 change {l2} > {p.l2}"
        assert linf <= p.linf + 1e-9, f"{p.column} ({p.kind}): change {linf} > {p.linf}"
    if c.units_column:
        changed = [
            abs((gb.get(k, {}).get(c.units_column) or 0) - (ga.get(k, {}).get(c.units_column) or 0))
            for k in keys
        ]
        assert max(changed, default=0) <= 1
        assert sum(1 for d in changed if d) <= c.contribution_rows


@pytest.mark.parametrize("max_rows", [1, 3])
@pytest.mark.parametrize("sql", QUERIES)
def test_one_person_changes_no_part_by_more_than_declared(sql: str, max_rows: int) -> None:
    base = make_residents(400, seed=5, rows_per_unit=max_rows)
    c = compile_query(sql, catalogs(residents_catalog(max_rows=max_rows)), epsilon=1.0, seed=42)
    exact = run_exact(c, duck({"residents": base}))
    added = run_exact(c, duck({"residents": with_intruder(base, 10_000)}))
    removed = run_exact(c, duck({"residents": without(base, 7)}))
    assert_within_sensitivity(c, exact, added)
    assert_within_sensitivity(c, exact, removed)


@pytest.mark.parametrize("sql", QUERIES[:8])
def test_verified_bounds_skip_the_reservoir_and_still_hold(sql: str) -> None:
    """With the import's verification, a neighbour has at most max_rows rows (that is what
    was verified), however extreme its values."""
    base = make_residents(400, seed=6, rows_per_unit=2)
    c = compile_query(sql, catalogs(residents_catalog(max_rows=2, verified=True)), epsilon=1.0)
    assert "row_number()" not in c.rewritten_sql
    exact = run_exact(c, duck({"residents": base}))
    added = run_exact(c, duck({"residents": with_intruder(base, 10_000, rows=2)}))
    assert_within_sensitivity(c, exact, added)


@pytest.mark.parametrize("sql", QUERIES[:5])
def test_a_verified_not_null_unit_is_not_even_read(sql: str) -> None:
    """The import refused NULL units and checked the bound: the unit column is not read
    unless something counts units, and the sensitivity still holds."""
    import dataclasses

    cat = residents_catalog(max_rows=2, verified=True)
    unit = dataclasses.replace(cat.columns["person_id"], nullable=False)
    cat = dataclasses.replace(cat, columns={**cat.columns, "person_id": unit})
    c = compile_query(sql, catalogs(cat), epsilon=1.0)
    assert "person_id" not in c.rewritten_sql
    base = make_residents(300, seed=12, rows_per_unit=2)
    exact = run_exact(c, duck({"residents": base}))
    added = run_exact(c, duck({"residents": with_intruder(base, 10_000, rows=2)}))
    assert_within_sensitivity(c, exact, added)


def test_a_join_across_datasets_is_bounded_by_the_product() -> None:
    cats = catalogs(residents_catalog(max_rows=1), visits_catalog(max_rows=3))
    sql = (
        "SELECT r.district, clinic, COUNT(*), SUM(cost), AVG(r.age) FROM residents r "
        "JOIN clinic_visits v ON r.person_id = v.pid GROUP BY 1, 2"
    )
    c = compile_query(sql, cats, epsilon=1.0)
    assert c.contribution_rows == 3
    base = make_residents(300, seed=8)
    rng = np.random.default_rng(8)
    pids = np.repeat(np.arange(300), 3)
    visits = pa.table(
        {
            "pid": pids,
            "cost": rng.uniform(0, 5000, pids.size),
            "clinic": rng.choice(["north", "south", "east"], pids.size),
        }
    )
    extra_v = pa.table(
        {"pid": [10_000] * 30, "cost": [1e9] * 30, "clinic": ["north", "south", "east"] * 10}
    )
    exact = run_exact(c, duck({"residents": base, "clinic_visits": visits}))
    added = run_exact(
        c,
        duck(
            {
                "residents": with_intruder(base, 10_000),
                "clinic_visits": pa.concat_tables([visits, extra_v]),
            }
        ),
    )
    assert_within_sensitivity(c, exact, added)


def test_the_reservoir_is_reproducible_per_seed() -> None:
    data = make_residents(300, seed=9, rows_per_unit=5)
    con = duck({"residents": data})
    sql = "SELECT district, SUM(income) FROM residents GROUP BY district"
    cat = catalogs(residents_catalog(max_rows=2))
    a = run_exact(compile_query(sql, cat, epsilon=1.0, seed=1), con)
    b = run_exact(compile_query(sql, cat, epsilon=1.0, seed=1), con)
    c = run_exact(compile_query(sql, cat, epsilon=1.0, seed=2), con)
    assert a.equals(b)
    assert not a.equals(c)  # another job's seed keeps another 2 of each person's 5 rows
    # each person contributed at most 2 rows
    n = run_exact(compile_query("SELECT COUNT(*) FROM residents", cat, epsilon=1.0), con)
    assert n.column("__p0")[0].as_py() == 600


def test_declared_sensitivities_follow_bounds_and_contribution_only() -> None:
    c = compile_query(
        "SELECT SUM(income), COUNT(*), COUNT(DISTINCT person_id) FROM residents",
        catalogs(residents_catalog(max_rows=3)),
        epsilon=1.0,
    )
    s, n, u = c.parts
    assert s.l1 / s.value_scale == pytest.approx(3 * 1_000_000)  # m · max|bound|, real units
    assert (n.l1, n.l2) == (3, 3)
    assert (u.l1, u.l2, u.linf) == (3, pytest.approx(math.sqrt(3)), 1)
