"""``compile_query``: SQL in, a :class:`CompiledQuery` out — the rewritten SQL, every noisy
part with its mechanism, scale and sensitivity, the privacy cost, and the dry-run report.

Nothing here touches data: compiling is the dry run. The budget of a query is split over
its aggregates in equal shares (one more share for partition selection when a group key
has no public domain); an aggregate made of several parts (AVG: a count and a centred sum;
VARIANCE: a count and two sums) splits its share equally, which for AVG is also the split
that minimises its error. With ``accuracy=`` instead of ``epsilon=``, each aggregate gets
the smallest share that meets its target and the ε is whatever they add up to.
"""

# ruff: noqa: S608 -- this module assembles SQL from identifiers and literals it quotes itself
from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from egress.dp.accountant import Cost, SpentBudget, epsilon_from_rho, rho_from_epsilon
from egress.dp.accuracy import (
    avg_estimate,
    noise_sd,
    quantile_rank_error_95,
    variance_estimate,
)
from egress.dp.analyze import AggKind, CatalogFor, Plan, analyze
from egress.dp.mechanisms import (
    Mode,
    gaussian_sigma_for_rho,
    half_width_95,
    laplace_scale_for_epsilon,
    partition_threshold,
    quantile_cost,
    quantile_scale,
    vector_cost,
)
from egress.dp.quantiles import QuantileGrid, alpha_fraction
from egress.dp.rewrite import Part, Rewritten, rewrite
from egress.errors import QueryRefused

__all__ = [
    "DEFAULT_ACCURACY_ROWS",
    "MAX_EPSILON_PER_QUERY",
    "Accuracy",
    "ColumnReport",
    "CompiledQuery",
    "DryRunReport",
    "NoisyPart",
    "OutputColumn",
    "Selection",
    "compile_query",
]

MAX_EPSILON_PER_QUERY = 20.0  # a larger ε is no protection at all; refuse it outright
DEFAULT_ACCURACY_ROWS = 1_000  # group size assumed for AVG/VARIANCE accuracy targets
_ACCURACY_ROWS_REPORTED = (100, 1_000, 10_000)

Accuracy = float | Mapping[str, float]


@dataclass(frozen=True)
class NoisyPart:
    """One exact column, its noise and what that noise costs."""

    column: str
    kind: str  # count | units | sum | histogram
    mode: Mode
    scale: float  # noise scale, integer units (σ for Gaussian, b for Laplace, s for noisy max)
    d_in: float  # the sensitivity passed to OpenDP's map
    cost: float  # ρ (zcdp) or ε (pure), from OpenDP's map
    value_scale: float  # integer units per real unit (fixed-point sums)
    half_width_int: int  # 95% half-width of the noise, integer units (0 for histograms)
    grid: QuantileGrid | None = None
    alpha: tuple[int, int] | None = None  # quantile num/den
    # declared sensitivities of the exact part for one unit added or removed: L1 and L2
    # over the vector of groups, and the most one group can change (rows for histograms)
    l1: float = 0.0
    l2: float = 0.0
    linf: float = 0.0


@dataclass(frozen=True)
class OutputColumn:
    name: str
    kind: AggKind
    hidden: bool
    parts: Mapping[str, str]  # role -> part column
    lo: float | None = None  # public bounds of the aggregated values
    hi: float | None = None
    centre: float = 0.0
    ddof: int = 1
    q: float | None = None


@dataclass(frozen=True)
class Selection:
    """DP partition selection on the noisy count of distinct units per group."""

    scale: float
    threshold: int
    rho: float
    delta: float


@dataclass(frozen=True)
class ColumnReport:
    name: str
    kind: str
    mechanism: str
    half_width_95: float | None  # data-independent (COUNT, SUM)
    half_width_95_at_rows: Mapping[int, float] | None = None  # AVG/VARIANCE/STDDEV
    rank_error_95: float | None = None  # QUANTILE, in rows
    target: float | None = None


