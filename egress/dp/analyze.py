"""The SQL an operator may write for a DP release, and its reduction to one flat plan.

Allowed (DuckDB dialect)::

    [WITH name AS (<per-row SELECT>), ...]
    SELECT <group expressions>, <aggregates>
    FROM <dataset or CTE or (per-row subquery)> [AS a]
    [JOIN <dataset or CTE> [AS b] ON a.<privacy unit> = b.<privacy unit> [AND <predicate>]]
    [WHERE <predicate>]
    [GROUP BY <expressions> | GROUP BY ALL]
    [HAVING <predicate on aggregates and group columns>]
    [ORDER BY ...] [LIMIT n] [OFFSET n]

Aggregates: ``COUNT(*)``, ``COUNT(x)``, ``COUNT(DISTINCT <privacy unit>)``, ``SUM``, ``AVG``,
``VARIANCE``/``VAR_SAMP``/``VAR_POP``, ``STDDEV``/``STDDEV_SAMP``/``STDDEV_POP``,
``QUANTILE_CONT(x, q)``/``QUANTILE_DISC``/``QUANTILE``/``MEDIAN``, each with an optional
``FILTER (WHERE ...)``. A *per-row* SELECT (in a CTE or a subquery in FROM) projects,
filters and joins, and does nothing else: no aggregate, GROUP BY, DISTINCT, window, set
operation, ORDER/LIMIT.

Every CTE and subquery is *inlined*: the result is a :class:`Plan` over base dataset
occurrences ``t0, t1, ...`` joined on their privacy units, one list of row conditions, the
group keys and the aggregates as expressions over those occurrences. Inlining is what makes
the contribution bound checkable: a unit's rows in the joined relation are at most the
product of its rows in each occurrence, whatever the CTEs did.

Anything else is refused before it runs, with a :class:`~egress.errors.QueryRefused` that
names the construct and says what is allowed instead.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from egress.dp.catalog import ColumnSpec, DatasetCatalog
from egress.dp.intervals import Interval, interval_of
from egress.errors import QueryRefused

__all__ = [
    "MAX_CONTRIBUTION_ROWS",
    "MAX_DOMAIN_GROUPS",
    "MAX_OCCURRENCES",
    "MAX_SQL_CHARS",
    "AggKind",
    "Aggregate",
    "CatalogFor",
    "GroupKey",
    "Occurrence",
    "Plan",
    "analyze",
    "normalize_sql",
]

CatalogFor = Callable[[str], DatasetCatalog]
AggKind = Literal["count", "count_units", "sum", "avg", "variance", "stddev", "quantile"]

MAX_SQL_CHARS = 100_000  # longer queries are refused before parsing
MAX_CONTRIBUTION_ROWS = 10_000  # product of max_rows_per_unit over the joined datasets
MAX_DOMAIN_GROUPS = 100_000  # groups of a completed public domain (cross product)
MAX_OCCURRENCES = 16  # dataset uses after inlining CTEs (a CTE used twice counts twice)
_MAX_INTEGER_DOMAIN = 1_000  # an integer column with bounds this narrow has a public domain

_ALLOWED_ROW_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Null,
    exp.Boolean,
    exp.Paren,
    exp.Neg,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.IntDiv,
    exp.Mod,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
    exp.And,
    exp.Or,
    exp.Not,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Case,
    exp.If,
    exp.Coalesce,
    exp.Nullif,
    exp.Cast,
    exp.TryCast,
    exp.DataType,
    exp.DataTypeParam,
    exp.Abs,
    exp.Round,
    exp.Floor,
    exp.Ceil,
    exp.Least,
    exp.Greatest,
    exp.Sign,
    exp.Sqrt,
    exp.Pow,
    exp.Exp,
    exp.Ln,
    exp.Log,
    exp.Lower,
    exp.Upper,
    exp.Length,
    exp.Substring,
    exp.Trim,
    exp.Concat,
    exp.DPipe,
    exp.Year,
    exp.Month,
    exp.Day,
    exp.Extract,
    exp.Var,
    exp.TimestampTrunc,
    exp.DateTrunc,
    exp.Interval,
    exp.Try,
)

_ROLE_ALLOWED_HINT = (
    "identifier columns may be used only to JOIN on the privacy unit and in "
    "COUNT(DISTINCT <privacy unit>); group and filter by other columns"
)


def _refuse(message: str, hint: str) -> QueryRefused:
    return QueryRefused(message, hint=hint)


def _sql(node: exp.Expr) -> str:
    return node.sql(dialect="duckdb")


def normalize_sql(sql: str) -> str:
    """One canonical text per query: parsed, re-generated, identifiers lower-cased,
    comments dropped. Two submissions with the same normal form are the same query."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except ParseError as exc:
        raise _refuse(f"cannot parse the SQL: {exc}", "write one DuckDB SELECT statement") from None
    return tree.sql(dialect="duckdb", normalize=True, comments=False)


# --------------------------------------------------------------------------------------
# the plan


@dataclass(frozen=True)
class Occurrence:
    """One use of a dataset in the flattened FROM clause, under a fresh alias."""

    alias: str
    catalog: DatasetCatalog

    def unit_column(self) -> exp.Column:
        return exp.column(self.catalog.privacy_unit, table=self.alias, quoted=True)


@dataclass
class GroupKey:
    name: str  # output column name
    expr: exp.Expression  # per-row expression over occurrences
    domain: tuple[Any, ...] | None  # public domain, None: needs partition selection


