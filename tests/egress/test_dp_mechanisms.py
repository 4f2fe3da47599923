"""The noise: each mechanism's scale matches the ε it declares, the 95% intervals cover the
bounded truth about 95% of the time, the accountant agrees with OpenDP, quantiles score as
OpenDP scores, and partition selection drops the groups it must.

Noise comes from OpenDP's CSPRNG and cannot be seeded (a seed would let anyone subtract it),
so these tests are statistical; their tolerances are many standard errors wide.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import opendp.prelude as dp
import pyarrow as pa
import pytest

from egress.dp import apply_noise, compile_query, epsilon_from_rho, rho_from_epsilon
from egress.dp.mechanisms import (
    _threshold_measurement,
    half_width_95,
    noisy_vector,
    partition_threshold,
    vector_cost,
)
from egress.dp.quantiles import QuantileGrid, alpha_fraction, scores_from_slots
from tests.egress.dp_support import catalogs, duck, make_residents, run_exact

dp.enable_features("contrib")

DATA = make_residents(20_000, seed=21)
CON = duck({"residents": DATA})


def draws(mode: str, scale: float, n: int) -> np.ndarray:
    return np.array(noisy_vector(mode, scale, [0] * n), dtype=float)  # type: ignore[arg-type]


# -- each mechanism's noise matches its declared privacy ---------------------------------


def test_discrete_gaussian_scale_matches_the_declared_epsilon() -> None:
    c = compile_query("SELECT COUNT(*) FROM residents", catalogs(), epsilon=1.0, delta=1e-6)
    (p,) = c.parts
    assert p.mode == "zcdp"
    rho = p.l2**2 / (2 * p.scale**2)  # the discrete Gaussian's zCDP
    assert p.cost == pytest.approx(rho, rel=1e-9)  # OpenDP's map says the same
    assert c.cost.rho == pytest.approx(rho, rel=1e-9)
    assert epsilon_from_rho(rho, 1e-6) == pytest.approx(1.0, rel=1e-6)
    x = draws("zcdp", p.scale, 40_000)
    assert abs(x.mean()) < 6 * p.scale / math.sqrt(x.size)
    assert x.std() == pytest.approx(p.scale, rel=0.03)


def test_discrete_laplace_scale_matches_the_declared_epsilon() -> None:
    c = compile_query("SELECT COUNT(*) FROM residents", catalogs(), epsilon=0.5, delta=0.0)
    (p,) = c.parts
    assert p.mode == "pure" and c.cost.pure
    assert p.scale == pytest.approx(p.l1 / 0.5)
    assert c.cost.epsilon == pytest.approx(0.5) and c.cost.delta == 0.0
    x = draws("pure", p.scale, 40_000)
    q = math.exp(-1 / p.scale)
    assert x.var() == pytest.approx(2 * q / (1 - q) ** 2, rel=0.05)


def test_sums_are_noised_in_fixed_point_at_the_declared_scale() -> None:
    c = compile_query(
        "SELECT district, SUM(income) AS s FROM residents GROUP BY district",
        catalogs(),
        epsilon=1.0,
        delta=1e-6,
    )
    (p,) = c.parts
    exact = run_exact(c, CON)
    truth = np.array(exact.column("__p0").to_pylist()) / p.value_scale
    errors = np.concatenate(
        [np.array(apply_noise(c, exact).table.column("s").to_pylist()) - truth for _ in range(150)]
    )
    sigma_real = p.scale / p.value_scale
    assert errors.std() == pytest.approx(sigma_real, rel=0.06)
    # σ = m · max|bound| / sqrt(2ρ): the sensitivity is the bound, in real units
    assert sigma_real == pytest.approx(1_000_000 / math.sqrt(2 * c.cost.rho), rel=1e-6)


_COSTED = [
    "SELECT district, COUNT(*), SUM(income), AVG(age) FROM residents GROUP BY district",
    "SELECT sex, VARIANCE(age), MEDIAN(income) FROM residents GROUP BY sex",
    "SELECT occupation, COUNT(*) FROM residents GROUP BY occupation",
]


@pytest.mark.parametrize(
    ("sql", "delta"),
    [(q, d) for q in _COSTED for d in (1e-6, 0.0) if d > 0 or "occupation" not in q],
)
def test_the_query_costs_what_it_was_given(sql: str, delta: float) -> None:
    c = compile_query(sql, catalogs(), epsilon=0.8, delta=delta)
    parts = sum(p.cost for p in c.parts)
    if delta == 0:
        assert c.cost.epsilon == pytest.approx(0.8, rel=1e-9) and parts == pytest.approx(0.8)
    else:
        sel = c.selection.rho if c.selection else 0.0
        assert c.cost.rho == pytest.approx(parts + sel, rel=1e-12)
        # partition selection may use a little less delta than its share: epsilon <= asked
        assert c.cost.epsilon == pytest.approx(0.8, rel=1e-6 if sel == 0 else 1e-2)
        assert c.cost.epsilon <= 0.8 * (1 + 1e-9)


def test_noise_is_fresh_every_time() -> None:
    c = compile_query(
        "SELECT district, COUNT(*) FROM residents GROUP BY 1", catalogs(), epsilon=1.0
    )
    exact = run_exact(c, CON)
    assert not apply_noise(c, exact).table.equals(apply_noise(c, exact).table)


# -- intervals cover the bounded truth ---------------------------------------------------


def coverage(
    sql: str, name: str, truth: Callable[[pa.Table], np.ndarray], runs: int, **kw: float
) -> float:
    c = compile_query(sql, catalogs(), **kw)  # type: ignore[arg-type]
    exact = run_exact(c, CON)
    t_true = truth(exact)
    hits = total = 0
    for _ in range(runs):
        t = apply_noise(c, exact).table
        lo = np.array(t.column(f"{name}_ci_low").to_pylist(), dtype=float)
        hi = np.array(t.column(f"{name}_ci_high").to_pylist(), dtype=float)
        hits += int(((lo <= t_true) & (t_true <= hi)).sum())
        total += t_true.size
    return hits / total


def test_count_and_sum_intervals_cover_95_percent() -> None:
    cov = coverage(
        "SELECT district, sex, COUNT(*) AS n FROM residents GROUP BY 1, 2",
        "n",
        lambda e: np.array(e.column("__p0").to_pylist(), dtype=float),
        200,
        epsilon=0.5,
        delta=1e-6,
    )
    assert 0.94 <= cov <= 0.965  # 4000 intervals: ±0.7% is two standard errors
    c = compile_query(
        "SELECT district, SUM(visits) AS s FROM residents GROUP BY 1",
        catalogs(),
        epsilon=0.5,
        delta=0.0,
    )
    (p,) = c.parts
    cov = coverage(
        "SELECT district, SUM(visits) AS s FROM residents GROUP BY 1",
        "s",
        lambda e: np.array(e.column("__p0").to_pylist(), dtype=float) / p.value_scale,
        300,
        epsilon=0.5,
        delta=0.0,
    )
    assert 0.935 <= cov <= 0.97


def test_average_intervals_cover_about_95_percent() -> None:
    sql = "SELECT district, sex, AVG(age) AS a FROM residents GROUP BY 1, 2"
    c = compile_query(sql, catalogs(), epsilon=0.3, delta=1e-6)
    pn, ps = c.parts
    centre = c.outputs[0].centre

    def truth(e: pa.Table) -> np.ndarray:
        n = np.array(e.column(pn.column).to_pylist(), dtype=float)
        s = np.array(e.column(ps.column).to_pylist(), dtype=float) / ps.value_scale
        return centre + s / n

    cov = coverage(sql, "a", truth, 150, epsilon=0.3, delta=1e-6)
    assert 0.92 <= cov <= 0.98


def test_half_widths_are_exact_for_the_discrete_noise() -> None:
    for scale in (0.5, 1.0, 3.0, 7.5, 33.0):
        g = dp.discrete_gaussian_scale_to_accuracy(scale, 0.05, T="f64")
        lap = dp.discrete_laplacian_scale_to_accuracy(scale, 0.05)
        # OpenDP's accuracy a is strict, P(|X| >= a) <= 5%: the closed bound is ceil(a) - 1
        assert half_width_95("zcdp", scale) == math.ceil(g) - 1
        assert half_width_95("pure", scale) == math.ceil(lap) - 1
    x = np.abs(draws("zcdp", 40.0, 40_000))
    t = half_width_95("zcdp", 40.0)
    assert 0.945 <= (x <= t).mean() <= 0.96


# -- accounting ----------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [1e-4, 0.01, 0.3, 2.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-9])
def test_zcdp_conversion_agrees_with_opendp(rho: float, delta: float) -> None:
    meas = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False),
        dp.absolute_distance(T=float),
        scale=1 / math.sqrt(2 * rho),
    )
    profile = dp.c.make_zCDP_to_approxDP(meas).map(1.0)
    assert epsilon_from_rho(rho, delta) == pytest.approx(profile.epsilon(delta), rel=1e-9)
    assert epsilon_from_rho(rho, delta) <= rho + 2 * math.sqrt(rho * math.log(1 / delta))
    assert rho_from_epsilon(epsilon_from_rho(rho, delta), delta) == pytest.approx(rho, rel=1e-6)


def test_vector_cost_is_opendps_map() -> None:
    assert vector_cost("zcdp", 2.0, 3.0) == pytest.approx(9 / 8)
    assert vector_cost("pure", 2.0, 3.0) == pytest.approx(1.5)


# -- quantiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 0.1, 0.9, 0.25])
def test_scores_from_the_slot_histogram_are_opendps_scores(alpha: float) -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.integers(-5, 110, 3000), np.full(50, 40)]).astype(float)
    grid = QuantileGrid.for_bounds(0, 100, integer=True)
    candidates = [grid.candidate(i) for i in range(grid.size)]
    clamped = np.clip(values, 0, 100)
    slots: dict[int, int] = {}
    for v in clamped:
        i = int(v)  # integer grid: every value sits on a candidate
        slots[2 * i] = slots.get(2 * i, 0) + 1
    num, den = alpha_fraction(alpha)
    mine = np.array(scores_from_slots(slots, grid.size, num, den), dtype=float)
    trans = dp.t.make_quantile_score_candidates(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.symmetric_distance(),
        candidates=candidates,
        alpha=alpha,
    )
    theirs = np.array(trans(list(clamped)), dtype=float)
    # OpenDP may use another denominator for alpha: the scores agree up to that factor
    ratio = theirs[theirs > 0] / mine[theirs > 0]
    assert np.allclose(ratio, ratio[0])
    assert np.argmin(mine) == np.argmin(theirs)
    # and the declared score sensitivity per row is OpenDP's stability map
    assert trans.map(1) / ratio[0] == pytest.approx(max(num, den - num))


def test_the_slot_sql_reproduces_the_scores_on_a_float_grid() -> None:
    sql = "SELECT QUANTILE_CONT(income, 0.5) AS q FROM residents"
    c = compile_query(sql, catalogs(), epsilon=1.0)
    (p,) = c.parts
    assert p.grid is not None and p.grid.size == 1001
    exact = run_exact(c, CON)
    slots = dict(exact.column(p.column)[0].as_py())
    values = np.clip(DATA.column("income").to_numpy(), 0, 1_000_000)
    candidates = np.array([p.grid.candidate(i) for i in range(p.grid.size)])
    lt = np.searchsorted(np.sort(values), candidates, side="left")
    eq = np.searchsorted(np.sort(values), candidates, side="right") - lt
    num, den = p.alpha  # type: ignore[misc]
    expected = np.abs(den * lt - num * (values.size - eq))
    assert scores_from_slots(slots, p.grid.size, num, den) == [int(s) for s in expected]


def test_a_median_with_a_large_epsilon_lands_near_the_true_median() -> None:
    c = compile_query(
        "SELECT sex, MEDIAN(age) AS m FROM residents GROUP BY sex", catalogs(), epsilon=5.0
    )
    t = apply_noise(c, run_exact(c, CON)).table.to_pydict()
    truth = dict(CON.sql("SELECT sex, median(age) FROM residents GROUP BY sex").fetchall())
    for sex, m in zip(t["sex"], t["m"], strict=True):
        assert abs(m - truth[sex]) <= 2
    report = {r.name: r for r in c.report.columns}
    assert report["m"].rank_error_95 is not None and report["m"].rank_error_95 < 50


# -- partition selection ---------------------------------------------------------------------


def test_threshold_meets_delta_by_opendps_map() -> None:
    for scale, m, delta in ((3.0, 1, 1e-7), (12.5, 3, 1e-9), (1.0, 4, 1e-6)):
        t, rho, d = partition_threshold(scale, m, delta)
        assert d <= delta
        assert rho == pytest.approx(m / (2 * scale**2))  # l0 · l∞² for unit counts
        # one less would not do
        _, d_lower = _threshold_measurement(scale, t - 1).map((m, math.ceil(math.sqrt(m)), 1))
        assert d_lower > delta


def test_a_group_of_one_person_is_never_released_and_big_groups_are() -> None:
    data = make_residents(3_000, seed=2)
    occ = data.column("occupation").to_pylist()
    occ[17] = "astronaut"  # one person
    con = duck(
        {
            "residents": data.set_column(
                data.schema.get_field_index("occupation"), "occupation", pa.array(occ)
            )
        }
    )
    c = compile_query(
        "SELECT occupation, COUNT(*) FROM residents GROUP BY occupation",
        catalogs(),
        epsilon=1.0,
        delta=1e-7,
    )
    assert c.selection is not None and c.selection.delta <= 0.5e-7
    exact = run_exact(c, con)
    for _ in range(30):
        released = set(apply_noise(c, exact).table.column("occupation").to_pylist())
        assert "astronaut" not in released
        assert {"farmer", "teacher", "doctor"} <= released


# -- accuracy targets ------------------------------------------------------------------------


def test_an_accuracy_target_sets_the_epsilon_that_reaches_it() -> None:
    sql = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"
    c = compile_query(sql, catalogs(), accuracy=10.0, delta=1e-6)
    (col,) = c.report.columns
    assert col.half_width_95 is not None and 9.0 <= col.half_width_95 <= 10.0
    looser = compile_query(sql, catalogs(), accuracy=20.0, delta=1e-6)
    assert looser.cost.epsilon < c.cost.epsilon
    exact = run_exact(c, CON)
    truth = np.array(exact.column("__p0").to_pylist())
    errors = np.concatenate(
        [
            np.abs(np.array(apply_noise(c, exact).table.column("n").to_pylist()) - truth)
            for _ in range(100)
        ]
    )
    assert (errors <= 10).mean() >= 0.93


def test_accuracy_by_column_and_for_averages() -> None:
    sql = "SELECT district, COUNT(*) AS n, AVG(age) AS a FROM residents GROUP BY district"
    c = compile_query(
        sql, catalogs(), accuracy={"n": 50.0, "a": 0.5}, delta=1e-6, accuracy_rows=2_000
    )
    rep = {r.name: r for r in c.report.columns}
    assert rep["n"].half_width_95 is not None and rep["n"].half_width_95 <= 50
    assert rep["a"].half_width_95_at_rows is not None
    assert rep["a"].half_width_95_at_rows[2_000] <= 0.5
    with pytest.raises(Exception, match="unknown column"):
        compile_query(sql, catalogs(), accuracy={"nope": 1.0})


def test_the_dry_run_report_matches_what_is_released() -> None:
    sql = "SELECT district, COUNT(*) AS n, SUM(income) AS s FROM residents GROUP BY 1"
    c = compile_query(sql, catalogs(), epsilon=1.0, delta=1e-6)
    rep = c.report.to_dict()
    assert rep["rewritten_sql"] == c.rewritten_sql and rep["epsilon"] == pytest.approx(1.0)
    assert rep["per_unit_bounding"] is True and rep["contribution_rows"] == 1
    t = apply_noise(c, run_exact(c, CON)).table.to_pydict()
    by = {r["name"]: r for r in rep["columns"]}
    widths_n = {h - lo for lo, h in zip(t["n_ci_low"], t["n_ci_high"], strict=True) if lo > 0}
    assert widths_n == {2 * by["n"]["half_width_95"]}
    widths_s = {round(h - lo, 6) for lo, h in zip(t["s_ci_low"], t["s_ci_high"], strict=True)}
    assert widths_s == {round(2 * by["s"]["half_width_95"], 6)}
