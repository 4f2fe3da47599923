"""Quantiles from a histogram: how the gate runs OpenDP's score-based quantile selection
without ever holding the values.

OpenDP's quantile mechanism scores each candidate ``c`` of a public grid by

    score(c) = | den · #(x < c)  −  num · (n − #(x = c)) |        (α = num/den)

and picks a candidate with report-noisy-max (lowest score). The score reads only, per
candidate, how many values lie below it and how many equal it. So the rewritten query
returns, per group, a histogram over *slots* of the public grid ``c_0 < … < c_{K-1}``:
slot ``2i`` holds values equal to ``c_i``, slot ``2i+1`` values strictly between ``c_i`` and
``c_{i+1}`` (values are clamped to ``[c_0, c_{K-1}]`` first). From the slot counts the gate
computes exactly the scores OpenDP's ``make_quantile_score_candidates`` would compute on the
values themselves (a test checks this against OpenDP), then calls OpenDP's
``make_noisy_max`` on them. Each row is in one slot, so one person with ``m`` rows changes
each score by at most ``m · max(num, den − num)``: the sensitivity the gate declares.

The grid comes from the catalog bounds only: every integer when the argument is integral
and its range has at most 1001 values, otherwise 1001 evenly spaced points.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["GRID_POINTS", "QuantileGrid", "alpha_fraction", "scores_from_slots"]

GRID_POINTS = 1001


@dataclass(frozen=True)
class QuantileGrid:
    lo: float
    step: float  # 0 when lo == hi
    size: int  # K candidates

    @classmethod
    def for_bounds(cls, lo: float, hi: float, integer: bool) -> QuantileGrid:
        if hi <= lo:
            return cls(lo, 0.0, 1)
        if integer and hi - lo <= GRID_POINTS - 1:
            return cls(float(lo), 1.0, int(hi - lo) + 1)
        return cls(float(lo), (hi - lo) / (GRID_POINTS - 1), GRID_POINTS)

    @property
    def hi(self) -> float:
        return self.lo + self.step * (self.size - 1)

    def candidate(self, i: int) -> float:
        return self.hi if i == self.size - 1 else self.lo + self.step * i

    def slot_sql(self, value_sql: str) -> str:
        """SQL for the slot of a non-NULL value (callers FILTER out NULLs: LEAST/GREATEST
        skip them). NaN orders above every number in DuckDB and lands in the top slot."""
        if self.size == 1:
            return "0"
        clamped = f"LEAST(GREATEST({value_sql}, {self.lo!r}), {self.hi!r})"
        t = f"(({clamped} - {self.lo!r}) / {self.step!r})"
        slot = f"CASE WHEN {t} = floor({t}) THEN 2 * {t} ELSE 2 * floor({t}) + 1 END"
        return f"CAST(LEAST(GREATEST({slot}, 0), {2 * (self.size - 1)}) AS BIGINT)"


def alpha_fraction(q: float) -> tuple[int, int]:
    f = Fraction(q).limit_denominator(10_000)
    return f.numerator, f.denominator


def scores_from_slots(slots: dict[int, int], size: int, num: int, den: int) -> list[int]:
    """OpenDP's quantile scores of the K candidates, from the slot histogram of one group."""
    counts = np.zeros(2 * size - 1, dtype=np.int64)
    for slot, c in slots.items():
        if 0 <= slot < counts.size:
            counts[slot] += int(c)
    n = int(counts.sum())
    below = np.concatenate([[0], np.cumsum(counts)[:-1]])  # rows in slots before each slot
    lt = below[0::2]  # #(x < c_i): everything in slots < 2i
    eq = counts[0::2]
    scores = np.abs(den * lt - num * (n - eq))
    return [int(s) for s in scores]
