"""Dominance: a sum or mean one or two units make up is as good as their own value.

* (n, k) rule: a cell is sensitive when its ``n`` largest contributors hold more than
  ``k`` % of its total (default n=2, k=90 — or the grade's stricter values);
* p% rule: a cell is sensitive when the total minus the two largest contributions is less
  than ``p`` % of the largest, so the second-largest contributor could estimate the
  largest to within p % (default p=10).

Contributions are absolute values per unit, from the trusted query (``Contributions``).
Both rules give ``review``: a reviewer decides whether to suppress, merge or release. DP
outputs are exempt (contributions are bounded and noise added).
"""

from __future__ import annotations

import numpy as np

from egress.checks.findings import Finding, Fix, clip
from egress.checks.inputs import OutputSpec, Thresholds

__all__ = ["check_dominance"]


def check_dominance(output: OutputSpec, thresholds: Thresholds) -> list[Finding]:
    if output.is_dp:
        return []
    findings: list[Finding] = []
    for measure in output.measures_of("sum", "mean"):
        stats = output.stats.contributions.get(measure) if output.stats else None
        if stats is None:
            findings.append(
                Finding(
                    "dominance",
                    "review",
                    f"no contribution statistics for `{measure}`: dominance not checked",
                    {"column": measure},
                )
            )
            continue
        total = stats.total
        positive = total > 0
        top_n = stats.top_sum(thresholds.dominance_n)
        nk = positive & (top_n > thresholds.dominance_k_percent / 100.0 * total)
        top1 = stats.top[:, 0]
        top2 = stats.top[:, 1] if stats.top.shape[1] > 1 else np.zeros_like(top1)
        # the 1e-9 slack keeps float rounding from flagging a cell of many equal units
        pp = positive & (total - top1 - top2 < thresholds.p_percent / 100.0 * top1 - 1e-9 * total)
        for rule, mask, label in (
            (
                f"({thresholds.dominance_n}, {thresholds.dominance_k_percent:g}%)",
                nk,
                f"the {thresholds.dominance_n} largest contributors hold more than "
                f"{thresholds.dominance_k_percent:g}% of the total",
            ),
            (
                f"p%={thresholds.p_percent:g}",
                pp,
                "the largest contribution can be estimated to within "
                f"{thresholds.p_percent:g}% by the second largest contributor",
            ),
        ):
            rows = [int(r) for r in np.flatnonzero(mask)]
            if not rows:
                continue
            findings.append(
                Finding(
                    "dominance",
                    "review",
                    f"`{measure}`: {len(rows)} cell(s) where {label}",
                    {"column": measure, "rule": rule, "rows": clip(rows), "row_count": len(rows)},
                    Fix(
                        "suppress",
                        f"suppress or merge these cells of `{measure}`, or publish it with DP",
                        {"rows": rows, "measures": [measure]},
                    ),
                )
            )
    return findings
