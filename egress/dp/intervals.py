"""Public bounds of per-row expressions, by interval arithmetic over catalog bounds.

The DP rewrite clamps every value inside an aggregate to an interval before it is summed;
that clamp, not this analysis, is what makes the sensitivity true. This module only finds
an interval that is *tight* (so clamping does not distort honest queries) and *finite*
(so there is a sensitivity at all). An expression whose interval cannot be bounded — a
division by something that may be 0, a column without public bounds, an unknown function —
is refused with a message that names it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from egress.dp.catalog import ColumnSpec
from egress.errors import QueryRefused

__all__ = ["Interval", "interval_of", "is_boolean"]

# Values beyond this make sensitivities meaningless (and overflow the integer encoding).
_MAX_ABS = 1e15


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    integer: bool = False  # every value is a whole number

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.lo > self.hi:
            raise ValueError(f"bad interval [{self.lo}, {self.hi}]")

    @property
    def max_abs(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def union(self, other: Interval) -> Interval:
        return Interval(
            min(self.lo, other.lo), max(self.hi, other.hi), self.integer and other.integer
        )


ColumnLookup = Callable[[exp.Column], ColumnSpec]

_BOOLEAN_NODES: tuple[type[exp.Expression], ...] = (
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.And,
    exp.Or,
    exp.Not,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Boolean,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
)


def is_boolean(node: exp.Expression) -> bool:
    return isinstance(node, _BOOLEAN_NODES)


def _refuse(node: exp.Expression, why: str) -> QueryRefused:
    return QueryRefused(
        f"cannot bound `{node.sql(dialect='duckdb')}` inside an aggregate: {why}",
        hint="aggregate a column with public bounds, or an expression of such columns using "
        "+ - * / (by a value that cannot be 0), ABS, LEAST, GREATEST, ROUND, FLOOR, CEIL, "
        "CASE with numeric branches, or a condition (counted as 0/1)",
    )


def _checked(node: exp.Expression, lo: float, hi: float, integer: bool) -> Interval:
    if not (math.isfinite(lo) and math.isfinite(hi)) or max(abs(lo), abs(hi)) > _MAX_ABS:
        raise _refuse(node, f"its values may reach [{lo:.4g}, {hi:.4g}], beyond ±{_MAX_ABS:.0e}")
    return Interval(lo, hi, integer)


def interval_of(node: exp.Expression, column: ColumnLookup) -> Interval:
    """The interval every non-NULL value of `node` lies in, given the catalog bounds."""
    if isinstance(node, exp.Paren):
        return interval_of(node.this, column)
    if isinstance(node, exp.Column):
        spec = column(node)
        if spec.bounds is None:
            if spec.type.lower() in ("bool", "boolean"):
                return Interval(0, 1, True)
            raise _refuse(node, f"column {spec.name!r} has no public bounds in the catalog")
        lo, hi = spec.bounds
        return _checked(node, lo, hi, spec.is_integer)
    if isinstance(node, exp.Literal):
        if node.is_string:
            raise _refuse(node, "a string is not a number")
        v = float(node.this)
        return _checked(node, v, v, v.is_integer())
    if isinstance(node, exp.Null):
        return Interval(0, 0, True)  # NULL is skipped by aggregates; any point will do
    if is_boolean(node):
        return Interval(0, 1, True)
    if isinstance(node, exp.Neg):
        a = interval_of(node.this, column)
        return Interval(-a.hi, -a.lo, a.integer)
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod)):
        a = interval_of(node.this, column)
        b = interval_of(node.expression, column)
        if isinstance(node, exp.Add):
            return _checked(node, a.lo + b.lo, a.hi + b.hi, a.integer and b.integer)
        if isinstance(node, exp.Sub):
            return _checked(node, a.lo - b.hi, a.hi - b.lo, a.integer and b.integer)
        if isinstance(node, exp.Mul):
            p = (a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi)
            return _checked(node, min(p), max(p), a.integer and b.integer)
        if b.lo <= 0 <= b.hi:
            raise _refuse(node, "the divisor may be 0 (or arbitrarily close to it)")
        if isinstance(node, exp.Mod):
            m = b.max_abs
            return _checked(node, -m, m, a.integer and b.integer)
        q = (a.lo / b.lo, a.lo / b.hi, a.hi / b.lo, a.hi / b.hi)
        if isinstance(node, exp.IntDiv):
            return _checked(node, math.floor(min(q)), math.ceil(max(q)), True)
        return _checked(node, min(q), max(q), False)
    if isinstance(node, exp.Abs):
        a = interval_of(node.this, column)
        lo = 0.0 if a.lo <= 0 <= a.hi else min(abs(a.lo), abs(a.hi))
        return Interval(lo, a.max_abs, a.integer)
    if isinstance(node, (exp.Least, exp.Greatest)):
        parts = [interval_of(node.this, column)] + [
            interval_of(e, column) for e in node.expressions
        ]
        integer = all(p.integer for p in parts)
        if isinstance(node, exp.Least):
            return Interval(min(p.lo for p in parts), min(p.hi for p in parts), integer)
        return Interval(max(p.lo for p in parts), max(p.hi for p in parts), integer)
    if isinstance(node, (exp.Round, exp.Floor, exp.Ceil)):
        a = interval_of(node.this, column)
        return _checked(
            node, math.floor(a.lo), math.ceil(a.hi), a.integer or not node.args.get("decimals")
        )
    if isinstance(node, exp.Sign):
        return Interval(-1, 1, True)
    if isinstance(node, (exp.Cast, exp.TryCast)):
        to = node.to
        a = interval_of(node.this, column)
        if to.is_type(*exp.DataType.INTEGER_TYPES):
            return _checked(node, math.floor(a.lo), math.ceil(a.hi), True)
        if to.is_type(*exp.DataType.REAL_TYPES) or to.is_type(exp.DataType.Type.DECIMAL):
            return a
        if to.is_type(exp.DataType.Type.BOOLEAN):
            return Interval(0, 1, True)
        raise _refuse(node, f"a cast to {to.sql(dialect='duckdb')} is not a number")
    if isinstance(node, (exp.Case, exp.If)):
        branches: list[exp.Expression]
        if isinstance(node, exp.If):
            branches = [node.args["true"]]
            if node.args.get("false") is not None:
                branches.append(node.args["false"])
        else:
            branches = [i.args["true"] for i in node.args.get("ifs") or []]
            if node.args.get("default") is not None:
                branches.append(node.args["default"])
        ivs = [interval_of(b, column) for b in branches if not isinstance(b, exp.Null)]
        if not ivs:
            return Interval(0, 0, True)
        out = ivs[0]
        for iv in ivs[1:]:
            out = out.union(iv)
        return out
    if isinstance(node, exp.Coalesce):
        ivs = [interval_of(node.this, column)] + [interval_of(e, column) for e in node.expressions]
        out = ivs[0]
        for iv in ivs[1:]:
            out = out.union(iv)
        return out
    if isinstance(node, exp.Nullif):
        return interval_of(node.this, column)
    if isinstance(node, exp.Sqrt):
        a = interval_of(node.this, column)
        return Interval(math.sqrt(max(a.lo, 0.0)), math.sqrt(max(a.hi, 0.0)), False)
    if isinstance(node, exp.Pow):
        a = interval_of(node.this, column)
        k = node.expression
        if not (isinstance(k, exp.Literal) and not k.is_string and float(k.this).is_integer()):
            raise _refuse(node, "only whole-number literal exponents can be bounded")
        n = int(float(k.this))
        if not 0 <= n <= 8:
            raise _refuse(node, "exponents from 0 to 8 can be bounded")
        cands = [a.lo**n, a.hi**n]
        if a.lo < 0 < a.hi:
            cands.append(0.0)
        return _checked(node, min(cands), max(cands), a.integer)
    if isinstance(node, exp.Exp):
        a = interval_of(node.this, column)
        if a.hi > 30:
            raise _refuse(node, "EXP of a value above 30 cannot be bounded usefully")
        return Interval(math.exp(a.lo), math.exp(a.hi), False)
    if isinstance(node, exp.Ln):
        a = interval_of(node.this, column)
        if a.lo <= 0:
            raise _refuse(node, "the logarithm's argument may be 0 or negative")
        return Interval(math.log(a.lo), math.log(a.hi), False)
    if isinstance(node, exp.Log):
        # DuckDB: LOG(x) is base 10; LOG(b, x) is base b.
        base: float = 10.0
        arg = node.this
        if node.expression is not None:
            b = node.this
            if not (isinstance(b, exp.Literal) and not b.is_string):
                raise _refuse(node, "the logarithm's base must be a number literal")
            base, arg = float(b.this), node.expression
        if base <= 0 or base == 1:
            raise _refuse(node, "the logarithm's base must be positive and not 1")
        a = interval_of(arg, column)
        if a.lo <= 0:
            raise _refuse(node, "the logarithm's argument may be 0 or negative")
        ends = (math.log(a.lo, base), math.log(a.hi, base))
        return Interval(min(ends), max(ends), False)
    raise _refuse(node, f"{type(node).__name__.upper()} has no interval rule")
