"""The trusted rewrite: a flat :class:`~egress.dp.analyze.Plan` becomes the SQL the sandbox
runs as given, returning exact *bounded* aggregates per group and nothing else.

The SQL has five steps (CTEs), each there for one reason:

``__raw``      the operator's rows: the joined datasets (inner joins on the privacy unit),
               the operator's conditions, and per row only what the aggregates need —
               group keys, aggregate arguments, FILTER flags. Every operator expression is
               wrapped in ``TRY(...)`` so a value that would raise (division by zero, a bad
               cast, an overflow) becomes NULL: a job that fails or not depending on one
               person's value would leak that value through the failure.
``__rows``     each aggregate argument clamped to its public interval and encoded as a
               fixed-point integer (sums) or a quantile-grid slot; NULL and NaN stay NULL.
``__bounded``  at most ``m`` rows per privacy unit: ``row_number() OVER (PARTITION BY unit
               ORDER BY hash(seed, row))`` — a pseudo-random reservoir that is reproducible
               for a seed. Skipped when every dataset's import verified the bound and the
               query reads each dataset once per unit (the product bound is then exact).
``__agg``      the parts per group: ``COUNT(*)``, integer ``SUM``, sums of squares,
               ``histogram(slot)``, and the count of distinct units when keys are private.
final          group completion: the cross product of the public domains LEFT JOIN the
               parts, so a group nobody is in appears with zeros instead of disappearing.

Sensitivities are derived here, from the catalog bounds and ``m`` only — never from the
operator or the data. For one unit added or removed (with all its rows):

* ``COUNT``: ``m`` (its rows, spread over groups in any way: L1 and L2 over groups ≤ m)
* ``COUNT(DISTINCT unit)``: 1 per group, in at most ``m`` groups: L1 = m, L2 = √m
* integer ``SUM`` of values in ``[LO, HI]``: ``m · max(|LO|, |HI|)``
* centred sums for AVG/VARIANCE: ``m · H`` and ``m · H²`` with values in ``[−H, H]``
* quantile scores: ``m · max(num, den − num)`` per group (see :mod:`egress.dp.quantiles`)
"""

# ruff: noqa: S608 -- this module assembles SQL from identifiers and literals it quotes itself
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlglot import exp

from egress.dp.analyze import Aggregate, GroupKey, Plan
from egress.dp.quantiles import QuantileGrid

__all__ = [
    "CENTRED_SCALE_LIMIT",
    "SQUARES_SCALE_LIMIT",
    "SUM_SCALE_LIMIT",
    "Part",
    "PartKind",
    "Rewritten",
    "rewrite",
]

PartKind = Literal["count", "units", "sum", "histogram"]

SUM_SCALE_LIMIT = 2**32  # integer sums: |value| after encoding (keeps n·B inside int64)
CENTRED_SCALE_LIMIT = 2**20  # AVG's centred sum: values encoded in [-2^20, 2^20]
SQUARES_SCALE_LIMIT = 2**16  # VARIANCE: centred values in [-2^16, 2^16], squares < 2^32


@dataclass(frozen=True)
class Part:
    """One exact column the sandbox returns and the gate noises as a vector over groups."""

    column: str  # "__p<i>"
    kind: PartKind
    l1: float  # sensitivity over the whole group vector (integer units)
    l2: float
    linf: float  # per group
    scale: float = 1.0  # integer units per real unit (fixed-point sums)
    grid: QuantileGrid | None = None  # histogram parts


@dataclass
class Rewritten:
    sql: str
    parts: list[Part]
    agg_parts: dict[str, dict[str, Part]]  # aggregate name -> role ("n", "s", "ss", "h") -> part
    centre: dict[str, float]  # aggregate name -> centre subtracted before summing
    units_column: str | None  # "__units" when groups need partition selection
    group_columns: list[str]  # "__g<i>" in group-key order
    bounded: bool  # the per-unit reservoir step is in the SQL
    contribution_rows: int
    extra: dict[str, Any] = field(default_factory=dict)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def _sql(node: exp.Expression) -> str:
    return node.sql(dialect="duckdb")


def _try(node: exp.Expression) -> str:
    return f"TRY({_sql(node)})"


def _cond(node: exp.Expression | None) -> str:
    return "TRUE" if node is None else f"COALESCE(TRY({_sql(node)}), FALSE)"


def _fixed_point(lo: float, hi: float, integer: bool, limit: int) -> float:
    """Integer units per real unit, so that values in [lo, hi] encode within ±limit."""
    max_abs = max(abs(lo), abs(hi))
    if max_abs == 0:
        return 1.0
    if integer and max_abs <= limit:
        return 1.0
    return limit / max_abs


