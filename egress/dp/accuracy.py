"""Accuracy: the 95% intervals that come with every released value, and the expected error
a dry run reports before anything runs.

* Counts and sums: the interval is exact for the discrete noise
  (:func:`~egress.dp.mechanisms.half_width_95`): ``[v − t, v + t]`` holds the bounded truth
  with probability ≥ 95%.
* AVG, VARIANCE, STDDEV are post-processing of noisy parts (a count and centred sums);
  their interval is the delta-method normal interval from the parts' known noise variances,
  evaluated at the noisy values, then intersected with what the bounds allow. It is
  approximate (good once a group has more than a few dozen rows); a dry run cannot know a
  group's size, so it reports the half-width at assumed sizes.
* Quantiles: the selection's error is in *rank*: with probability ≥ 95% the released
  candidate's score is within ``s·ln(K/0.05)`` of the best, i.e. its rank is within
  ``s·ln(K/0.05)/den`` rows of the target rank. Its value interval depends on the data,
  so none is released (``ci`` columns are null) and the report gives the rank error.

"The truth" everywhere is the *bounded* aggregate: values clamped to the catalog bounds,
each person's rows limited to the contribution bound — what the rewritten SQL computes.
"""

from __future__ import annotations

import math

from egress.dp.mechanisms import Z95, Mode, half_width_95

__all__ = [
    "avg_estimate",
    "noise_sd",
    "quantile_rank_error_95",
    "variance_estimate",
]


def noise_sd(mode: Mode, scale: float) -> float:
    """Standard deviation of the discrete noise of `scale` (in integer units)."""
    if scale <= 0:
        return 0.0
    if mode == "zcdp":
        return scale  # the discrete Gaussian's variance is at most σ² (CKS20)
    p = math.exp(-1.0 / scale)
    return math.sqrt(2.0 * p) / (1.0 - p)  # discrete Laplace


def count_interval(mode: Mode, scale: float, value: float, unit: float = 1.0) -> float:
    return half_width_95(mode, scale) / unit


def avg_estimate(
    n: float, s: float, sd_n: float, sd_s: float, centre: float, lo: float, hi: float
) -> tuple[float, float, float]:
    """Mean from a noisy count `n` and noisy centred sum `s` (real units): value and 95% CI."""
    if n < 1:
        return (centre, lo, hi)
    mean_c = s / n
    value = min(max(centre + mean_c, lo), hi)
    hw = Z95 * math.sqrt(sd_s**2 + mean_c**2 * sd_n**2) / n
    return (value, max(lo, value - hw), min(hi, value + hw))


def variance_estimate(
    n: float,
    s1: float,
    s2: float,
    sd_n: float,
    sd_s1: float,
    sd_s2: float,
    ddof: int,
    lo: float,
    hi: float,
) -> tuple[float, float, float]:
    """Variance from a noisy count and noisy centred sums of values and squares (real units).

    v = (S2/N − (S1/N)²) · N/(N − ddof), with the delta method for its standard error.
    """
    top = (hi - lo) ** 2 / 4.0 if math.isfinite(hi - lo) else math.inf
    if n < 1 + ddof:
        return (top / 2.0, 0.0, top * 2.0)
    corr = n / (n - ddof)
    top *= corr
    v = (s2 / n - (s1 / n) ** 2) * corr
    d_s2 = 1.0 / n
    d_s1 = -2.0 * s1 / n**2
    d_n = -s2 / n**2 + 2.0 * s1**2 / n**3
    sd = corr * math.sqrt((d_s2 * sd_s2) ** 2 + (d_s1 * sd_s1) ** 2 + (d_n * sd_n) ** 2)
    value = min(max(v, 0.0), top)
    return (value, max(0.0, value - Z95 * sd), min(top, value + Z95 * sd))


def quantile_rank_error_95(scale: float, candidates: int, den: int) -> float:
    """Rows between the released quantile's rank and the target rank, at 95%."""
    return scale * math.log(max(candidates, 1) / 0.05) / den