@dataclass
class Aggregate:
    name: str  # output column name (``__h<i>`` for aggregates only HAVING/ORDER BY use)
    kind: AggKind
    arg: exp.Expression | None  # per-row argument over occurrences (None for COUNT(*))
    filter: exp.Expression | None  # per-row FILTER (WHERE ...) condition
    interval: Interval | None  # public bounds of `arg` (numeric aggregates)
    ddof: int = 1  # VARIANCE/STDDEV: 1 sample, 0 population
    q: float | None = None  # QUANTILE: which one
    hidden: bool = False
    written: str = ""  # as the operator wrote it, for messages

    def signature(self) -> tuple[str, str, str, str, str]:
        return (
            self.kind,
            _sql(self.arg) if self.arg is not None else "",
            _sql(self.filter) if self.filter is not None else "",
            str(self.ddof),
            str(self.q),
        )


@dataclass
class Plan:
    """The operator's query, flattened: what the rewrite and the noise need to know."""

    occurrences: list[Occurrence]
    conditions: list[exp.Expression]
    group_keys: list[GroupKey]
    aggregates: list[Aggregate]
    having: exp.Expression | None  # over output names (aggregates replaced by columns)
    order: list[tuple[exp.Expression, bool, bool | None]]  # (expr, desc, nulls_first)
    limit: int | None
    offset: int | None
    normalized_sql: str
    column_of: Callable[[exp.Column], ColumnSpec] = field(repr=False)

    @property
    def contribution_rows(self) -> int:
        """Most rows one privacy unit can have in the joined relation."""
        return math.prod(o.catalog.max_rows_per_unit for o in self.occurrences)

    @property
    def unit_bound_verified(self) -> bool:
        return all(o.catalog.unit_bound_verified for o in self.occurrences)

    @property
    def needs_partition_selection(self) -> bool:
        return any(k.domain is None for k in self.group_keys)

    @property
    def data_versions(self) -> dict[str, int]:
        return {o.catalog.name: o.catalog.version for o in self.occurrences}

    @property
    def visible(self) -> list[Aggregate]:
        return [a for a in self.aggregates if not a.hidden]

    def query_hash(self) -> str:
        blob = self.normalized_sql + "|" + repr(sorted(self.data_versions.items()))
        return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------------------
# scopes: which names a SELECT can see


@dataclass
class _Source:
    alias: str  # as the query names it (lower case)
    columns: dict[str, exp.Expression]  # column name -> resolved expression
    occurrences: list[int]  # indices into the analyzer's occurrences


@dataclass
class _Relation:
    sources: list[_Source]
    conditions: list[exp.Expression]
    occurrences: list[int]