@dataclass(frozen=True)
class DryRunReport:
    rewritten_sql: str
    epsilon: float
    delta: float
    rho: float
    mode: Mode
    contribution_rows: int
    per_unit_bounding: bool
    partition_selection: Selection | None
    columns: tuple[ColumnReport, ...]
    budget_left_after: tuple[float, float] | None = None  # (ε, δ) at the scenario's δ

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class CompiledQuery:
    """Everything the sandbox and the gate need; pure data, no connection, no values."""

    sql: str
    normalized_sql: str
    rewritten_sql: str
    query_key: str  # sha256 of normalized SQL + data versions + privacy parameters
    data_versions: Mapping[str, int]
    cost: Cost
    mode: Mode
    parts: tuple[NoisyPart, ...]
    outputs: tuple[OutputColumn, ...]
    group_names: tuple[str, ...]  # output names, in order of the "__g<i>" columns
    group_columns: tuple[str, ...]
    selection: Selection | None
    units_column: str | None
    postprocess_sql: str | None  # HAVING / ORDER BY / LIMIT over the noisy table
    report: DryRunReport
    contribution_rows: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def part(self, column: str) -> NoisyPart:
        return next(p for p in self.parts if p.column == column)

    def with_budget(
        self, spent: SpentBudget, epsilon_total: float, delta_total: float
    ) -> CompiledQuery:
        """The same query with its report's `budget_left_after` filled in."""
        after = spent.plus(self.cost)
        left = (
            max(0.0, epsilon_total - after.epsilon_spent(delta_total)),
            max(0.0, delta_total - after.delta_approx),
        )
        report = DryRunReport(**{**self.report.__dict__, "budget_left_after": left})
        return CompiledQuery(**{**self.__dict__, "report": report})


# --------------------------------------------------------------------------------------


def _parts_accuracy(
    kind: AggKind, roles: Mapping[str, NoisyPart], out: OutputColumn, rows: float
) -> tuple[float | None, float | None]:
    """(half-width at `rows` rows per group, rank error) of one output column."""
    if kind in ("count", "count_units", "sum"):
        p = roles["n"] if "n" in roles else roles["s"]
        return p.half_width_int / p.value_scale, None
    if kind == "quantile":
        p = roles["h"]
        assert p.grid is not None and p.alpha is not None
        return None, quantile_rank_error_95(p.scale, p.grid.size, p.alpha[1])
    assert out.lo is not None and out.hi is not None
    half = (out.hi - out.lo) / 2.0
    pn, ps = roles["n"], roles["s"]
    sd_n = noise_sd(pn.mode, pn.scale)
    sd_s = noise_sd(ps.mode, ps.scale) / ps.value_scale
    if kind == "avg":
        # worst case: the mean sits at a bound, |centred mean| = half
        _, lo, hi = avg_estimate(rows, rows * half, sd_n, sd_s, out.centre, -math.inf, math.inf)
        return (hi - lo) / 2.0, None
    pss = roles["ss"]
    sd_ss = noise_sd(pss.mode, pss.scale) / pss.value_scale
    # nominal point: centred mean 0, every value at a bound (the largest variance)
    _, lo, hi = variance_estimate(
        rows, 0.0, rows * half * half, sd_n, sd_s, sd_ss, out.ddof, -math.inf, math.inf
    )
    hw = (hi - lo) / 2.0
    if kind == "stddev":
        return hw / (2.0 * half) if half > 0 else 0.0, None
    return hw, None


def _mechanism_name(mode: Mode, kind: AggKind) -> str:
    if kind == "quantile":
        return (
            "report-noisy-max on quantile scores ("
            + ("zCDP" if mode == "zcdp" else "pure DP")
            + ")"
        )
    base = "discrete Gaussian" if mode == "zcdp" else "discrete Laplace"
    if kind in ("avg", "variance", "stddev"):
        return base + " on a count and centred fixed-point sums"
    if kind == "sum":
        return base + " on a fixed-point integer sum"
    return base


class _Allocator:
    """Turns a per-aggregate budget into noisy parts (scales, costs by OpenDP's maps)."""

    def __init__(self, plan: Plan, rw: Rewritten, mode: Mode) -> None:
        self.plan = plan
        self.rw = rw
        self.mode = mode

    def parts_for(self, name: str, budget: float) -> dict[str, NoisyPart]:
        agg = next(a for a in self.plan.aggregates if a.name == name)
        roles = self.rw.agg_parts[name]
        share = budget / len(roles)
        out: dict[str, NoisyPart] = {}
        for role, part in roles.items():
            out[role] = self.noisy(part, share, agg.q)
        return out

    def noisy(self, part: Part, share: float, q: float | None) -> NoisyPart:
        mode = self.mode
        if part.kind == "histogram":
            assert q is not None and part.grid is not None
            num, den = alpha_fraction(q)
            d_score = int(part.linf) * max(num, den - num)
            scale = quantile_scale(mode, d_score, share)
            return NoisyPart(
                part.column,
                part.kind,
                mode,
                scale,
                d_score,
                quantile_cost(mode, scale, d_score),
                1.0,
                0,
                part.grid,
                (num, den),
                part.l1,
                part.l2,
                part.linf,
            )
        if mode == "zcdp":
            scale = gaussian_sigma_for_rho(part.l2, share)
            d_in = part.l2
        else:
            scale = laplace_scale_for_epsilon(part.l1, share)
            d_in = part.l1
        return NoisyPart(
            part.column,
            part.kind,
            mode,
            scale,
            d_in,
            vector_cost(mode, scale, d_in),
            part.scale,
            half_width_95(mode, scale),
            l1=part.l1,
            l2=part.l2,
            linf=part.linf,
        )


