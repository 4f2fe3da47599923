"""The threshold rule: no released cell may rest on fewer than ``min_cell_units`` units.

A cell's units are ``OutputStats.n_units`` (from the trusted query) or, when an output has
no statistics, its smallest count column. A cell with 0 < units < minimum is a *primary*
suppression. Suppressing it alone is not enough when totals are known: a row total minus
the other cells of the row gives it back. So for each line of the table (the cells that
vary along one grouping key while the others stay fixed) that holds exactly one
suppressed cell, the smallest non-zero unsuppressed cell of the line is suppressed too
(*secondary* suppression), or, when there is none, the line's margin; this repeats until
no line has a lone suppressed cell. Margin rows are recognised by a null key (what
``GROUP BY ROLLUP/CUBE`` produces); totals are assumed known even when the output does not
hold them, because they usually are (another table, a public statistic).

This is the classic simple heuristic for 1-D and 2-D tables (and works line by line in
more dimensions); it is safe against one-step differencing from margins, not optimal in
how much it hides. DP outputs are exempt: there a small noisy count is not a disclosure.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from egress.checks.findings import Finding, Fix, clip
from egress.checks.inputs import OutputSpec, Thresholds

__all__ = ["cell_units", "check_small_cells", "secondary_suppression"]

Key = tuple[Hashable, ...]


def cell_units(output: OutputSpec) -> tuple[npt.NDArray[np.int64] | None, str]:
    """Units behind each row, and where the number came from."""
    if output.stats is not None:
        return output.stats.n_units, "n_units"
    counts = output.measures_of("count")
    if not counts:
        return None, ""
    cols = [
        np.asarray(
            output.table.column(c).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64
        )
        for c in counts
    ]
    # the smallest count is the most conservative stand-in for the number of units
    return np.asarray(np.floor(np.min(np.vstack(cols), axis=0)), dtype=np.int64), counts[0]


def _keys(table: pa.Table, key_cols: Sequence[str]) -> list[Key]:
    columns = [table.column(c).to_pylist() for c in key_cols]
    return [tuple(col[r] for col in columns) for r in range(table.num_rows)]


def secondary_suppression(
    keys: Sequence[Key], units: npt.NDArray[np.int64], primary: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Cells to suppress besides ``primary`` so no line total gives a suppressed cell back.

    ``keys[r]`` is row r's key tuple (None = a margin along that key); the result is the
    mask of *secondary* cells only.
    """
    suppressed = primary.copy()
    dims = len(keys[0]) if keys else 0
    lines: list[dict[Key, list[int]]] = [{} for _ in range(dims)]
    margins: list[dict[Key, int]] = [{} for _ in range(dims)]
    for r, k in enumerate(keys):
        for d in range(dims):
            rest = k[:d] + k[d + 1 :]
            if k[d] is None:
                margins[d][rest] = r
            else:
                lines[d].setdefault(rest, []).append(r)
    changed = True
    while changed:
        changed = False
        for d in range(dims):
            for rest, members in lines[d].items():
                if sum(1 for r in members if suppressed[r]) != 1:
                    continue
                candidates = [r for r in members if not suppressed[r] and units[r] > 0]
                if candidates:
                    pick = min(candidates, key=lambda r: (int(units[r]), r))
                    suppressed[pick] = True
                    changed = True
                else:
                    m = margins[d].get(rest)
                    if m is not None and not suppressed[m]:
                        suppressed[m] = True
                        changed = True
    return np.asarray(suppressed & ~primary, dtype=np.bool_)


def check_small_cells(output: OutputSpec, thresholds: Thresholds) -> list[Finding]:
    """Block cells below the threshold, with the secondary suppression they need."""
    if output.is_dp:
        return []  # a small noisy count is not a disclosure; the DP guarantee covers it
    units, source = cell_units(output)
    if units is None:
        if output.measures_of("sum", "mean"):
            return [
                Finding(
                    "small_cells",
                    "review",
                    "no unit counts for this output: the threshold rule could not be applied",
                    {"columns": output.measures_of("sum", "mean")},
                    Fix(
                        "add_statistics",
                        "run the job through the trusted aggregate path so each cell's "
                        "unit count is known",
                    ),
                )
            ]
        return []
    m = thresholds.min_cell_units
    primary = (units > 0) & (units < m)
    if not primary.any():
        return []
    key_cols = output.key_columns
    secondary = secondary_suppression(_keys(output.table, key_cols), units, primary)
    p_rows = [int(r) for r in np.flatnonzero(primary)]
    s_rows = [int(r) for r in np.flatnonzero(secondary)]
    merge = ""
    if key_cols:
        merge = f"; or merge the sparsest categories of `{key_cols[-1]}` into wider bands"
    return [
        Finding(
            "small_cells",
            "block",
            f"{len(p_rows)} cell(s) rest on fewer than {m} units"
            + (
                f"; {len(s_rows)} more must be hidden so margins do not give them back"
                if s_rows
                else ""
            ),
            {
                "primary_rows": clip(p_rows),
                "primary_count": len(p_rows),
                "secondary_rows": clip(s_rows),
                "secondary_count": len(s_rows),
                "min_cell_units": m,
                "units_from": source,
                "key_columns": list(key_cols),
            },
            Fix(
                "suppress",
                f"suppress {len(p_rows) + len(s_rows)} cell(s) (primary and secondary){merge}",
                {"rows": p_rows + s_rows, "measures": list(output.measures)},
                automatic=True,
            ),
        )
    ]
