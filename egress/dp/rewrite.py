"""The trusted rewrite: a flat :class:`~egress.dp.analyze.Plan` becomes the SQL the sandbox
runs as given, returning exact *bounded* aggregates per group and nothing else.

The SQL has three steps, each there for one reason:

``__raw``      the operator's rows: the joined datasets (inner joins on the privacy unit),
               the operator's conditions, and per row only what the aggregates need —
               group keys, aggregate arguments, FILTER flags. An operator expression that
               may raise (division, cast, arithmetic, functions) is wrapped in ``TRY(...)``
               so the error becomes NULL: a job that fails or not depending on one
               person's value would leak that value through the failure.
``__agg``      over at most ``m`` rows per privacy unit — ``row_number() OVER (PARTITION BY
               unit ORDER BY hash(seed, row)) <= m``, a pseudo-random reservoir that is
               reproducible for a seed, skipped when every dataset's import verified its
               bound (the product bound then holds already) — the parts per group: counts,
               sums of each value clamped to its public interval and encoded as a
               fixed-point integer, sums of squares, ``histogram(slot)`` for quantiles, and
               the count of distinct units when keys are private.
final          group completion: the cross product of the public domains LEFT JOIN the
               parts, so a group nobody is in appears with zeros instead of disappearing
               (and values outside a domain are dropped).

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
from collections.abc import Callable
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
        self.aggs: list[str] = []  # SELECT items of __agg
        self.parts: list[Part] = []
        self.agg_parts: dict[str, dict[str, Part]] = {}
        self.centre: dict[str, float] = {}
        self.row_columns: list[str] = []  # columns of __raw that feed the reservoir hash

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

    def row(self, name: str, sql: str) -> str:
        self.raw.append(f"{sql} AS {_q(name)}")
        self.row_columns.append(name)
        return _q(name)

    def value(self, i: int, agg: Aggregate) -> str:
        """The aggregate's per-row argument (NULL where its FILTER is false)."""
        assert agg.arg is not None
        value = _guarded(agg.arg, self.plan)
        if agg.filter is not None:
            value = f"CASE WHEN {_guarded_cond(agg.filter, self.plan)} THEN {value} END"
        return self.row(f"__x{i}", value)

    def add_aggregate(self, i: int, agg: Aggregate) -> None:
        m = self.m
        roles: dict[str, Part] = {}
        if agg.kind in ("count", "count_units"):
            what = "*" if agg.kind == "count" else 'DISTINCT "__unit"'
            if agg.arg is not None:
                counted = f"COUNT({self.value(i, agg)})"
            elif agg.filter is not None:
                flag = self.row(f"__f{i}", _guarded_cond(agg.filter, self.plan))
                counted = f"COUNT({what}) FILTER (WHERE {flag})"
            else:
                counted = f"COUNT({what})"
            if agg.kind == "count":
                roles["n"] = self.part("count", counted, l1=m, l2=m, linf=m)
            else:
                roles["n"] = self.part("units", counted, l1=m, l2=math.sqrt(m), linf=1)
            self.agg_parts[agg.name] = roles
            return
        assert agg.interval is not None
        iv = agg.interval
        x = self.value(i, agg)
        lo, hi = _num(iv.lo), _num(iv.hi)

        def clamped(v: str) -> str:
            # NaN orders above every number in DuckDB, so it clamps to the upper bound
            return f"LEAST(GREATEST({v}, {lo}), {hi})"

        def total(encode: Callable[[str], str]) -> str:
            # LEAST/GREATEST skip NULLs, so a NULL row encodes as the lower bound does;
            # subtract those rows' share exactly (cheaper than FILTER on every row)
            at_lo = encode(lo)
            body = f"SUM({encode(x)})"
            if at_lo != "0":
                body += f" - (COUNT(*) - COUNT({x})) * ({at_lo})"
            return f"CAST({body} AS BIGINT)"

        if agg.kind == "quantile":
            grid = QuantileGrid.for_bounds(iv.lo, iv.hi, iv.integer)
            roles["h"] = self.part(
                "histogram",
                f"histogram({grid.slot_sql(x)}) FILTER (WHERE {x} IS NOT NULL)",
                l1=m,
                l2=m,
                linf=m,
                grid=grid,
            )
        elif agg.kind == "sum":
            scale = _fixed_point(iv.lo, iv.hi, iv.integer, SUM_SCALE_LIMIT)
            lo_i, hi_i = math.floor(iv.lo * scale), math.ceil(iv.hi * scale)

            # a value in [lo, hi] times scale rounds (CAST rounds) into [lo_i, hi_i]
            def encode_sum(v: str) -> str:
                return "0" if v == "0" else f"CAST({clamped(v)}{_times(scale)} AS BIGINT)"

            b = max(abs(lo_i), abs(hi_i))
            roles["s"] = self.part(
                "sum", total(encode_sum), l1=m * b, l2=m * b, linf=m * b, scale=scale
            )
        else:  # avg, variance, stddev: count and centred sums
            limit = CENTRED_SCALE_LIMIT if agg.kind == "avg" else SQUARES_SCALE_LIMIT
            mid = (iv.lo + iv.hi) / 2.0
            if iv.integer and iv.hi - iv.lo <= limit:
                # whole numbers: 2x − (lo + hi) is exact integer arithmetic, in [−H, H]
                h_int = int(iv.hi - iv.lo)
                scale = 2.0

                def centred(v: str) -> str:
                    return f"(CAST({clamped(v)} AS BIGINT) * 2 - {int(iv.lo + iv.hi)})"
            else:
                half = (iv.hi - iv.lo) / 2.0
                scale = limit / half if half > 0 else 1.0
                h_int = math.ceil(half * scale)

                def centred(v: str) -> str:
                    return f"CAST(({clamped(v)} - {mid!r}){_times(scale)} AS BIGINT)"

            self.centre[agg.name] = mid
            roles["n"] = self.part("count", f"COUNT({x})", l1=m, l2=m, linf=m)
            b = h_int
            roles["s"] = self.part(
                "sum", total(centred), l1=m * b, l2=m * b, linf=m * b, scale=scale
            )
            if agg.kind in ("variance", "stddev"):
                b2 = h_int * h_int
                roles["ss"] = self.part(
                    "sum",
                    total(lambda v: f"({centred(v)} * {centred(v)})"),
                    l1=m * b2,
                    l2=m * b2,
                    linf=m * b2,
                    scale=scale * scale,
                )
        self.agg_parts[agg.name] = roles


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


