"""Row-level output: rows of a source dataset coming back out, exactly or after rounding.

An output row *reveals a record* when, on the columns it shares with a source, it matches
at least one and fewer than ``min_cell_units`` source rows — it singles out a few records
rather than describing a group. ``SELECT *`` matches one row per output row; so does a
"sum" grouped by person, or ``max(income)``; ``SELECT DISTINCT district`` matches
thousands per row and reveals nothing.

Which columns are shared:

* by name (case-insensitive) — every output column;
* by value — a *record* column (neither a grouping key nor a count) whose distinct values
  are at least 90 % contained in a source column of the same kind, so renaming
  (``income AS x``) does not hide a column.

Numbers are compared on the output's own grid: if every output value is a multiple of
some quantum q (0.01, 1, 5, 100, …), both sides are rounded to q first, so
``round(income, -2)`` still matches the income column.

Only outputs with at least one shared *record* column are tested: an aggregate whose
shared columns are all grouping keys is the normal case, and the threshold rule guards it.

This check needs the source rows, so the pure core (:func:`check_row_level`) asks a
:class:`SourceRows` for the two things it needs; :class:`DuckDBSource` answers them with
SQL, so the orchestrator runs the check inside the sandbox as trusted code, next to the
decrypted data, and only findings come out.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from egress.checks.findings import Finding, Fix, clip
from egress.checks.inputs import OutputSpec, Thresholds

__all__ = [
    "CONTAINMENT_MIN",
    "Alignment",
    "DuckDBSource",
    "SourceRows",
    "check_row_level",
    "column_kind",
    "quantum",
]

CONTAINMENT_MIN = 0.9  # share of an output column's values found in a source column
_QUANTA: tuple[float, ...] = tuple(
    sorted((k * 10.0**e for e in range(-4, 7) for k in (1, 2, 2.5, 5)), reverse=True)
)


@dataclass(frozen=True)
class Alignment:
    """One output column matched to one source column."""

    output: str
    source: str
    how: str  # "name" | "values"
    quantum: float | None  # numbers compared after rounding to this; None = exact


def column_kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    return "other"


def quantum(values: npt.NDArray[np.float64]) -> float | None:
    """The coarsest grid every value lies on (1 for integers, 100 for rounded hundreds)."""
    v = values[np.isfinite(values)]
    v = v[v != 0]
    if v.size == 0:
        return None
    for q in _QUANTA:
        ratio = v / q
        if np.all(np.abs(ratio - np.round(ratio)) <= 1e-6 + 1e-12 * np.abs(ratio)):
            return q
    return None


class SourceRows(Protocol):
    """What the row-level check needs to know about one source dataset's rows."""

    name: str

    def column_kinds(self) -> Mapping[str, str]:
        """Source column name -> ``numeric`` | ``string`` | ``other``."""
        ...

    def containment(self, output: pa.Table, out_col: str, src_col: str, q: float | None) -> float:
        """Share of the output column's distinct values found in the source column."""
        ...

    def match_counts(self, output: pa.Table, aligned: Sequence[Alignment]) -> npt.NDArray[np.int64]:
        """Per output row, how many source rows equal it on every aligned column."""
        ...


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _norm(expr: str, kind: str, q: float | None) -> str:
    if kind == "numeric":
        if q is None:
            return f"CAST({expr} AS DOUBLE)"
        return f"round(CAST({expr} AS DOUBLE) / {q!r}) * {q!r}"
    return f"trim(CAST({expr} AS VARCHAR))"


