"""The analysis memo: the same SQL over the same catalogs is analyzed once; any change to a
catalog, or a query that is refused, is analyzed afresh. Compiles are memoized the same way,
by their arguments and the plan they compiled."""

from __future__ import annotations

import pytest

from egress.dp import compile_query
from egress.dp.analyze import analyze
from egress.errors import QueryRefused
from tests.egress.dp_support import catalogs, residents_catalog

SQL = "SELECT district, SUM(income) AS s FROM residents WHERE age >= 18 GROUP BY district"


def test_the_same_query_over_the_same_catalog_reuses_its_plan() -> None:
    first = analyze(SQL, catalogs(residents_catalog()))
    again = analyze(SQL, catalogs(residents_catalog()))  # equal catalog, a new object
    assert again is first


def test_a_changed_catalog_is_analyzed_afresh() -> None:
    first = analyze(SQL, catalogs(residents_catalog()))
    newer = analyze(SQL, catalogs(residents_catalog(version=2)))
    assert newer is not first
    assert newer.data_versions == {"residents": 2}
    stricter = analyze(SQL, catalogs(residents_catalog(max_rows=3)))
    assert stricter.contribution_rows == 3
    # and the first catalog still gets its own plan back
    assert analyze(SQL, catalogs(residents_catalog())) is first


def test_a_memoized_plan_compiles_to_the_same_sql_as_a_fresh_one() -> None:
    a = compile_query(SQL, catalogs(residents_catalog()), epsilon=1.0, delta=1e-8, seed=7)
    b = compile_query(SQL, catalogs(residents_catalog()), epsilon=0.5, delta=1e-8, seed=7)
    assert a.rewritten_sql == b.rewritten_sql
    assert a.query_key != b.query_key  # the privacy parameters still make a new key


def test_a_refused_query_stays_refused() -> None:
    bad = "SELECT name FROM residents"
    for _ in range(2):
        with pytest.raises(QueryRefused):
            analyze(bad, catalogs(residents_catalog()))


def test_the_same_compile_twice_is_compiled_once() -> None:
    a = compile_query(SQL, catalogs(residents_catalog()), epsilon=0.25, delta=1e-8, seed=7)
    b = compile_query(SQL, catalogs(residents_catalog()), epsilon=0.25, delta=1e-8, seed=7)
    assert b is a


def test_any_changed_argument_or_catalog_compiles_afresh() -> None:
    a = compile_query(SQL, catalogs(residents_catalog()), epsilon=1.0, delta=1e-8, seed=7)
    others = [
        compile_query(SQL, catalogs(residents_catalog()), epsilon=1, delta=1e-8, seed=7),
        compile_query(SQL, catalogs(residents_catalog()), epsilon=1.0, delta=1e-7, seed=7),
        compile_query(SQL, catalogs(residents_catalog()), epsilon=1.0, delta=1e-8, seed=8),
        compile_query(SQL, catalogs(residents_catalog(version=2)), epsilon=1.0, delta=1e-8),
        compile_query(SQL, catalogs(residents_catalog(max_rows=3)), epsilon=1.0, delta=1e-8),
    ]
    assert all(o is not a for o in others)
    assert others[0].query_key != a.query_key  # ε 1 and 1.0 are different ledger keys
    assert others[3].data_versions == {"residents": 2}
    assert others[4].contribution_rows == 3


def test_another_epsilon_reuses_the_rewrite_but_not_another_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import egress.dp.compiler as compiler
    from egress.dp.analyze import Plan
    from egress.dp.rewrite import Rewritten, rewrite

    calls: list[int] = []

    def counting(plan: Plan, *, seed: int) -> Rewritten:
        calls.append(seed)
        return rewrite(plan, seed=seed)

    monkeypatch.setattr(compiler, "rewrite", counting)
    sql = "SELECT district, COUNT(*) AS n FROM residents WHERE age >= 30 GROUP BY district"
    a = compile_query(sql, catalogs(residents_catalog()), epsilon=0.31, delta=1e-8, seed=11)
    b = compile_query(sql, catalogs(residents_catalog()), epsilon=0.62, delta=1e-8, seed=11)
    assert calls == [11]
    assert b.rewritten_sql == a.rewritten_sql and b.cost.epsilon > a.cost.epsilon
    c = compile_query(sql, catalogs(residents_catalog()), epsilon=0.31, delta=1e-8, seed=12)
    assert calls == [11, 12]
    assert c.rewritten_sql != a.rewritten_sql  # the seed is in the SQL (the reservoir)