def _times(scale: float) -> str:
    return "" if scale == 1.0 else f" * {scale!r}"


# -- which operator expressions may raise at run time ------------------------------------
#
# A data-dependent runtime error (division by zero, a failed cast, an integer overflow)
# would make a job fail or not depending on one person's value: that bit would leave
# through the failure. Expressions that may raise are wrapped in TRY(...), which turns the
# error into NULL. Plain columns, literals and comparisons between values of one kind
# cannot raise, and stay unwrapped so DuckDB can push filters down and vectorise.


def _category(node: exp.Expression, plan: Plan) -> str | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Column):
        spec = plan.column_of(node)
        t = spec.type.lower()
        if spec.is_numeric:
            return "num"
        if t in ("bool", "boolean"):
            return "bool"
        if t in ("date", "timestamp", "datetime", "time"):
            return "time"
        return "str"
    if isinstance(node, exp.Literal):
        return "str" if node.is_string else "num"
    if isinstance(node, exp.Boolean):
        return "bool"
    if isinstance(node, exp.Null):
        return "null"
    if isinstance(node, (exp.Lower, exp.Upper, exp.Trim)):
        return "str"
    return None


def _compatible(a: exp.Expression, b: exp.Expression, plan: Plan) -> bool:
    ca, cb = _category(a, plan), _category(b, plan)
    if ca is None or cb is None:
        return False
    if "null" in (ca, cb) or ca == cb:
        return True
    # a string literal against a date/time column is cast once, at bind time
    return {ca, cb} == {"str", "time"} and (
        isinstance(a, exp.Literal) or isinstance(b, exp.Literal)
    )