def _solve_budget(alloc: _Allocator, out: OutputColumn, target: float, rows: float) -> float:
    """Smallest budget for one aggregate whose expected error is at most `target`."""

    def err(b: float) -> float:
        parts = alloc.parts_for(out.name, b)
        hw, rank = _parts_accuracy(out.kind, parts, out, rows)
        return float(rank if rank is not None else hw)  # type: ignore[arg-type]

    lo, hi = 1e-12, 1.0
    while err(hi) > target:
        hi *= 4
        if hi > 1e6:
            raise QueryRefused(
                f"column {out.name!r} cannot reach an error of ±{target:g} at any sensible ε",
                hint="ask for a looser accuracy target",
            )
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if err(mid) <= target:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1.0001:
            break
    return hi


def _postprocess_sql(plan: Plan, visible: list[str]) -> str | None:
    if plan.having is None and not plan.order and plan.limit is None and plan.offset is None:
        return None
    cols = ", ".join('"' + c.replace('"', '""') + '"' for c in visible)
    sql = f"SELECT {cols} FROM __noisy"
    if plan.having is not None:
        sql += " WHERE " + plan.having.sql(dialect="duckdb")
    if plan.order:
        items = []
        for e, desc, nulls_first in plan.order:
            item = e.sql(dialect="duckdb") + (" DESC" if desc else " ASC")
            if nulls_first is not None:
                item += " NULLS FIRST" if nulls_first else " NULLS LAST"
            items.append(item)
        sql += " ORDER BY " + ", ".join(items)
    if plan.limit is not None:
        sql += f" LIMIT {plan.limit}"
    if plan.offset is not None:
        sql += f" OFFSET {plan.offset}"
    return sql


def compile_query(
    sql: str,
    catalog_for: CatalogFor,
    *,
    epsilon: float | None = None,
    accuracy: Accuracy | None = None,
    delta: float = 1e-7,
    seed: int | None = None,
    accuracy_rows: int = DEFAULT_ACCURACY_ROWS,
    spent: SpentBudget | None = None,
    budget: tuple[float, float] | None = None,
) -> CompiledQuery:
    """Check, rewrite and price one DP SQL query. See :mod:`egress.dp` for the contract."""
    if (epsilon is None) == (accuracy is None):
        raise QueryRefused(
            "give either epsilon or accuracy",
            hint="epsilon=1.0 spends that much; accuracy=10 asks for ±10 at 95%",
        )
    if epsilon is not None and not (0 < epsilon <= MAX_EPSILON_PER_QUERY):
        raise QueryRefused(
            f"epsilon={epsilon} is out of range", hint=f"use 0 < epsilon <= {MAX_EPSILON_PER_QUERY}"
        )
    if not (0 <= delta < 1e-2):
        raise QueryRefused(
            f"delta={delta} is out of range",
            hint="use delta=0 (pure DP) or a small delta such as 1e-7",
        )
    mode: Mode = "pure" if delta == 0 else "zcdp"
    plan = analyze(sql, catalog_for)
    if plan.needs_partition_selection and mode == "pure":
        names = [k.name for k in plan.group_keys if k.domain is None]
        raise QueryRefused(
            f"group column(s) {', '.join(names)} have no public domain, so groups must be "
            "selected privately, which needs delta > 0",
            hint="pass a delta such as 1e-7, or group by columns whose catalog lists a domain",
        )
    memo_key: _MemoKey | None = None
    if spent is None and budget is None:
        memo_key = _memo_key(sql, epsilon, accuracy, delta, seed, accuracy_rows)
        with _COMPILED_LOCK:
            hit = _COMPILED.get(memo_key)
        # The same Plan object means the same catalogs (analyze memoizes by them).
        if hit is not None and hit[0] is plan:
            return hit[1]
    compiled = _compile(sql, plan, mode, epsilon, accuracy, delta, seed, accuracy_rows)
    if memo_key is not None:
        with _COMPILED_LOCK:
            _COMPILED[memo_key] = (plan, compiled)
            _COMPILED.move_to_end(memo_key)
            while len(_COMPILED) > _COMPILED_MAX:
                _COMPILED.popitem(last=False)
    if spent is not None and budget is not None:
        compiled = compiled.with_budget(spent, budget[0], budget[1])
    return compiled