class _Builder:
    def __init__(self, plan: Plan, seed: int) -> None:
        self.plan = plan
        self.seed = seed
        self.m = plan.contribution_rows
        self.raw: list[str] = []  # SELECT items of __raw
        self.rows: list[str] = []  # SELECT items of __rows (beyond pass-through)
        self.aggs: list[str] = []  # SELECT items of __agg
        self.parts: list[Part] = []
        self.agg_parts: dict[str, dict[str, Part]] = {}
        self.centre: dict[str, float] = {}
        self.row_columns: list[str] = []  # columns of __rows that feed the reservoir hash

    def part(
        self,
        kind: PartKind,
        agg_sql: str,
        *,
        l1: float,
        l2: float,
        linf: float,
        scale: float = 1.0,
        grid: QuantileGrid | None = None,
    ) -> Part:
        col = f"__p{len(self.parts)}"
        self.aggs.append(f"{agg_sql} AS {_q(col)}")
        p = Part(col, kind, l1, l2, linf, scale, grid)
        self.parts.append(p)
        return p

    def add_aggregate(self, i: int, agg: Aggregate) -> None:
        m = self.m
        roles: dict[str, Part] = {}
        x = f"__x{i}"
        if agg.kind == "count":
            flag = f"({_cond(agg.filter)})"
            if agg.arg is not None:
                flag = f"({flag} AND {_try(agg.arg)} IS NOT NULL)"
            self.raw.append(f"{flag} AS {_q(x)}")
            self.row_columns.append(x)
            roles["n"] = self.part("count", f"COUNT(*) FILTER (WHERE {_q(x)})", l1=m, l2=m, linf=m)
        elif agg.kind == "count_units":
            flag = _cond(agg.filter)
            self.raw.append(f"{flag} AS {_q(x)}")
            self.row_columns.append(x)
            roles["n"] = self.part(
                "units",
                f'COUNT(DISTINCT "__unit") FILTER (WHERE {_q(x)})',
                l1=m,
                l2=math.sqrt(m),
                linf=1,
            )
        else:
            assert agg.arg is not None and agg.interval is not None
            iv = agg.interval
            value = f"TRY(CAST({_sql(agg.arg)} AS DOUBLE))"
            if agg.filter is not None:
                value = f"CASE WHEN {_cond(agg.filter)} THEN {value} END"
            self.raw.append(f"{value} AS {_q(x)}")
            v = _q(x)
            null = f"{v} IS NULL OR isnan({v})"
            if agg.kind == "quantile":
                grid = QuantileGrid.for_bounds(iv.lo, iv.hi, iv.integer)
                s = f"__s{i}"
                self.rows.append(f"{grid.slot_sql(v)} AS {_q(s)}")
                self.row_columns.append(s)
                roles["h"] = self.part(
                    "histogram", f"histogram({_q(s)})", l1=m, l2=m, linf=m, grid=grid
                )
            elif agg.kind == "sum":
                scale = _fixed_point(iv.lo, iv.hi, iv.integer, SUM_SCALE_LIMIT)
                lo_i, hi_i = math.floor(iv.lo * scale), math.ceil(iv.hi * scale)
                s = f"__s{i}"
                self.rows.append(
                    f"CASE WHEN {null} THEN NULL ELSE CAST(LEAST(GREATEST(round({v} * "
                    f"{scale!r}), {lo_i}), {hi_i}) AS BIGINT) END AS {_q(s)}"
                )
                self.row_columns.append(s)
                b = max(abs(lo_i), abs(hi_i))
                roles["s"] = self.part(
                    "sum",
                    f"CAST(SUM({_q(s)}) AS BIGINT)",
                    l1=m * b,
                    l2=m * b,
                    linf=m * b,
                    scale=scale,
                )
            else:  # avg, variance, stddev: count and centred sums
                mid = (iv.lo + iv.hi) / 2.0
                half = (iv.hi - iv.lo) / 2.0
                limit = CENTRED_SCALE_LIMIT if agg.kind == "avg" else SQUARES_SCALE_LIMIT
                scale = limit / half if half > 0 else 1.0
                h_int = math.ceil(half * scale)
                s = f"__s{i}"
                self.rows.append(
                    f"CASE WHEN {null} THEN NULL ELSE CAST(LEAST(GREATEST(round(({v} - "
                    f"{mid!r}) * {scale!r}), {-h_int}), {h_int}) AS BIGINT) END AS {_q(s)}"
                )
                self.row_columns.append(s)
                self.centre[agg.name] = mid
                roles["n"] = self.part("count", f"COUNT({_q(s)})", l1=m, l2=m, linf=m)
                b = h_int
                roles["s"] = self.part(
                    "sum",
                    f"CAST(SUM({_q(s)}) AS BIGINT)",
                    l1=m * b,
                    l2=m * b,
                    linf=m * b,
                    scale=scale,
                )
                if agg.kind in ("variance", "stddev"):
                    b2 = h_int * h_int
                    roles["ss"] = self.part(
                        "sum",
                        f"CAST(SUM({_q(s)} * {_q(s)}) AS BIGINT)",
                        l1=m * b2,
                        l2=m * b2,
                        linf=m * b2,
                        scale=scale * scale,
                    )
        self.agg_parts[agg.name] = roles


