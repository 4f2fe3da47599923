"""The trusted statistics query for a grouped aggregate, and a runner that splits its result.

The checks need, per output cell, what the operator never sees: how many units are behind
it, the largest contributions, and the (hashed) units themselves. For an SDC aggregate of
the shape ``SELECT keys, count/sum/avg FROM relation [WHERE …] GROUP BY keys`` this module
writes one DuckDB query that returns the aggregates *and* those statistics, computed from
per-unit partial sums (a unit's contribution to a cell is the sum of its rows in it):

    WITH base AS (SELECT keys, <keyed unit hash> AS u, <measure inputs> FROM rel WHERE …),
         per_unit AS (SELECT keys, u, count(*) AS rows, sum(x) AS x_sum, … GROUP BY keys, u)
    SELECT keys, <aggregates>, count(*) AS n_units,
           sum(abs(x_sum)) AS m__total, max(abs(x_sum), k) AS m__top,
           list(u ORDER BY u) AS units
    FROM per_unit GROUP BY keys

It runs inside the sandbox as trusted code; :func:`run_aggregate` turns its Arrow result
into an :class:`~egress.checks.inputs.OutputSpec` with :class:`OutputStats`. Margins
(ROLLUP) are not produced here: run a second query for them, so each margin's units are
counted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from egress.checks.inputs import MeasureKind, OutputMode, OutputSpec, OutputStats
from egress.checks.sketch import unit_hash_sql

__all__ = ["Measure", "cell_stats_sql", "run_aggregate"]


@dataclass(frozen=True)
class Measure:
    """One aggregate column: ``count`` (``column`` None = rows), ``sum`` or ``mean``."""

    name: str
    kind: MeasureKind
    column: str | None = None


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def cell_stats_sql(
    relation: str,
    keys: Sequence[str],
    measures: Sequence[Measure],
    unit_column: str,
    salt: str,
    where: str | None = None,
    top_n: int = 2,
) -> str:
    """The query; ``where`` is trusted SQL (the orchestrator's, never the operator's text)."""
    kq = [_q(k) for k in keys]
    base_cols = [*kq, f"{unit_hash_sql(_q(unit_column), salt)} AS __u"]
    per_unit = [*kq, "__u", "count(*) AS __rows"]
    final: list[str] = list(kq)
    for i, m in enumerate(measures):
        if m.column is not None:
            base_cols.append(f"{_q(m.column)} AS __c{i}")
            per_unit.append(f"sum(__c{i}) AS __s{i}")
            per_unit.append(f"count(__c{i}) AS __n{i}")
        if m.kind == "count":
            expr = "sum(__rows)" if m.column is None else f"sum(__n{i})"
            final.append(f"CAST({expr} AS BIGINT) AS {_q(m.name)}")
            continue
        if m.column is None:
            raise ValueError(f"measure {m.name!r}: {m.kind} needs a column")
        agg = f"sum(__s{i})" if m.kind == "sum" else f"sum(__s{i}) / nullif(sum(__n{i}), 0)"
        final.append(f"CAST({agg} AS DOUBLE) AS {_q(m.name)}")
        final.append(f"CAST(sum(abs(__s{i})) AS DOUBLE) AS {_q(m.name + '__total')}")
        final.append(f"CAST(max(abs(__s{i}), {int(top_n)}) AS DOUBLE[]) AS {_q(m.name + '__top')}")
    final.append("count(*) AS n_units")
    final.append("list(__u ORDER BY __u) AS units")
    group = ", ".join(kq)
    cond = f" WHERE {where}" if where else ""
    return (
        f"WITH base AS (SELECT {', '.join(base_cols)} FROM {relation}{cond}), "  # noqa: S608
        f"per_unit AS (SELECT {', '.join(per_unit)} FROM base GROUP BY {group}"
        f"{', ' if group else ''}__u) "
        f"SELECT {', '.join(final)} FROM per_unit"
        + (f" GROUP BY {group} ORDER BY {group}" if group else "")
    )


def run_aggregate(
    conn: Any,
    relation: str,
    keys: Sequence[str],
    measures: Sequence[Measure],
    unit_column: str,
    salt: str,
    *,
    datasets: Sequence[str],
    name: str = "result",
    where: str | None = None,
    mode: OutputMode = "sdc_aggregate",
    top_n: int = 2,
) -> OutputSpec:
    """Run the query on a DuckDB connection; the output and its statistics, split."""
    sql = cell_stats_sql(relation, keys, measures, unit_column, salt, where, top_n)
    result = conn.sql(sql).to_arrow_table()
    out_cols = [*keys, *(m.name for m in measures)]
    sums = [m.name for m in measures if m.kind != "count"]
    stats = OutputStats.from_arrow(result, sums)
    return OutputSpec(
        name=name,
        table=result.select(out_cols),
        datasets=tuple(datasets),
        mode=mode,
        measures={m.name: m.kind for m in measures},
        keys=tuple(keys),
        stats=stats,
    )