class _Analyzer:
    def __init__(self, catalog_for: CatalogFor) -> None:
        self._catalog_for = catalog_for
        self.occurrences: list[Occurrence] = []
        self._counter = itertools.count()
        self._expanding: list[str] = []  # CTEs being inlined, innermost last

    # -- catalog ------------------------------------------------------------------------
    def column_of(self, col: exp.Column) -> ColumnSpec:
        occ = self._occ_by_alias(col.table)
        return occ.catalog.column(col.name)

    def _occ_by_alias(self, alias: str) -> Occurrence:
        for o in self.occurrences:
            if o.alias == alias:
                return o
        raise AssertionError(f"unresolved occurrence {alias}")  # pragma: no cover

    def is_unit(self, node: exp.Expression) -> bool:
        while isinstance(node, exp.Paren):
            node = node.this
        if not isinstance(node, exp.Column) or not node.table:
            return False
        occ = self._occ_by_alias(node.table)
        return node.name == occ.catalog.privacy_unit

    # -- checks -------------------------------------------------------------------------
    def check_row_expression(self, node: exp.Expression, where: str) -> None:
        """Only deterministic per-row operations: no aggregates, windows, subqueries,
        table functions or unknown functions."""
        for n in node.walk():
            if isinstance(n, exp.AggFunc):
                raise _refuse(
                    f"aggregate {_sql(n)} is not allowed {where}",
                    "aggregates belong in the final SELECT list (or HAVING); per-row parts "
                    "of the query (CTEs, WHERE, JOIN ON, GROUP BY, inside an aggregate) "
                    "may only compute on single rows",
                )
            if isinstance(n, exp.Window):
                raise _refuse(
                    f"window function {_sql(n)} is not allowed",
                    "window functions return row-level values; use GROUP BY with aggregates",
                )
            if isinstance(n, (exp.Subquery, exp.Select, exp.Exists, exp.SetOperation)):
                raise _refuse(
                    f"a subquery is not allowed {where}",
                    "write per-row steps as a CTE (WITH name AS (SELECT ... FROM dataset)) "
                    "and JOIN it on the privacy unit",
                )
            if isinstance(n, exp.Star):
                raise _refuse(
                    f"* is not allowed {where}",
                    "name the columns you need (COUNT(*) is the only place for *)",
                )
            if isinstance(n, exp.In) and (n.args.get("query") or n.args.get("unnest")):
                raise _refuse(
                    f"IN with a subquery is not allowed {where}",
                    "use IN with a list of literal values",
                )
            if not isinstance(n, _ALLOWED_ROW_NODES):
                name = n.sql_name() if isinstance(n, exp.Func) else type(n).__name__
                raise _refuse(
                    f"{name.upper()} is not allowed in a DP query ({where}): `{_sql(n)[:120]}`",
                    "use arithmetic, comparisons, CASE, CAST, COALESCE, ABS, ROUND, FLOOR, "
                    "CEIL, LEAST, GREATEST, SQRT, LN, LOG, EXP, POW, string functions "
                    "(LOWER, UPPER, LENGTH, SUBSTRING, TRIM, CONCAT) and date parts "
                    "(YEAR, MONTH, DAY, EXTRACT, DATE_TRUNC)",
                )

    def check_roles(self, node: exp.Expression, where: str) -> None:
        for col in node.find_all(exp.Column):
            spec = self.column_of(col)
            if spec.role == "identifier":
                raise _refuse(
                    f"column {spec.name!r} is an identifier; it cannot be used {where}",
                    _ROLE_ALLOWED_HINT,
                )
            if self.is_unit(col):
                raise _refuse(
                    f"the privacy unit {spec.name!r} cannot be used {where}",
                    "the privacy unit may only join datasets and be counted with "
                    "COUNT(DISTINCT ...); grouping or filtering by it would single out people",
                )

    # -- flattening ---------------------------------------------------------------------
    def new_occurrence(self, name: str) -> int:
        try:
            catalog = self._catalog_for(name)
        except QueryRefused:
            raise
        except Exception as exc:  # the caller's lookup failed: the dataset is unknown
            raise _refuse(
                f"unknown dataset {name!r}",
                "FROM may name a dataset your scenario authorizes, or a CTE defined in WITH",
            ) from exc
        if len(self.occurrences) >= MAX_OCCURRENCES:
            raise _refuse(
                f"the query reads datasets more than {MAX_OCCURRENCES} times once its CTEs "
                "are inlined",
                "join fewer tables; a CTE that is used twice reads its datasets twice",
            )
        alias = f"t{next(self._counter)}"
        self.occurrences.append(Occurrence(alias, catalog))
        return len(self.occurrences) - 1

    def base_source(self, idx: int, alias: str) -> _Source:
        occ = self.occurrences[idx]
        cols: dict[str, exp.Expression] = {
            name: exp.column(name, table=occ.alias, quoted=True) for name in occ.catalog.columns
        }
        return _Source(alias.lower(), cols, [idx])

    def source_of(self, node: exp.Expression, ctes: dict[str, exp.Select]) -> _Source:
        if isinstance(node, exp.Subquery):
            inner = node.this
            alias = node.alias_or_name or f"subquery{next(self._counter)}"
            if not isinstance(inner, exp.Select):
                raise _refuse(
                    f"{type(inner).__name__.upper()} is not allowed in FROM",
                    "set operations (UNION, INTERSECT, EXCEPT) could repeat a person's rows; "
                    "write one SELECT per release",
                )
            rel = self.flatten(inner, ctes, final=False)
            return self.relation_source(rel, inner, alias)
        if not isinstance(node, exp.Table):
            raise _refuse(
                f"{type(node).__name__.upper()} is not allowed in FROM: `{_sql(node)[:120]}`",
                "FROM may name a dataset, a CTE, or a per-row subquery",
            )
        extra = {k for k, v in node.args.items() if v not in (None, [], False)} - {"this", "alias"}
        if not isinstance(node.this, exp.Identifier) or extra:
            what = (
                node.this.sql_name()
                if isinstance(node.this, exp.Func)
                else ", ".join(sorted(extra))
            ) or type(node.this).__name__
            raise _refuse(
                f"{what.upper()} is not allowed in FROM: `{_sql(node)[:120]}`",
                "FROM may name a dataset or a CTE only: table functions (read_csv, "
                "read_parquet, ...), schemas, samples and time travel are not available",
            )
        name = node.name.lower()
        alias = (node.alias or node.name).lower()
        if name in ctes:
            if name in self._expanding:
                raise _refuse(
                    f"CTE {name!r} refers to itself",
                    "a CTE may use datasets and CTEs defined before it, not itself",
                )
            self._expanding.append(name)
            try:
                rel = self.flatten(ctes[name], ctes, final=False)
            finally:
                self._expanding.pop()
            return self.relation_source(rel, ctes[name], alias)
        return self.base_source(self.new_occurrence(name), alias)

    def relation_source(self, rel: _Relation, select: exp.Select, alias: str) -> _Source:
        cols: dict[str, exp.Expression] = {}
        for proj in select.expressions:
            if isinstance(proj, exp.Star) or (
                isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star)
            ):
                star_src = proj.table.lower() if isinstance(proj, exp.Column) else ""
                if isinstance(proj, exp.Star) and (
                    proj.args.get("except_") or proj.args.get("replace")
                ):
                    raise _refuse(
                        "SELECT * EXCLUDE/REPLACE is not allowed", "name the columns you need"
                    )
                matched = False
                for src in rel.sources:
                    if star_src and src.alias != star_src:
                        continue
                    matched = True
                    for cname, cexpr in src.columns.items():
                        cols.setdefault(cname, cexpr)
                if not matched:
                    raise _refuse(
                        f"unknown table {star_src!r} in {_sql(proj)}",
                        "qualify * with a name from FROM",
                    )
                continue
            name = proj.alias_or_name
            inner = proj.this if isinstance(proj, exp.Alias) else proj
            if not isinstance(proj, (exp.Alias, exp.Column)):
                raise _refuse(
                    f"give the expression `{_sql(proj)[:80]}` a name with AS",
                    "every computed column of a CTE or subquery needs an alias",
                )
            self.check_row_expression(inner, "in a CTE")
            cols[name.lower()] = self.resolve(inner, rel.sources)
        return _Source(alias.lower(), cols, list(rel.occurrences))

    def resolve(self, node: exp.Expression, sources: Sequence[_Source]) -> exp.Expression:
        """A copy of `node` with every column replaced by its expression over occurrences."""

        def sub(n: exp.Expression) -> exp.Expression:
            if not isinstance(n, exp.Column):
                return n
            if n.args.get("db") or n.args.get("catalog"):
                raise _refuse(
                    f"qualified name {_sql(n)} is not allowed",
                    "refer to columns as name or alias.name",
                )
            cname, tname = n.name.lower(), n.table.lower()
            hits = [s for s in sources if (not tname or s.alias == tname) and cname in s.columns]
            if not hits:
                where = f" in {tname!r}" if tname else ""
                raise _refuse(
                    f"unknown column {_sql(n)}{where}",
                    "check the column name against the dataset's catalog",
                )
            if len(hits) > 1:
                raise _refuse(
                    f"column {cname!r} is ambiguous",
                    "qualify it with the table alias (alias.column)",
                )
            out = hits[0].columns[cname].copy()
            if not isinstance(out, (exp.Column, exp.Literal, exp.Paren)):
                out = exp.Paren(this=out)
            return out

        return node.copy().transform(sub)

    def flatten(
        self, select: exp.Select, outer_ctes: dict[str, exp.Select], *, final: bool
    ) -> _Relation:
        ctes = dict(outer_ctes)
        with_ = select.args.get("with_")
        if with_ is not None:
            if with_.args.get("recursive"):
                raise _refuse("WITH RECURSIVE is not allowed", "use plain CTEs")
            for cte in with_.expressions:
                body = cte.this
                if not isinstance(body, exp.Select):
                    raise _refuse(
                        f"CTE {cte.alias!r} is a {type(body).__name__.upper()}",
                        "set operations (UNION, INTERSECT, EXCEPT) could repeat a person's "
                        "rows; a CTE must be one per-row SELECT",
                    )
                ctes[cte.alias.lower()] = body
        self.check_select_clauses(select, final=final)
        from_ = select.args.get("from_")
        if from_ is None:
            raise _refuse("the query has no FROM", "aggregate over a dataset: FROM <dataset>")
        first = self.source_of(from_.this, ctes)
        sources = [first]
        occurrences = list(first.occurrences)
        conditions: list[exp.Expression] = []
        for join in select.args.get("joins") or []:
            src = self.source_of(join.this, ctes)
            conditions.extend(self.link(join, sources, src))
            sources.append(src)
            occurrences.extend(src.occurrences)
        where = select.args.get("where")
        if where is not None:
            self.check_row_expression(where.this, "in WHERE")
            conditions.extend(_conjuncts(self.resolve(where.this, sources)))
        return _Relation(sources, conditions, occurrences)

    def link(self, join: exp.Join, left: list[_Source], right: _Source) -> list[exp.Expression]:
        kind = (join.args.get("kind") or "").upper()
        side = (join.args.get("side") or "").upper()
        method = (join.args.get("method") or "").upper()
        if kind not in ("", "INNER") or side or method:
            what = " ".join(x for x in (method, side, kind) if x) or "this"
            raise _refuse(
                f"{what} JOIN is not allowed",
                "only inner JOIN ... ON a.<privacy unit> = b.<privacy unit> keeps each person's "
                "rows bounded",
            )
        using = join.args.get("using")
        if using:
            rest: list[exp.Expression] = []
            linked = False
            for ident in using:
                name = ident.name.lower()
                lcol = self.resolve(exp.column(name), left)
                rcol = self.resolve(exp.column(name), [right])
                if self.is_unit(lcol) and self.is_unit(rcol):
                    linked = True
                else:
                    rest.append(exp.EQ(this=lcol, expression=rcol))
            if not linked:
                raise self.no_link(join)
            return rest
        on = join.args.get("on")
        if on is None:
            raise self.no_link(join)
        self.check_row_expression(on, "in JOIN ON")
        out: list[exp.Expression] = []
        linked = False
        right_occ = set(right.occurrences)
        for conj in _conjuncts(self.resolve(on, [*left, right])):
            if not linked and isinstance(conj, exp.EQ):
                a, b = conj.this, conj.expression
                if self.is_unit(a) and self.is_unit(b):
                    sides = {self._occ_index(a) in right_occ, self._occ_index(b) in right_occ}
                    if sides == {True, False}:
                        linked = True
                        continue
            out.append(conj)
        if not linked:
            raise self.no_link(join)
        return out

    def _occ_index(self, node: exp.Expression) -> int:
        while isinstance(node, exp.Paren):
            node = node.this
        assert isinstance(node, exp.Column)
        return next(i for i, o in enumerate(self.occurrences) if o.alias == node.table)

    def no_link(self, join: exp.Join) -> QueryRefused:
        return _refuse(
            f"JOIN {_sql(join.this)[:80]} is not on the privacy unit",
            "join datasets only with ON a.<privacy unit> = b.<privacy unit> (for example "
            "ON a.person_id = b.person_id), so each person's rows stay bounded",
        )

    def check_select_clauses(self, select: exp.Select, *, final: bool) -> None:
        allowed = {"expressions", "from_", "joins", "where", "with_", "kind"}
        if final:
            allowed |= {"group", "having", "order", "limit", "offset"}
        names = {
            "distinct": (
                "SELECT DISTINCT",
                "DISTINCT reveals which values occur; use GROUP BY with COUNT(*)",
            ),
            "qualify": ("QUALIFY", "QUALIFY filters on window functions, which are not allowed"),
            "windows": ("WINDOW", "window functions return row-level values"),
            "laterals": ("LATERAL", "use a JOIN on the privacy unit"),
            "group": (
                "GROUP BY in a CTE or subquery",
                "aggregate only in the final SELECT; CTEs must stay per-row",
            ),
            "having": ("HAVING in a CTE or subquery", "aggregate only in the final SELECT"),
            "order": ("ORDER BY in a CTE or subquery", "order only the final result"),
            "limit": (
                "LIMIT in a CTE or subquery",
                "LIMIT before aggregating would pick rows; limit only the final result",
            ),
            "offset": ("OFFSET in a CTE or subquery", "limit only the final result"),
            "sample": ("TABLESAMPLE", "sampling is not available in DP queries"),
            "pivots": ("PIVOT", "use GROUP BY"),
        }
        for key, value in select.args.items():
            if value in (None, [], False) or key in allowed:
                continue
            label, hint = names.get(key, (key.upper(), "remove it"))
            raise _refuse(f"{label} is not allowed in a DP query", hint)
        if select.args.get("kind"):
            raise _refuse(f"SELECT {select.args['kind']} is not allowed", "use plain SELECT")
        if not final:
            for proj in select.expressions:
                if proj.find(exp.AggFunc) is not None:
                    raise _refuse(
                        f"aggregate `{_sql(proj)[:80]}` in a CTE or subquery is not allowed",
                        "CTEs must stay per-row: aggregate only in the final SELECT "
                        "(aggregating twice would release exact aggregates to the outer query)",
                    )


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