# A job is compiled at submit and again just before it runs, with the same arguments; the
# rewrite and the OpenDP measurements behind the costs took 1.5 ms of CPU each time. The
# compiled query is pure data (frozen), so the second compile hands back the first. Keys
# hold repr() of the privacy parameters, so 1 and 1.0 (different query keys) stay apart.
_MemoKey = tuple[str, str, str, str, int | None, int]
_COMPILED: OrderedDict[_MemoKey, tuple[Plan, CompiledQuery]] = OrderedDict()
_COMPILED_LOCK = threading.Lock()
_COMPILED_MAX = 256

# The rewrite depends on the plan and the seed only, not on ε or the accuracy target, and
# the same query is asked again with other privacy parameters (the seed comes from the
# query text): it is kept per plan object (analyze memoizes plans by SQL and catalogs). The
# Rewritten is only read afterwards.
_REWRITES: OrderedDict[tuple[int, int], tuple[Plan, Rewritten]] = OrderedDict()
_REWRITES_LOCK = threading.Lock()


def _rewrite(plan: Plan, seed: int) -> Rewritten:
    key = (id(plan), seed)
    with _REWRITES_LOCK:
        hit = _REWRITES.get(key)
    if hit is not None and hit[0] is plan:  # the same object: an id is reused only once freed
        return hit[1]
    rw = rewrite(plan, seed=seed)
    with _REWRITES_LOCK:
        _REWRITES[key] = (plan, rw)
        _REWRITES.move_to_end(key)
        while len(_REWRITES) > _COMPILED_MAX:
            _REWRITES.popitem(last=False)
    return rw


def _memo_key(
    sql: str,
    epsilon: float | None,
    accuracy: Accuracy | None,
    delta: float,
    seed: int | None,
    accuracy_rows: int,
) -> _MemoKey:
    acc = repr(list(accuracy.items())) if isinstance(accuracy, Mapping) else repr(accuracy)
    return (sql, repr(epsilon), acc, repr(delta), seed, accuracy_rows)