class DuckDBSource:
    """A source dataset as a DuckDB relation (a table or view) on a connection."""

    def __init__(self, conn: Any, relation: str, name: str) -> None:
        self.conn = conn
        self.relation = relation
        self.name = name
        self._kinds: dict[str, str] | None = None

    @classmethod
    def from_arrow(cls, table: pa.Table, name: str) -> DuckDBSource:
        """An in-memory source (tests, or trusted code that already holds the table)."""
        import duckdb

        conn = duckdb.connect()
        conn.register("source_rows", table)
        return cls(conn, "source_rows", name)

    def column_kinds(self) -> Mapping[str, str]:
        if self._kinds is None:
            rel = self.conn.sql(f"SELECT * FROM {self.relation} LIMIT 0")  # noqa: S608
            schema = rel.to_arrow_table().schema
            self._kinds = {f.name: column_kind(f.type) for f in schema}
        return self._kinds

    def _with_output(self, output: pa.Table) -> str:
        view = f"egress_out_{uuid.uuid4().hex[:12]}"
        rid = pa.array(np.arange(output.num_rows, dtype=np.int64))
        self.conn.register(view, output.append_column("__egress_rid", rid))
        return view

    def containment(self, output: pa.Table, out_col: str, src_col: str, q: float | None) -> float:
        kind = self.column_kinds()[src_col]
        view = self._with_output(output.select([out_col]))
        try:
            o = _norm(_quote(out_col), kind, q)
            s = _norm(_quote(src_col), kind, q)
            row = self.conn.execute(
                f"SELECT count(s.v), count(*) FROM "  # noqa: S608
                f"(SELECT DISTINCT {o} AS v FROM {view} WHERE {_quote(out_col)} IS NOT NULL) o "
                f"LEFT JOIN (SELECT DISTINCT {s} AS v FROM {self.relation}) s ON o.v = s.v"
            ).fetchall()
        finally:
            self.conn.unregister(view)
        found, total = (int(row[0][0]), int(row[0][1])) if row else (0, 0)
        return found / total if total else 0.0

    def match_counts(self, output: pa.Table, aligned: Sequence[Alignment]) -> npt.NDArray[np.int64]:
        kinds = self.column_kinds()
        view = self._with_output(output.select([a.output for a in aligned]))
        try:
            o_cols = ", ".join(
                f"{_norm(_quote(a.output), kinds[a.source], a.quantum)} AS k{i}"
                for i, a in enumerate(aligned)
            )
            s_cols = ", ".join(
                f"{_norm(_quote(a.source), kinds[a.source], a.quantum)} AS k{i}"
                for i, a in enumerate(aligned)
            )
            on = " AND ".join(f"o.k{i} = s.k{i}" for i in range(len(aligned)))
            rows = self.conn.execute(
                f"WITH s AS (SELECT {s_cols}, count(*) AS c FROM {self.relation} "  # noqa: S608
                f"GROUP BY ALL), o AS (SELECT __egress_rid AS rid, {o_cols} FROM {view}) "
                f"SELECT o.rid, coalesce(s.c, 0) FROM o LEFT JOIN s ON {on}"
            ).fetchall()
        finally:
            self.conn.unregister(view)
        counts = np.zeros(output.num_rows, dtype=np.int64)
        for rid, c in rows:
            counts[int(rid)] = int(c)
        return counts


def _numeric_values(column: pa.ChunkedArray) -> npt.NDArray[np.float64]:
    arr = pc.cast(column, pa.float64()).combine_chunks()
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def _align(output: OutputSpec, source: SourceRows, min_units: int) -> list[Alignment]:
    table = output.table
    kinds = source.column_kinds()
    by_lower = {c.lower(): c for c in kinds}
    aligned: list[Alignment] = []
    used: set[str] = set()
    records = set(output.record_columns)
    if output.stats is not None and bool((output.stats.n_units >= min_units).all()):
        # a declared sum or mean over at least min_units units is not one record's value;
        # only when some cell rests on fewer is it worth looking for it in the source
        records -= set(output.measures_of("sum", "mean"))
    for col in table.column_names:
        out_kind = column_kind(table.column(col).type)
        q = quantum(_numeric_values(table.column(col))) if out_kind == "numeric" else None
        src = by_lower.get(col.lower())
        if src is not None and src not in used:
            aligned.append(Alignment(col, src, "name", q if kinds[src] == "numeric" else None))
            used.add(src)
            continue
        if (
            col not in records
            or out_kind == "other"
            or table.column(col).null_count == len(table.column(col))
        ):
            continue
        best: tuple[float, str] | None = None
        for src_col, kind in kinds.items():
            if kind != out_kind or src_col in used:
                continue
            share = source.containment(table, col, src_col, q)
            if share >= CONTAINMENT_MIN and (best is None or share > best[0]):
                best = (share, src_col)
        if best is not None:
            aligned.append(Alignment(col, best[1], "values", q))
            used.add(best[1])
    return aligned


def check_row_level(
    output: OutputSpec, sources: Mapping[str, SourceRows], thresholds: Thresholds
) -> list[Finding]:
    """Block an output whose rows single out records of a source; review a few such rows."""
    if output.table.num_rows == 0:
        return []
    findings: list[Finding] = []
    records = set(output.record_columns)
    for name in sorted(sources):
        source = sources[name]
        aligned = _align(output, source, thresholds.min_cell_units)
        if not any(a.output in records for a in aligned):
            continue
        counts = source.match_counts(output.table, aligned)
        revealing = np.flatnonzero((counts >= 1) & (counts < thresholds.min_cell_units))
        if revealing.size == 0:
            continue
        share = revealing.size / output.table.num_rows
        block = share >= thresholds.row_match_fraction
        record_cols = [a.output for a in aligned if a.output in records]
        evidence: dict[str, Any] = {
            "source": name,
            "columns": [
                {"output": a.output, "source": a.source, "matched_by": a.how, "quantum": a.quantum}
                for a in aligned
            ],
            "rows": clip([int(r) for r in revealing]),
            "row_count": int(revealing.size),
            "share_of_rows": round(share, 4),
        }
        findings.append(
            Finding(
                "row_level",
                "block" if block else "review",
                f"{revealing.size} of {output.table.num_rows} output rows each match fewer "
                f"than {thresholds.min_cell_units} rows of {name} on "
                f"{', '.join(a.output for a in aligned)}"
                + (": the output holds source records" if block else ""),
                evidence,
                Fix(
                    "aggregate",
                    "publish aggregates over groups of at least "
                    f"{thresholds.min_cell_units} units instead of rows; drop or aggregate "
                    + ", ".join(f"`{c}`" for c in record_cols),
                    {"columns": record_cols},
                ),
            )
        )
    return findings