def _safe(node: exp.Expression, plan: Plan) -> bool:
    if isinstance(node, (exp.Column, exp.Literal, exp.Boolean, exp.Null)):
        return True
    if isinstance(node, exp.Paren):
        return _safe(node.this, plan)
    if isinstance(node, (exp.And, exp.Or)):
        return _safe(node.this, plan) and _safe(node.expression, plan)
    if isinstance(node, exp.Not):
        return _safe(node.this, plan)
    if isinstance(node, exp.Is):
        return _safe(node.this, plan)
    if isinstance(
        node,
        (
            exp.EQ,
            exp.NEQ,
            exp.GT,
            exp.GTE,
            exp.LT,
            exp.LTE,
            exp.NullSafeEQ,
            exp.NullSafeNEQ,
            exp.Like,
            exp.ILike,
        ),
    ):
        a, b = node.this, node.expression
        return _safe(a, plan) and _safe(b, plan) and _compatible(a, b, plan)
    if isinstance(node, exp.In):
        items = node.expressions
        return _safe(node.this, plan) and all(
            isinstance(e, (exp.Literal, exp.Boolean, exp.Null)) and _compatible(node.this, e, plan)
            for e in items
        )
    if isinstance(node, exp.Between):
        a = node.this
        return all(
            _safe(e, plan) and _compatible(a, e, plan)
            for e in (a, node.args["low"], node.args["high"])
        )
    if isinstance(node, (exp.Lower, exp.Upper, exp.Trim)):
        return _safe(node.this, plan) and _category(node.this, plan) == "str"
    return False


def _guarded(node: exp.Expression, plan: Plan) -> str:
    return _sql(node) if _safe(node, plan) else f"TRY({_sql(node)})"


def _guarded_cond(node: exp.Expression, plan: Plan) -> str:
    return _sql(node) if _safe(node, plan) else f"COALESCE(TRY({_sql(node)}), FALSE)"


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
    # With every dataset's bound verified at import, a unit has at most the product of
    # the bounds in the join already, so the reservoir (the costly step) is skipped.
    bounded = not plan.unit_bound_verified
    selection = plan.needs_partition_selection
    counts_units = any(a.kind == "count_units" for a in plan.aggregates)
    # Rows without a unit are dropped, unless the import already refused them (a verified
    # dataset whose unit column is declared not nullable); reading the unit column costs
    # a column scan, so it is read only when something needs it.
    first = plan.occurrences[0]
    unit_nullable = (
        not plan.unit_bound_verified or first.catalog.column(first.catalog.privacy_unit).nullable
    )
    if bounded or selection or counts_units:
        b.raw.append(f'{unit} AS "__unit"')
    group_cols: list[str] = []
    for i, key in enumerate(plan.group_keys):
        col = f"__g{i}"
        group_cols.append(col)
        b.row(col, _guarded(key.expr, plan))
    for i, agg in enumerate(plan.aggregates):
        b.add_aggregate(i, agg)
    units_col = "__units" if selection else None
    if units_col:
        b.aggs.append(f'COUNT(DISTINCT "__unit") AS {_q(units_col)}')

    where = [f"{unit} IS NOT NULL"] if unit_nullable else []
    where += [_guarded_cond(c, plan) for c in plan.conditions]
    raw_sql = "SELECT " + (", ".join(b.raw) or "TRUE AS __row") + " FROM " + _from_clause(plan)
    if where:
        raw_sql += " WHERE " + " AND ".join(where)
    m = plan.contribution_rows
    if bounded:
        hash_args = ", ".join(
            [str(int(seed) & 0x7FFFFFFFFFFFFFFF)] + [_q(c) for c in b.row_columns]
        )
        source = (
            '(SELECT * FROM __raw QUALIFY row_number() OVER (PARTITION BY "__unit" '
            f"ORDER BY hash({hash_args})) <= {m})"
        )
    else:
        source = "__raw"

    group_sel = ", ".join(_q(c) for c in group_cols)
    agg_sql = "SELECT " + ", ".join(([group_sel] if group_sel else []) + b.aggs)
    agg_sql += f" FROM {source} AS __bounded"
    if group_sel:
        agg_sql += " GROUP BY " + group_sel
    # Values outside a key's public domain are dropped after grouping (a few groups to
    # test, not every row): by the LEFT JOIN from the domain when completing, by this
    # filter when the groups are selected privately.
    domain_filters = [
        f"{_q(c)} IN ({', '.join(_lit(v) for v in k.domain)})"
        for c, k in zip(group_cols, plan.group_keys, strict=True)
        if k.domain is not None
    ]

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
        final_sql = "SELECT * FROM __agg"
        if domain_filters:
            final_sql += " WHERE " + " AND ".join(domain_filters)
        final_sql += " ORDER BY " + group_sel
    else:
        items = [
            f"{_q(c)}" if p.kind == "histogram" else f"COALESCE({_q(c)}, 0) AS {_q(c)}"
            for c, p in zip(parts_out, b.parts, strict=True)
        ]
        final_sql = "SELECT " + ", ".join(items) + " FROM __agg"

    sql = f"WITH __raw AS ({raw_sql}), __agg AS ({agg_sql}) {final_sql}"
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