def _from_clause(plan: Plan) -> str:
    occ = plan.occurrences
    first = occ[0]
    out = f"{_q(first.catalog.name)} AS {_q(first.alias)}"
    unit0 = _sql(first.unit_column())
    for o in occ[1:]:
        out += f" JOIN {_q(o.catalog.name)} AS {_q(o.alias)} ON {_sql(o.unit_column())} = {unit0}"
    return out


def _domain_values(key: GroupKey, col: str) -> str:
    assert key.domain is not None
    rows = ", ".join(f"({_lit(v)})" for v in key.domain)
    return f"(VALUES {rows}) AS {_q('__d' + col)}({_q(col)})"


def rewrite(plan: Plan, *, seed: int) -> Rewritten:
    """The SQL the sandbox runs, and the parts (with sensitivities) it returns."""
    b = _Builder(plan, seed)
    unit = _sql(plan.occurrences[0].unit_column())
    b.raw.append(f'{unit} AS "__unit"')
    group_cols: list[str] = []
    for i, key in enumerate(plan.group_keys):
        col = f"__g{i}"
        group_cols.append(col)
        b.raw.append(f"{_try(key.expr)} AS {_q(col)}")
        b.row_columns.append(col)
    for i, agg in enumerate(plan.aggregates):
        b.add_aggregate(i, agg)
    selection = plan.needs_partition_selection
    units_col = "__units" if selection else None
    if units_col:
        b.aggs.append(f'COUNT(DISTINCT "__unit") AS {_q(units_col)}')

    where = [f"{unit} IS NOT NULL"] + [_cond(c) for c in plan.conditions]
    raw_sql = (
        "SELECT "
        + ", ".join(b.raw)
        + " FROM "
        + _from_clause(plan)
        + " WHERE "
        + " AND ".join(where)
    )
    rows_items = ['"__unit"'] + [_q(c) for c in group_cols]
    rows_items += [_q(f"__x{i}") for i in range(len(plan.aggregates))]
    rows_sql = "SELECT " + ", ".join(rows_items + b.rows) + " FROM __raw"

    # With every dataset's bound verified at import, a unit has at most the product of
    # the bounds in the join already, so the reservoir (the costly step) is skipped.
    bounded = not plan.unit_bound_verified
    m = plan.contribution_rows
    if bounded:
        hash_args = ", ".join(
            [str(int(seed) & 0x7FFFFFFFFFFFFFFF)] + [_q(c) for c in b.row_columns]
        )
        bounded_sql = (
            'SELECT * FROM __rows QUALIFY row_number() OVER (PARTITION BY "__unit" '
            f"ORDER BY hash({hash_args})) <= {m}"
        )
    else:
        bounded_sql = "SELECT * FROM __rows"

    group_sel = ", ".join(_q(c) for c in group_cols)
    agg_where = ""
    if plan.group_keys:
        filters = [
            f"{_q(c)} IN ({', '.join(_lit(v) for v in k.domain)})"
            for c, k in zip(group_cols, plan.group_keys, strict=True)
            if k.domain is not None
        ]
        if filters:
            agg_where = " WHERE " + " AND ".join(filters)
    agg_sql = "SELECT " + ", ".join(([group_sel] if group_sel else []) + b.aggs)
    agg_sql += " FROM __bounded" + agg_where
    if group_sel:
        agg_sql += " GROUP BY " + group_sel

    parts_out = [p.column for p in b.parts]
    if plan.group_keys and not selection:
        domains = " CROSS JOIN ".join(
            _domain_values(k, c) for c, k in zip(group_cols, plan.group_keys, strict=True)
        )
        on = " AND ".join(f"a.{_q(c)} = d.{_q(c)}" for c in group_cols)
        items = [f"d.{_q(c)} AS {_q(c)}" for c in group_cols]
        for p in b.parts:
            if p.kind == "histogram":
                items.append(f"a.{_q(p.column)} AS {_q(p.column)}")
            else:
                items.append(f"COALESCE(a.{_q(p.column)}, 0) AS {_q(p.column)}")
        final_sql = (
            "SELECT " + ", ".join(items) + f" FROM (SELECT * FROM {domains}) AS d "
            f"LEFT JOIN __agg AS a ON {on} ORDER BY " + ", ".join(f"d.{_q(c)}" for c in group_cols)
        )
    elif plan.group_keys:
        final_sql = "SELECT * FROM __agg ORDER BY " + group_sel
    else:
        items = [
            f"{_q(c)}" if p.kind == "histogram" else f"COALESCE({_q(c)}, 0) AS {_q(c)}"
            for c, p in zip(parts_out, b.parts, strict=True)
        ]
        final_sql = "SELECT " + ", ".join(items) + " FROM __agg"

    sql = (
        f"WITH __raw AS ({raw_sql}), __rows AS ({rows_sql}), __bounded AS ({bounded_sql}), "
        f"__agg AS ({agg_sql}) {final_sql}"
    )
    return Rewritten(
        sql=sql,
        parts=b.parts,
        agg_parts=b.agg_parts,
        centre=b.centre,
        units_column=units_col,
        group_columns=group_cols,
        bounded=bounded,
        contribution_rows=m,
    )