# --------------------------------------------------------------------------------------
# the final SELECT


_QUANTILE_NODES = (exp.PercentileCont, exp.PercentileDisc, exp.Quantile, exp.Median)


def _literal_number(node: exp.Expression | None) -> float | None:
    if isinstance(node, exp.Neg):
        v = _literal_number(node.this)
        return None if v is None else -v
    if isinstance(node, exp.Literal) and not node.is_string:
        return float(node.this)
    return None


def _default_name(kind: str, arg: exp.Expression | None, q: float | None) -> str:
    if arg is None:
        base = "count"
    elif isinstance(arg, exp.Column):
        base = f"{kind}_{arg.name}"
    else:
        base = f"{kind}_expr"
    if q is not None and kind == "quantile":
        base += "_" + f"{q:g}".replace(".", "_").replace("-", "m")
    return base


class _Final:
    """Reads the final SELECT: group keys, aggregates, HAVING, ORDER BY, LIMIT."""

    def __init__(self, an: _Analyzer, rel: _Relation, select: exp.Select) -> None:
        self.an = an
        self.rel = rel
        self.select = select
        self.keys: list[GroupKey] = []
        self.aggs: list[Aggregate] = []
        self.names: set[str] = set()

    def unique(self, name: str) -> str:
        base, n = name, 2
        while name in self.names:
            name = f"{base}_{n}"
            n += 1
        self.names.add(name)
        return name

    def resolve_row(self, node: exp.Expression, where: str) -> exp.Expression:
        self.an.check_row_expression(node, where)
        out = self.an.resolve(node, self.rel.sources)
        self.an.check_roles(out, where)
        return out

    # -- aggregates ---------------------------------------------------------------------
    def read_aggregate(self, node: exp.Expression, name: str | None, hidden: bool) -> Aggregate:
        written = _sql(node)
        filt: exp.Expression | None = None
        if isinstance(node, exp.Filter):
            where = node.expression
            filt = self.resolve_row(
                where.this if isinstance(where, exp.Where) else where, "in FILTER (WHERE ...)"
            )
            node = node.this
        if isinstance(node, exp.WithinGroup):
            raise _refuse(
                f"{written[:80]}: WITHIN GROUP is not supported",
                "write QUANTILE_CONT(column, q) or MEDIAN(column)",
            )
        kind: AggKind
        arg: exp.Expression | None = None
        ddof, q = 1, None
        if isinstance(node, exp.Count):
            inner = node.this
            if isinstance(inner, exp.Distinct):
                items = inner.expressions
                resolved = [self.an.resolve(i, self.rel.sources) for i in items]
                if len(resolved) != 1 or not self.an.is_unit(resolved[0]):
                    raise _refuse(
                        f"{written}: COUNT(DISTINCT ...) is allowed only on the privacy unit",
                        "count people with COUNT(DISTINCT <privacy unit>); counting distinct "
                        "values of other columns is not supported",
                    )
                kind = "count_units"
            elif isinstance(inner, exp.Star) or inner is None:
                kind = "count"
            else:
                kind = "count"
                arg = self.resolve_row(inner, "inside COUNT")
        elif isinstance(
            node,
            (
                exp.Sum,
                exp.Avg,
                exp.Variance,
                exp.VariancePop,
                exp.Stddev,
                exp.StddevSamp,
                exp.StddevPop,
                *_QUANTILE_NODES,
            ),
        ):
            if isinstance(node.this, exp.Distinct):
                raise _refuse(
                    f"{written}: DISTINCT inside an aggregate is not allowed",
                    "aggregate all rows; de-duplicate per person is done for you",
                )
            if isinstance(node, exp.Sum):
                kind = "sum"
            elif isinstance(node, exp.Avg):
                kind = "avg"
            elif isinstance(node, (exp.Variance, exp.VariancePop)):
                kind, ddof = "variance", (0 if isinstance(node, exp.VariancePop) else 1)
            elif isinstance(node, (exp.Stddev, exp.StddevSamp, exp.StddevPop)):
                kind, ddof = "stddev", (0 if isinstance(node, exp.StddevPop) else 1)
            else:
                kind = "quantile"
                if isinstance(node, exp.Median):
                    q = 0.5
                else:
                    raw = node.args.get("quantile") or node.args.get("expression")
                    q = _literal_number(raw)
                    if q is None or not 0.0 <= q <= 1.0:
                        raise _refuse(
                            f"{written}: the quantile must be one number from 0 to 1",
                            "write QUANTILE_CONT(column, 0.9); ask for several quantiles as "
                            "several columns",
                        )
            arg = self.resolve_row(node.this, f"inside {node.sql_name().upper()}")
        elif isinstance(node, (exp.Min, exp.Max)):
            raise _refuse(
                f"{written}: MIN and MAX are not allowed (they are one person's value)",
                "use QUANTILE_CONT(column, 0.01) or QUANTILE_CONT(column, 0.99) instead",
            )
        else:
            fname = node.sql_name() if isinstance(node, exp.Func) else type(node).__name__
            raise _refuse(
                f"aggregate {fname.upper()} is not allowed: `{written[:80]}`",
                "use COUNT(*), COUNT(column), COUNT(DISTINCT <privacy unit>), SUM, AVG, "
                "VARIANCE, STDDEV, QUANTILE_CONT(column, q) or MEDIAN",
            )
        interval = None
        if kind in ("sum", "avg", "variance", "stddev", "quantile"):
            assert arg is not None
            interval = interval_of(arg, self.an.column_of)
        agg = Aggregate(
            name="",
            kind=kind,
            arg=arg,
            filter=filt,
            interval=interval,
            ddof=ddof,
            q=q,
            hidden=hidden,
            written=written,
        )
        for existing in self.aggs:
            if existing.signature() == agg.signature() and (hidden or existing.hidden):
                if not hidden:
                    existing.hidden = False
                    existing.name = self.unique(name or existing.name)
                return existing
        if hidden:
            agg.name = self.unique(f"__h{len(self.aggs)}")
        else:
            agg.name = self.unique(name or _default_name(kind, arg, q))
        self.aggs.append(agg)
        return agg

    # -- group keys ---------------------------------------------------------------------
    def domain_of(self, expr: exp.Expression) -> tuple[Any, ...] | None:
        while isinstance(expr, exp.Paren):
            expr = expr.this
        if isinstance(expr, exp.Column):
            spec = self.an.column_of(expr)
            if spec.domain is not None:
                return spec.domain
            if spec.type.lower() in ("bool", "boolean"):
                return (False, True)
            if spec.is_integer and spec.bounds is not None:
                lo, hi = math.ceil(spec.bounds[0]), math.floor(spec.bounds[1])
                if 0 <= hi - lo < _MAX_INTEGER_DOMAIN:
                    return tuple(range(lo, hi + 1))
            return None
        if isinstance(expr, (exp.Case, exp.If)):
            branches: list[exp.Expression] = []
            if isinstance(expr, exp.If):
                branches.append(expr.args["true"])
                if expr.args.get("false") is not None:
                    branches.append(expr.args["false"])
            else:
                branches.extend(i.args["true"] for i in expr.args.get("ifs") or [])
                if expr.args.get("default") is not None:
                    branches.append(expr.args["default"])
            values: list[Any] = []
            for b in branches:
                if isinstance(b, exp.Null):
                    continue
                if not isinstance(b, exp.Literal):
                    return None
                v: Any = b.this if b.is_string else float(b.this)
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                if v not in values:
                    values.append(v)
            kinds = {type(v) for v in values}
            if not values or len(kinds) > 1:
                return None
            return tuple(values)
        return None

    def add_key(self, expr: exp.Expression, name: str | None) -> GroupKey:
        for k in self.keys:
            if k.expr == expr:
                if name and k.name.startswith("group_"):
                    self.names.discard(k.name)
                    k.name = self.unique(name)
                return k
        key = GroupKey(
            name=self.unique(name or f"group_{len(self.keys)}"),
            expr=expr,
            domain=self.domain_of(expr),
        )
        self.keys.append(key)
        return key

    # -- the whole SELECT ---------------------------------------------------------------
    def read(self) -> None:
        projections: list[tuple[str | None, exp.Expression]] = []
        for proj in self.select.expressions:
            if proj.find(exp.Subquery, exp.Select, exp.Exists) is not None:
                raise _refuse(
                    f"a subquery in the SELECT list is not allowed: `{_sql(proj)[:80]}`",
                    "select aggregates of this query only; run another query for another number",
                )
            window = proj.find(exp.Window)
            if window is not None:
                raise _refuse(
                    f"window function {_sql(window)} is not allowed",
                    "window functions return row-level values; use GROUP BY with aggregates",
                )
            if isinstance(proj, exp.Star) or (
                isinstance(proj, exp.Column) and isinstance(proj.this, exp.Star)
            ):
                raise _refuse(
                    "SELECT * would return rows",
                    "a DP query returns aggregates: SELECT COUNT(*) FROM ...",
                )
            if isinstance(proj, exp.Alias):
                out_name = proj.alias.lower()
                if out_name.startswith("__"):
                    raise _refuse(
                        f"output name {out_name!r} is reserved",
                        "names starting with __ are used by the gate",
                    )
                projections.append((out_name, proj.this))
            else:
                projections.append((None, proj))
        is_agg = [_is_aggregate(p) for _, p in projections]
        for (_, p), agg in zip(projections, is_agg, strict=True):
            if not agg and p.find(exp.AggFunc) is not None:
                raise _refuse(
                    f"`{_sql(p)[:80]}` computes with an aggregate",
                    "select each aggregate as its own column (optionally AS name); combine "
                    "released columns after the release",
                )
        # group keys, in GROUP BY order
        group = self.select.args.get("group")
        non_agg = [i for i, a in enumerate(is_agg) if not a]
        key_of_proj: dict[int, GroupKey] = {}
        if group is not None:
            if group.args.get("all"):
                for i in non_agg:
                    alias, p = projections[i]
                    key_of_proj[i] = self.add_key(
                        self.resolve_row(p, "in GROUP BY"), alias or _column_name(p)
                    )
            for g in group.expressions:
                idx = self.group_ref(g, projections)
                if idx is not None:
                    if is_agg[idx]:
                        raise _refuse(
                            f"GROUP BY {_sql(g)} refers to an aggregate",
                            "group by columns or per-row expressions",
                        )
                    alias, p = projections[idx]
                    key_of_proj[idx] = self.add_key(
                        self.resolve_row(p, "in GROUP BY"), alias or _column_name(p)
                    )
                else:
                    self.add_key(self.resolve_row(g, "in GROUP BY"), _column_name(g))
            for extra in ("rollup", "cube", "grouping_sets"):
                if group.args.get(extra):
                    raise _refuse(
                        f"GROUP BY {extra.upper()} is not allowed", "run one query per grouping"
                    )
        for i in non_agg:
            if i in key_of_proj:
                continue
            alias, p = projections[i]
            resolved = self.resolve_row(p, "in the SELECT list")
            match = next((k for k in self.keys if k.expr == resolved), None)
            if match is None:
                raise _refuse(
                    f"`{_sql(p)[:80]}` is neither aggregated nor in GROUP BY",
                    "a DP query returns only aggregates per group: add it to GROUP BY or "
                    "wrap it in an aggregate",
                )
            key_of_proj[i] = self.add_key(resolved, alias or _column_name(p))
        for i, agg in enumerate(is_agg):
            if agg:
                alias, p = projections[i]
                self.read_aggregate(p, alias, hidden=False)
        if not any(not a.hidden for a in self.aggs):
            raise _refuse(
                "the query computes no aggregate",
                "a DP query returns aggregates: COUNT(*), SUM(column), AVG(column)...",
            )

    def group_ref(
        self, g: exp.Expression, projections: list[tuple[str | None, exp.Expression]]
    ) -> int | None:
        if isinstance(g, exp.Literal) and not g.is_string:
            i = int(float(g.this)) - 1
            if not 0 <= i < len(projections):
                raise _refuse(
                    f"GROUP BY {g.this} is out of range",
                    "GROUP BY positions count SELECT columns from 1",
                )
            return i
        if isinstance(g, exp.Column) and not g.table:
            in_sources = any(g.name.lower() in s.columns for s in self.rel.sources)
            if not in_sources:
                for i, (alias, _) in enumerate(projections):
                    if alias == g.name.lower():
                        return i
        return None

    # -- HAVING, ORDER BY ---------------------------------------------------------------
    def output_expr(self, node: exp.Expression, where: str) -> exp.Expression:
        """Rewrite a HAVING/ORDER BY expression over the released (noisy) columns."""
        for n in node.walk():
            if isinstance(n, (exp.Subquery, exp.Select, exp.Window)):
                raise _refuse(
                    f"{type(n).__name__.upper()} is not allowed {where}",
                    "use aggregates, group columns and literals",
                )

        def key_for(n: exp.Expression) -> GroupKey | None:
            if n.find(exp.AggFunc) is not None or n.find(exp.Column) is None:
                return None
            try:
                resolved = self.an.resolve(n, self.rel.sources)
            except QueryRefused:
                return None
            return next((k for k in self.keys if k.expr == resolved), None)

        def sub(n: exp.Expression) -> exp.Expression:
            if _is_aggregate(n):
                agg = self.read_aggregate(n, None, hidden=True)
                return exp.column(agg.name, quoted=True)
            if isinstance(n, exp.Column) and not n.table:
                name = n.name.lower()
                for k in self.keys:
                    if k.name == name:
                        return exp.column(k.name, quoted=True)
                for a in self.aggs:
                    if a.name == name and not a.hidden:
                        return exp.column(a.name, quoted=True)
            key = key_for(n)
            if key is not None:
                return exp.column(key.name, quoted=True)
            if isinstance(n, exp.Column):
                raise _refuse(
                    f"{_sql(n)} {where} is neither a group column nor an aggregate",
                    "HAVING and ORDER BY may use aggregates and GROUP BY columns",
                )
            return n

        out = node.copy().transform(sub)
        self.an.check_row_expression(out, where)
        return out


