"""Rounding: when the scenario asks for it, every released count is a multiple of a base.

A count that is not is a policy breach, but one the gate can mend itself without changing
what the output means, so the finding blocks and offers an automatic fix
(:func:`round_counts`). Rounding applies to DP counts too (it is free post-processing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from egress.checks.findings import Finding, Fix, clip
from egress.checks.inputs import OutputSpec, Thresholds

__all__ = ["check_rounding", "round_counts"]


def check_rounding(output: OutputSpec, thresholds: Thresholds) -> list[Finding]:
    base = thresholds.rounding_base
    if base is None or base <= 1:
        return []
    findings: list[Finding] = []
    for col in output.measures_of("count"):
        values = np.asarray(
            output.table.column(col).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64
        )
        off = np.flatnonzero(np.abs(np.remainder(values, base)) > 1e-9)
        if off.size == 0:
            continue
        rows = [int(r) for r in off]
        findings.append(
            Finding(
                "rounding",
                "block",
                f"`{col}`: {len(rows)} count(s) are not multiples of {base}",
                {"column": col, "base": base, "rows": clip(rows), "row_count": len(rows)},
                Fix(
                    "round",
                    f"round counts to base {base}",
                    {"columns": [col], "base": base},
                    automatic=True,
                ),
            )
        )
    return findings


def round_counts(table: pa.Table, columns: Sequence[str], base: int) -> pa.Table:
    """``table`` with each listed column rounded to the nearest multiple of ``base``."""
    for col in columns:
        i = table.column_names.index(col)
        values = pc.cast(table.column(col), pa.float64())
        rounded = pc.multiply(pc.round(pc.divide(values, float(base))), float(base))
        table = table.set_column(i, col, pc.cast(rounded, table.column(col).type))
    return table
