"""``apply_noise``: the gate's half of a DP query. Exact bounded aggregates in (from the
sandbox, never shown to anyone), noisy values with 95% intervals out.

Order of operations, each on the previous step's output only:

1. check the exact table has exactly the columns the compiled query expects;
2. partition selection (when a group key has no public domain): OpenDP's Gaussian threshold
   on each group's count of distinct units; groups below the threshold are dropped before
   any other noise is drawn;
3. noise every part (one OpenDP call per part, over the vector of all kept groups);
4. quantiles: per group, scores from the slot histogram, then OpenDP's noisy max;
5. post-processing of noisy values only: AVG/VARIANCE/STDDEV from their parts, counts
   clipped at 0, intervals, then the operator's HAVING / ORDER BY / LIMIT run by an
   in-process DuckDB over the noisy table.

Nothing in the result depends on an exact value except through OpenDP's noise.
"""

from __future__ import annotations

import io
import json
import math
import threading
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from egress.dp.accountant import Cost
from egress.dp.accuracy import avg_estimate, noise_sd, quantile_rank_error_95, variance_estimate
from egress.dp.compiler import CompiledQuery, NoisyPart, OutputColumn
from egress.dp.mechanisms import (
    noisy_vector,
    select_candidate,
    threshold_noisy_counts,
    vector_cost,
)
from egress.dp.quantiles import scores_from_slots
from egress.errors import EgressError

__all__ = ["CONFIDENCE", "NoisyResult", "apply_noise"]

CONFIDENCE = 0.95
_METADATA_KEY = b"shuyu.dp"

_post_lock = threading.Lock()
_post_con: duckdb.DuckDBPyConnection | None = None


@dataclass(frozen=True)
class NoisyResult:
    """The released table (values and 95% intervals) and what it cost."""

    table: pa.Table
    cost: Cost
    query_key: str

    @property
    def metadata(self) -> dict[str, Any]:
        raw = (self.table.schema.metadata or {}).get(_METADATA_KEY, b"{}")
        return json.loads(raw)  # type: ignore[no-any-return]

    def to_bytes(self) -> bytes:
        """Arrow IPC stream: what the ledger stores and a repeat returns."""
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, self.table.schema) as writer:
            writer.write_table(self.table)
        return sink.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> NoisyResult:
        table = pa.ipc.open_stream(io.BytesIO(blob)).read_all()
        meta = json.loads((table.schema.metadata or {}).get(_METADATA_KEY, b"{}"))
        return cls(table, Cost(**meta["cost"]), str(meta["query_key"]))


def _internal(message: str) -> EgressError:
    return EgressError(
        message,
        code="egress.dp_result",
        hint="the sandbox returned a table that does not match the compiled query; "
        "this is a bug, report the job id",
    )


def _int_list(table: pa.Table, column: str, keep: list[int] | None) -> list[int]:
    values = table.column(column).to_pylist()
    if keep is not None:
        values = [values[i] for i in keep]
    return [0 if v is None else int(v) for v in values]


def _noisy_parts(
    compiled: CompiledQuery, exact: pa.Table, keep: list[int] | None
) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for p in compiled.parts:
        if p.kind == "histogram":
            out[p.column] = _quantiles(p, exact, keep)
            continue
        # re-read the cost from OpenDP: the noise drawn here must be the noise priced
        if vector_cost(p.mode, p.scale, p.d_in) > p.cost * (1 + 1e-9):
            raise _internal(f"part {p.column} costs more than compiled")
        out[p.column] = noisy_vector(p.mode, p.scale, _int_list(exact, p.column, keep))
    return out


def _quantiles(p: NoisyPart, exact: pa.Table, keep: list[int] | None) -> list[Any]:
    assert p.grid is not None and p.alpha is not None
    maps = exact.column(p.column).to_pylist()
    if keep is not None:
        maps = [maps[i] for i in keep]
    num, den = p.alpha
    values: list[float] = []
    for m in maps:
        slots = {int(k): int(v) for k, v in (m or [])}
        scores = scores_from_slots(slots, p.grid.size, num, den)
        values.append(p.grid.candidate(select_candidate(p.mode, p.scale, scores)))
    return values