def _column_name(node: exp.Expression) -> str | None:
    return node.name.lower() if isinstance(node, exp.Column) and node.name else None


def _is_aggregate(node: exp.Expression) -> bool:
    if isinstance(node, exp.Filter):
        return isinstance(node.this, exp.AggFunc)
    return isinstance(node, (exp.AggFunc, exp.WithinGroup))


_PLANS: OrderedDict[str, list[tuple[tuple[DatasetCatalog, ...], Plan]]] = OrderedDict()
_PLANS_LOCK = threading.Lock()
_PLANS_MAX = 256


def analyze(sql: str, catalog_for: CatalogFor) -> Plan:
    """Check `sql` against the allowed shape and flatten it; refuse anything else.

    Plans are memoized by the SQL text and the exact catalogs (names, versions, columns,
    bounds …) they were built from: a job is analyzed at submit and again just before it
    runs, and operators repeat the same queries, while parsing and flattening cost more
    than the rest of the compile. A catalog that changed in any way misses the memo.
    Plans are read, never changed, by the rewrite and the compiler.
    """
    with _PLANS_LOCK:
        entries = list(_PLANS.get(sql, ()))
    for catalogs, plan in entries:
        if all(catalog_for(c.name) == c for c in catalogs):
            return plan
    try:
        plan = _analyze(sql, catalog_for)
    except RecursionError:
        raise _refuse(
            "the query is nested too deeply to check",
            "write it with fewer nested parentheses, CASEs or subqueries",
        ) from None
    catalogs = tuple({o.catalog.name: o.catalog for o in plan.occurrences}.values())
    with _PLANS_LOCK:
        kept = [e for e in _PLANS.pop(sql, []) if e[0] != catalogs][-3:]
        _PLANS[sql] = [*kept, (catalogs, plan)]
        while len(_PLANS) > _PLANS_MAX:
            _PLANS.popitem(last=False)
    return plan


