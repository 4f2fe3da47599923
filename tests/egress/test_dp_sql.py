"""The SQL an operator may write for a DP release: what is allowed, and how everything else
is refused before it runs (the message names the construct, the hint says what to do)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from egress.dp import DatasetCatalog, apply_noise, compile_query
from egress.errors import QueryRefused
from tests.egress.dp_support import (
    DISTRICTS,
    catalogs,
    duck,
    make_residents,
    residents_catalog,
    run_exact,
    visits_catalog,
)

DATA = make_residents(2_000, seed=11)
CON = duck({"residents": DATA})

BENCHMARK_QUERIES = {
    "count": "SELECT COUNT(*) FROM residents",
    "count_by_district": "SELECT district, COUNT(*) FROM residents GROUP BY district",
    "sum_income_by_district": "SELECT district, SUM(income) FROM residents GROUP BY district",
    "avg_age_by_district_sex": (
        "SELECT district, sex, AVG(age) FROM residents GROUP BY district, sex"
    ),
    "elderly_benefits": (
        "SELECT benefit_type, district, COUNT(*) FROM residents WHERE age >= 60 "
        "GROUP BY benefit_type, district"
    ),
}


def compiled(sql: str, **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("epsilon", 1.0)
    return compile_query(sql, catalogs(), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(BENCHMARK_QUERIES))
def test_benchmark_queries_compile_run_and_release(name: str) -> None:
    c = compiled(BENCHMARK_QUERIES[name])
    exact = run_exact(c, CON)
    result = apply_noise(c, exact)
    t = result.table
    expected_rows = {
        "count": 1,
        "count_by_district": 10,
        "sum_income_by_district": 10,
        "avg_age_by_district_sex": 20,
        "elderly_benefits": 40,
    }[name]
    assert t.num_rows == expected_rows
    value_cols = [o.name for o in c.outputs]
    for col in value_cols:
        lo, hi = t.column(f"{col}_ci_low"), t.column(f"{col}_ci_high")
        for v, a, b in zip(t.column(col).to_pylist(), lo.to_pylist(), hi.to_pylist(), strict=True):
            assert a <= v <= b
    assert result.metadata["cost"]["epsilon"] == pytest.approx(1.0, rel=1e-6)


def test_released_values_are_close_to_the_truth() -> None:
    c = compiled(
        "SELECT district, COUNT(*) AS n, AVG(age) AS a FROM residents GROUP BY 1", epsilon=4.0
    )
    t = apply_noise(c, run_exact(c, CON)).table.to_pydict()
    truth = CON.sql(
        "SELECT district, COUNT(*) n, AVG(age) a FROM residents GROUP BY 1 ORDER BY 1"
    ).fetchall()
    for (d, n, a), dn, nn, na in zip(truth, t["district"], t["n"], t["a"], strict=True):
        assert d == dn
        assert abs(nn - n) < 25
        assert abs(na - a) < 10


def test_absent_groups_appear_with_zero_counts() -> None:
    # nobody in D00 is 100+ years old: the group is still released (noisy), not missing
    c = compiled("SELECT district, COUNT(*) FROM residents WHERE age > 100 GROUP BY district")
    exact = run_exact(c, CON)
    assert exact.column("__g0").to_pylist() == list(DISTRICTS)
    assert set(exact.column("__p0").to_pylist()) == {0}
    assert apply_noise(c, exact).table.num_rows == 10


def test_group_by_a_small_integer_range_and_a_literal_case_is_completed() -> None:
    c = compiled(
        "SELECT CASE WHEN age >= 60 THEN 'old' ELSE 'young' END AS band, visits, COUNT(*) "
        "FROM residents GROUP BY band, visits"
    )
    assert c.selection is None  # both keys have public domains: no partition selection
    exact = run_exact(c, CON)
    assert exact.num_rows == 2 * 51


def test_ctes_subqueries_filters_and_joins_on_the_unit_are_allowed() -> None:
    cats = catalogs(residents_catalog(), visits_catalog())
    sql = """
        WITH adults AS (SELECT person_id, district, age FROM residents WHERE age >= 18),
             v AS (SELECT pid, cost * 1.1 AS cost_tax, clinic FROM clinic_visits)
        SELECT a.district, clinic, COUNT(*) AS n, SUM(v.cost_tax) FILTER (WHERE a.age > 65)
        FROM adults AS a JOIN v ON a.person_id = v.pid
        WHERE v.cost_tax > 10
        GROUP BY a.district, clinic
    """
    c = compile_query(sql, cats, epsilon=1.0)
    assert c.contribution_rows == 1 * 5
    visits = pa.table(
        {"pid": [1, 1, 2], "cost": [100.0, 20.0, 5.0], "clinic": ["north", "south", "east"]}
    )
    con = duck({"residents": DATA, "clinic_visits": visits})
    exact = run_exact(c, con)
    assert exact.num_rows == 10 * 3
    c2 = compile_query(
        "SELECT COUNT(*) FROM (SELECT age FROM residents WHERE sex = 'F') AS t WHERE age > 3",
        catalogs(),
        epsilon=1.0,
    )
    assert run_exact(c2, CON).num_rows == 1


def test_every_allowed_aggregate_compiles() -> None:
    c = compiled(
        "SELECT COUNT(*), COUNT(age), COUNT(DISTINCT person_id), SUM(income), AVG(age), "
        "VARIANCE(age), VAR_POP(age), STDDEV(age), STDDEV_POP(age), MEDIAN(age), "
        "QUANTILE_CONT(income, 0.9), QUANTILE_DISC(age, 0.25), "
        "COUNT(*) FILTER (WHERE sex = 'F') FROM residents"
    )
    t = apply_noise(c, run_exact(c, CON)).table
    assert t.num_rows == 1
    assert len(c.outputs) == 13


def test_having_order_by_and_limit_apply_to_noisy_values() -> None:
    c = compiled(
        "SELECT district, COUNT(*) AS n FROM residents GROUP BY district "
        "HAVING COUNT(*) > 0 AND AVG(age) > 0 ORDER BY n DESC, district LIMIT 3"
    )
    assert [o.name for o in c.outputs if o.hidden]  # AVG(age) only in HAVING: hidden, noised
    t = apply_noise(c, run_exact(c, CON)).table
    assert t.num_rows == 3
    assert t.column_names == ["district", "n", "n_ci_low", "n_ci_high"]
    n = t.column("n").to_pylist()
    assert n == sorted(n, reverse=True)


def test_normalized_sql_ignores_case_spacing_and_comments() -> None:
    a = compiled("SELECT district, COUNT(*) FROM residents GROUP BY district")
    b = compiled("select DISTRICT ,count( * ) -- note\nfrom RESIDENTS group by DISTRICT")
    assert a.query_key == b.query_key
    assert (
        compiled("SELECT COUNT(*) FROM residents", epsilon=0.5).query_key
        != compiled("SELECT COUNT(*) FROM residents", epsilon=1.0).query_key
    )


REFUSED = [
    # (sql, words the message must contain)
    ("SELECT * FROM residents", "SELECT *"),
    ("SELECT age FROM residents", "neither aggregated nor in GROUP BY"),
    ("SELECT district, age, COUNT(*) FROM residents GROUP BY district", "neither aggregated"),
    ("SELECT person_id, COUNT(*) FROM residents GROUP BY person_id", "identifier"),
    ("SELECT id_number, COUNT(*) FROM residents GROUP BY 1", "identifier"),
    ("SELECT COUNT(*) FROM residents WHERE name = 'Zhang San'", "identifier"),
    ("SELECT SUM(CASE WHEN name = 'x' THEN income ELSE 0 END) FROM residents", "identifier"),
    ("SELECT COUNT(*) FROM residents UNION ALL SELECT COUNT(*) FROM residents", "UNION"),
    ("SELECT COUNT(*) FROM (SELECT * FROM residents UNION ALL SELECT * FROM residents) t", "UNION"),
    (
        "WITH a AS (SELECT * FROM residents UNION ALL SELECT * FROM residents) "
        "SELECT COUNT(*) FROM a",
        "UNION",
    ),
    ("SELECT COUNT(*) FROM read_csv('/etc/passwd')", "READ_CSV"),
    ("SELECT COUNT(*) FROM 'data.parquet'", "unknown dataset"),
    ("SELECT COUNT(*) FROM main.residents", "schemas"),
    ("SELECT COUNT(*) FROM other_table", "unknown dataset"),
    ("SELECT COUNT(*) OVER () FROM residents", "window"),
    (
        "SELECT district, (SELECT COUNT(*) FROM residents) FROM residents GROUP BY district",
        "subquery",
    ),
    ("SELECT COUNT(*) FROM residents WHERE age IN (SELECT age FROM residents)", "subquery"),
    ("SELECT MAX(income) FROM residents", "MIN and MAX"),
    ("SELECT SUM(income) * 1000 FROM residents", "computes with an aggregate"),
    ("SELECT ROUND(AVG(age), 1) FROM residents", "computes with an aggregate"),
    ("SELECT SUM(income / (age - 50)) FROM residents", "divisor may be 0"),
    ("SELECT SUM(income / age) FROM residents", "divisor may be 0"),
    ("SELECT SUM(occupation) FROM residents", "no public bounds"),
    ("SELECT SUM(EXP(income)) FROM residents", "EXP"),
    ("SELECT SUM(random()) FROM residents", "RANDOM"),
    ("SELECT COUNT(DISTINCT district) FROM residents", "COUNT(DISTINCT"),
    ("SELECT SUM(DISTINCT income) FROM residents", "DISTINCT"),
    ("SELECT DISTINCT district FROM residents", "DISTINCT"),
    ("SELECT COUNT(*) FROM residents a, residents b", "not on the privacy unit"),
    ("SELECT COUNT(*) FROM residents a CROSS JOIN residents b", "CROSS JOIN"),
    (
        "SELECT COUNT(*) FROM residents a JOIN residents b ON a.age = b.age",
        "not on the privacy unit",
    ),
    (
        "SELECT COUNT(*) FROM residents a LEFT JOIN residents b ON a.person_id = b.person_id",
        "LEFT JOIN",
    ),
    (
        "WITH c AS (SELECT district, COUNT(*) AS n FROM residents GROUP BY district) "
        "SELECT SUM(n) FROM c",
        "CTE",
    ),
    ("WITH c AS (SELECT * FROM residents LIMIT 5) SELECT COUNT(*) FROM c", "LIMIT"),
    (
        "WITH c AS (SELECT *, row_number() OVER () AS r FROM residents) SELECT COUNT(*) FROM c",
        "window",
    ),
    ("WITH RECURSIVE c AS (SELECT 1 AS x) SELECT COUNT(*) FROM c", "RECURSIVE"),
    ("SELECT QUANTILE_CONT(age, 1.5) FROM residents", "from 0 to 1"),
    ("SELECT QUANTILE_CONT(age, [0.1, 0.5]) FROM residents", "one number"),
    ("SELECT COUNT(*) FROM residents GROUP BY ROLLUP (district)", "ROLLUP"),
    ("SELECT COUNT(*) FROM residents LIMIT age", "whole number"),
    ("SELECT COUNT(*) FROM residents; DROP TABLE residents", "2 statements"),
    ("DELETE FROM residents", "DELETE"),
    ("COPY residents TO '/tmp/x.csv'", "statements are not allowed"),
    ("SELECT COUNT(*) FROM residents TABLESAMPLE 10%", "samples"),
    ("SELECT COUNT(*) FROM residents WHERE getenv('HOME') = 'x'", "not allowed"),
    ("SELECT COUNT(*) FROM residents QUALIFY 1 = 1", "QUALIFY"),
    ("SELECT COUNT(*) AS __p0 FROM residents", "reserved"),
    ("SELECT COUNT(*) FROM residents GROUP BY nosuchcolumn", "unknown column"),
    ("SELEC COUNT(*) FROM residents", "cannot parse"),
    ("SELECT district FROM residents GROUP BY district", "no aggregate"),
    ("WITH a AS (SELECT * FROM a) SELECT COUNT(*) FROM a", "refers to itself"),
    (
        "WITH a AS (SELECT * FROM residents), "
        + ", ".join(
            f"c{i} AS (SELECT x.person_id FROM {'a' if i == 0 else f'c{i - 1}'} x "
            f"JOIN {'a' if i == 0 else f'c{i - 1}'} y ON x.person_id = y.person_id)"
            for i in range(12)
        )
        + " SELECT COUNT(*) FROM c11",
        "more than 16 times",
    ),
    (
        "SELECT COUNT(*) FROM residents WHERE " + "(" * 3000 + "age > 1" + ")" * 3000,
        "nested too deeply",
    ),
]


@pytest.mark.parametrize(("sql", "words"), REFUSED, ids=[w[:40] for _, w in REFUSED])
def test_refused_before_it_runs_with_a_message_that_names_it(sql: str, words: str) -> None:
    with pytest.raises(QueryRefused) as err:
        compiled(sql)
    assert err.value.code == "egress.query_refused"
    text = err.value.message + " " + err.value.hint
    assert words.lower() in text.lower()
    assert err.value.hint, "every refusal says what to do instead"


def test_privacy_parameters_are_checked() -> None:
    sql = "SELECT COUNT(*) FROM residents"
    for kw in (
        {"epsilon": 0.0},
        {"epsilon": 100.0},
        {"epsilon": 1.0, "delta": 0.5},
        {"epsilon": 1.0, "accuracy": 3.0},
        {},
    ):
        with pytest.raises(QueryRefused):
            compile_query(sql, catalogs(), **kw)  # type: ignore[arg-type]
    with pytest.raises(QueryRefused, match="needs delta > 0"):
        compiled("SELECT occupation, COUNT(*) FROM residents GROUP BY occupation", delta=0.0)


def test_catalog_from_meta_reads_the_validated_catalog_shape() -> None:
    meta = {
        "name": "residents",
        "privacy_unit": "person_id",
        "max_rows_per_unit": 2,
        "columns": [
            {"name": "person_id", "type": "int", "role": "identifier", "grade": "L3"},
            {"name": "age", "type": "int", "role": "quasi_identifier", "bounds": [0, 100]},
            {"name": "sex", "type": "string", "role": "quasi_identifier", "domain": ["M", "F"]},
            {"name": "note", "type": "string", "role": "mystery"},
        ],
    }
    cat = DatasetCatalog.from_meta(meta, version=3, unit_bound_verified=True)
    assert cat.max_rows_per_unit == 2 and cat.version == 3 and cat.unit_bound_verified
    assert cat.column("age").bounds == (0.0, 100.0)
    assert cat.column("sex").domain == ("M", "F")
    assert cat.column("note").role == "identifier"  # unknown roles are the strictest
    with pytest.raises(QueryRefused, match="privacy unit"):
        DatasetCatalog.from_meta({"name": "x", "columns": []})


def test_exact_parts_are_the_bounded_truth_with_nulls_and_out_of_bounds_values() -> None:
    """The parts the sandbox returns are exactly the clamped aggregates, NULLs skipped:
    a NULL is not counted and adds nothing, whatever the lower bound."""
    t = pa.table(
        {
            "person_id": list(range(8)),
            "age": pa.array([10, None, 150, -20, 30, None, 40, 50], type=pa.int64()),
            "income": pa.array([1.5, None, 2e6, -5.0, 100.0, 7.0, None, 0.25]),
            "district": ["D00"] * 8,
            "sex": ["F"] * 8,
        }
    )
    con = duck({"residents": t})
    ages = [10, 100, 0, 30, 40, 50]  # non-NULL ages, clamped to [0, 100]
    c = compiled(
        "SELECT COUNT(age) AS n, SUM(age - 40) AS s, AVG(age) AS a, VAR_POP(age) AS v, "
        "SUM(income) AS si FROM residents"
    )
    row = run_exact(c, con).to_pylist()[0]
    parts = {o.name: {r: c.part(p) for r, p in o.parts.items()} for o in c.outputs}
    assert row[parts["n"]["n"].column] == 6
    s = parts["s"]["s"]
    assert row[s.column] / s.value_scale == sum(a - 40 for a in ages)  # bounds [-40, 60]
    pn, ps, pss = parts["v"]["n"], parts["v"]["s"], parts["v"]["ss"]
    n = row[pn.column]
    s1 = row[ps.column] / ps.value_scale
    s2 = row[pss.column] / pss.value_scale
    mean = sum(ages) / 6
    assert n == 6
    assert c.outputs[2].centre + s1 / n == pytest.approx(mean)
    assert s2 / n - (s1 / n) ** 2 == pytest.approx(sum((a - mean) ** 2 for a in ages) / 6)
    si = parts["si"]["s"]
    assert row[si.column] / si.value_scale == pytest.approx(
        1.5 + 1e6 + 0 + 100 + 7 + 0.25, abs=1e-3
    )