def _column_values(
    compiled: CompiledQuery, out: OutputColumn, noisy: dict[str, list[Any]], rows: int
) -> tuple[list[Any], list[Any], list[Any]]:
    parts = {role: compiled.part(col) for role, col in out.parts.items()}
    if out.kind in ("count", "count_units", "sum"):
        p = parts["n"] if "n" in parts else parts["s"]
        t = p.half_width_int
        vals, lows, highs = [], [], []
        for v in noisy[p.column]:
            if out.kind == "sum":
                vals.append(v / p.value_scale)
                lows.append((v - t) / p.value_scale)
                highs.append((v + t) / p.value_scale)
            else:
                vals.append(max(v, 0))
                lows.append(max(v - t, 0))
                highs.append(max(v + t, 0))
        return vals, lows, highs
    if out.kind == "quantile":
        return list(noisy[parts["h"].column]), [None] * rows, [None] * rows
    assert out.lo is not None and out.hi is not None
    pn, ps = parts["n"], parts["s"]
    sd_n = noise_sd(pn.mode, pn.scale)
    sd_s = noise_sd(ps.mode, ps.scale) / ps.value_scale
    results: list[tuple[float, float, float]] = []
    if out.kind == "avg":
        for n, s in zip(noisy[pn.column], noisy[ps.column], strict=True):
            results.append(
                avg_estimate(float(n), s / ps.value_scale, sd_n, sd_s, out.centre, out.lo, out.hi)
            )
    else:
        pss = parts["ss"]
        sd_ss = noise_sd(pss.mode, pss.scale) / pss.value_scale
        for n, s1, s2 in zip(noisy[pn.column], noisy[ps.column], noisy[pss.column], strict=True):
            v = variance_estimate(
                float(n),
                s1 / ps.value_scale,
                s2 / pss.value_scale,
                sd_n,
                sd_s,
                sd_ss,
                out.ddof,
                out.lo,
                out.hi,
            )
            if out.kind == "stddev":
                v = (math.sqrt(v[0]), math.sqrt(v[1]), math.sqrt(v[2]))
            results.append(v)
    return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]


def _postprocess(sql: str, table: pa.Table) -> pa.Table:
    global _post_con
    with _post_lock:
        if _post_con is None:
            _post_con = duckdb.connect(":memory:")
        cur = _post_con.cursor()
    try:
        cur.register("__noisy", table)
        return cur.sql(sql).to_arrow_table()
    finally:
        cur.close()


def apply_noise(compiled: CompiledQuery, exact: pa.Table) -> NoisyResult:
    """Noise the exact bounded aggregates of `compiled` and return the release."""
    expected = list(compiled.group_columns) + [p.column for p in compiled.parts]
    if compiled.units_column:
        expected.append(compiled.units_column)
    if sorted(exact.column_names) != sorted(expected):
        raise _internal(f"expected columns {expected}, got {exact.column_names}")
    if not compiled.group_columns and exact.num_rows != 1:
        raise _internal(f"an ungrouped query returned {exact.num_rows} rows")

    keep: list[int] | None = None
    if compiled.selection is not None:
        assert compiled.units_column is not None
        keys = [
            json.dumps([exact.column(c)[i].as_py() for c in compiled.group_columns], default=str)
            for i in range(exact.num_rows)
        ]
        counts = dict(zip(keys, _int_list(exact, compiled.units_column, None), strict=True))
        kept = threshold_noisy_counts(
            compiled.selection.scale, compiled.selection.threshold, counts
        )
        keep = [i for i, k in enumerate(keys) if k in kept]
    rows = exact.num_rows if keep is None else len(keep)

    noisy = _noisy_parts(compiled, exact, keep)
    arrays: dict[str, pa.Array] = {}
    for col, name in zip(compiled.group_columns, compiled.group_names, strict=True):
        arr = exact.column(col)
        arrays[name] = arr.take(pa.array(keep, type=pa.int64())) if keep is not None else arr
    columns_meta: dict[str, Any] = {}
    for out in compiled.outputs:
        vals, lows, highs = _column_values(compiled, out, noisy, rows)
        is_int = out.kind in ("count", "count_units")
        typ = pa.int64() if is_int else pa.float64()
        arrays[out.name] = pa.array(vals, type=typ)
        if out.hidden:
            continue
        arrays[f"{out.name}_ci_low"] = pa.array(lows, type=typ)
        arrays[f"{out.name}_ci_high"] = pa.array(highs, type=typ)
        meta: dict[str, Any] = {"kind": out.kind}
        if out.kind == "quantile":
            p = compiled.part(out.parts["h"])
            assert p.grid is not None and p.alpha is not None
            meta["rank_error_95"] = quantile_rank_error_95(p.scale, p.grid.size, p.alpha[1])
        columns_meta[out.name] = meta
    table = pa.table(arrays)
    if compiled.postprocess_sql is not None:
        table = _postprocess(compiled.postprocess_sql, table)
    else:
        table = table.select([c for c in table.column_names if not c.startswith("__h")])
    metadata = {
        "query_key": compiled.query_key,
        "cost": compiled.cost.to_dict(),
        "confidence": CONFIDENCE,
        "mode": compiled.mode,
        "columns": columns_meta,
        "groups_selected": compiled.selection is not None,
    }
    table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(metadata).encode()})
    return NoisyResult(table, compiled.cost, compiled.query_key)