def _analyze(sql: str, catalog_for: CatalogFor) -> Plan:
    if len(sql) > MAX_SQL_CHARS:
        raise _refuse(
            f"the query is {len(sql)} characters long",
            f"DP queries may be at most {MAX_SQL_CHARS} characters",
        )
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except ParseError as exc:
        raise _refuse(f"cannot parse the SQL: {exc}", "write one DuckDB SELECT statement") from None
    if len(statements) != 1:
        raise _refuse(f"found {len(statements)} statements", "send exactly one SELECT statement")
    tree = statements[0]
    if isinstance(tree, exp.SetOperation):
        raise _refuse(
            f"{type(tree).__name__.upper()} is not allowed",
            "set operations could count a person twice; send one SELECT per release",
        )
    if not isinstance(tree, exp.Select):
        raise _refuse(
            f"{type(tree).__name__.upper()} statements are not allowed",
            "DP queries are read-only: send one SELECT with aggregates",
        )
    an = _Analyzer(catalog_for)
    rel = an.flatten(tree, {}, final=True)
    for cond in rel.conditions:
        an.check_roles(cond, "in WHERE or JOIN ON")
    final = _Final(an, rel, tree)
    final.read()
    having_node = tree.args.get("having")
    having = final.output_expr(having_node.this, "in HAVING") if having_node else None
    order: list[tuple[exp.Expression, bool, bool | None]] = []
    order_node = tree.args.get("order")
    visible_names = [k.name for k in final.keys] + [a.name for a in final.aggs if not a.hidden]
    for o in order_node.expressions if order_node else []:
        target = o.this
        if isinstance(target, exp.Literal) and not target.is_string:
            i = int(float(target.this)) - 1
            if not 0 <= i < len(visible_names):
                raise _refuse(
                    f"ORDER BY {target.this} is out of range",
                    "ORDER BY positions count output columns from 1",
                )
            expr: exp.Expression = exp.column(visible_names[i], quoted=True)
        else:
            expr = final.output_expr(target, "in ORDER BY")
        order.append((expr, bool(o.args.get("desc")), o.args.get("nulls_first")))
    limit = _count_clause(tree.args.get("limit"), "LIMIT")
    offset = _count_clause(tree.args.get("offset"), "OFFSET")
    plan = Plan(
        occurrences=an.occurrences,
        conditions=rel.conditions,
        group_keys=final.keys,
        aggregates=final.aggs,
        having=having,
        order=order,
        limit=limit,
        offset=offset,
        normalized_sql=tree.sql(dialect="duckdb", normalize=True, comments=False),
        column_of=an.column_of,
    )
    _check_plan(plan)
    return plan


def _count_clause(node: exp.Expression | None, label: str) -> int | None:
    if node is None:
        return None
    value = node.expression if isinstance(node, (exp.Limit, exp.Offset)) else node
    v = _literal_number(value)
    if v is None or v < 0 or not v.is_integer():
        raise _refuse(f"{label} must be a whole number", f"write {label} 10")
    return int(v)


def _check_plan(plan: Plan) -> None:
    m = plan.contribution_rows
    if m > MAX_CONTRIBUTION_ROWS:
        raise _refuse(
            f"one person may have up to {m} rows in this join (the product of each dataset's "
            "max_rows_per_unit)",
            f"joins may reach at most {MAX_CONTRIBUTION_ROWS} rows per person; join fewer "
            "datasets or join each dataset once",
        )
    if plan.group_keys and not plan.needs_partition_selection:
        size = math.prod(len(k.domain or ()) for k in plan.group_keys)
        if size > MAX_DOMAIN_GROUPS:
            raise _refuse(
                f"the group columns' public domains make {size} groups",
                f"at most {MAX_DOMAIN_GROUPS} groups can be released; group by fewer columns",
            )