def _compile(
    sql: str,
    plan: Plan,
    mode: Mode,
    epsilon: float | None,
    accuracy: Accuracy | None,
    delta: float,
    seed: int | None,
    accuracy_rows: int,
) -> CompiledQuery:
    if seed is None:
        seed = int.from_bytes(hashlib.sha256(plan.normalized_sql.encode()).digest()[:8], "big")
    try:
        rw = _rewrite(plan, seed)
    except RecursionError:
        raise QueryRefused(
            "the query is nested too deeply to rewrite",
            hint="write it with fewer nested parentheses or CASEs",
        ) from None
    alloc = _Allocator(plan, rw, mode)

    outputs = [
        OutputColumn(
            name=a.name,
            kind=a.kind,
            hidden=a.hidden,
            parts={r: p.column for r, p in rw.agg_parts[a.name].items()},
            lo=a.interval.lo if a.interval else None,
            hi=a.interval.hi if a.interval else None,
            centre=rw.centre.get(a.name, 0.0),
            ddof=a.ddof,
            q=a.q,
        )
        for a in plan.aggregates
    ]
    selection_needed = plan.needs_partition_selection
    delta_sel = delta / 2.0 if selection_needed else 0.0
    targets: dict[str, float] = {}
    budgets: dict[str, float] = {}
    if epsilon is not None:
        units = len(outputs) + (1 if selection_needed else 0)
        total = rho_from_epsilon(epsilon, delta - delta_sel) if mode == "zcdp" else epsilon
        for out in outputs:
            budgets[out.name] = total / units
        selection_budget = total / units
    else:
        assert accuracy is not None
        for out in outputs:
            if isinstance(accuracy, Mapping):
                t = accuracy.get(out.name)
                if t is None:
                    continue
            else:
                t = accuracy
            if not t > 0:
                raise QueryRefused(
                    f"accuracy target for {out.name!r} must be positive",
                    hint="accuracy=10 asks for ±10 at 95%",
                )
            targets[out.name] = float(t)
        if isinstance(accuracy, Mapping):
            unknown = set(accuracy) - {o.name for o in outputs}
            if unknown:
                raise QueryRefused(
                    f"accuracy names unknown column(s): {', '.join(sorted(unknown))}",
                    hint=f"the output columns are: {', '.join(o.name for o in outputs)}",
                )
        for out in outputs:
            if out.name in targets:
                budgets[out.name] = _solve_budget(alloc, out, targets[out.name], accuracy_rows)
        floor = max(budgets.values()) if budgets else 0.0
        if floor == 0.0:
            raise QueryRefused("accuracy names no output column", hint="name at least one")
        for out in outputs:  # columns without a target get the largest share
            budgets.setdefault(out.name, floor)
        selection_budget = floor

    parts: list[NoisyPart] = []
    roles_of: dict[str, dict[str, NoisyPart]] = {}
    for out in outputs:
        roles_of[out.name] = alloc.parts_for(out.name, budgets[out.name])
        parts.extend(roles_of[out.name].values())

    selection: Selection | None = None
    if selection_needed:
        m = plan.contribution_rows
        # OpenDP's threshold map charges l0 · l∞² = m for unit counts (each unit adds 1 to
        # at most m groups), so σ for the share is √m / √(2ρ)
        scale = gaussian_sigma_for_rho(math.sqrt(m), selection_budget)
        threshold, rho_sel, d_sel = partition_threshold(scale, m, delta_sel)
        selection = Selection(scale, threshold, rho_sel, d_sel)

    if mode == "zcdp":
        rho = sum(p.cost for p in parts) + (selection.rho if selection else 0.0)
        d_a = selection.delta if selection else 0.0
        eps = epsilon_from_rho(rho, delta - d_a)
        cost = Cost(epsilon=eps, delta=delta, rho=rho, delta_approx=d_a, pure=False)
    else:
        eps = sum(p.cost for p in parts)
        cost = Cost(epsilon=eps, delta=0.0, rho=eps * eps / 2.0, delta_approx=0.0, pure=True)
    if cost.epsilon > MAX_EPSILON_PER_QUERY:
        raise QueryRefused(
            f"reaching that accuracy costs epsilon={cost.epsilon:.3g}",
            hint=f"one query may spend at most epsilon={MAX_EPSILON_PER_QUERY}; ask for a "
            "looser accuracy, fewer columns or fewer groups",
        )

    reports: list[ColumnReport] = []
    for out in outputs:
        if out.hidden:
            continue
        roles = roles_of[out.name]
        mech = _mechanism_name(mode, out.kind)
        if out.kind in ("avg", "variance", "stddev"):
            at = {
                n: _parts_accuracy(out.kind, roles, out, n)[0] or 0.0
                for n in sorted({*_ACCURACY_ROWS_REPORTED, accuracy_rows})
            }
            reports.append(
                ColumnReport(out.name, out.kind, mech, None, at, None, targets.get(out.name))
            )
        else:
            hw, rank = _parts_accuracy(out.kind, roles, out, accuracy_rows)
            reports.append(
                ColumnReport(out.name, out.kind, mech, hw, None, rank, targets.get(out.name))
            )

    params = {
        "epsilon": epsilon,
        "accuracy": dict(accuracy) if isinstance(accuracy, Mapping) else accuracy,
        "delta": delta,
        "accuracy_rows": accuracy_rows,
    }
    key_blob = json.dumps(
        [plan.normalized_sql, sorted(plan.data_versions.items()), params], sort_keys=True
    )
    visible = [k.name for k in plan.group_keys]
    for out in outputs:
        if not out.hidden:
            visible += [out.name, f"{out.name}_ci_low", f"{out.name}_ci_high"]
    report = DryRunReport(
        rewritten_sql=rw.sql,
        epsilon=cost.epsilon,
        delta=cost.delta,
        rho=cost.rho,
        mode=mode,
        contribution_rows=plan.contribution_rows,
        per_unit_bounding=rw.bounded,
        partition_selection=selection,
        columns=tuple(reports),
    )
    return CompiledQuery(
        sql=sql,
        normalized_sql=plan.normalized_sql,
        rewritten_sql=rw.sql,
        query_key=hashlib.sha256(key_blob.encode()).hexdigest(),
        data_versions=plan.data_versions,
        cost=cost,
        mode=mode,
        parts=tuple(parts),
        outputs=tuple(outputs),
        group_names=tuple(k.name for k in plan.group_keys),
        group_columns=tuple(rw.group_columns),
        selection=selection,
        units_column=rw.units_column,
        postprocess_sql=_postprocess_sql(plan, visible),
        report=report,
        contribution_rows=plan.contribution_rows,
        params=params,
    )
