"""The noise: OpenDP measurements, their privacy maps, and their 95% error bounds.

All noise is sampled by OpenDP (its CSPRNG, exact discrete samplers), never by numpy:

==================  ========================================  ==============================
part                zCDP mode (δ > 0)                         pure mode (δ = 0)
==================  ========================================  ==============================
counts, sums        discrete Gaussian on the integer vector   discrete Laplace on the
                    of all groups (``make_gaussian``, L2)     integer vector (``make_laplace``,
                                                              L1)
quantile            report-noisy-max (``make_noisy_max``) on  same, under ``max_divergence``
                    the quantile scores of each group
partition selection ``make_gaussian_threshold`` on the count  refused: it needs δ > 0
                    of distinct units per group
==================  ========================================  ==============================

Sums are integers too: the rewrite quantizes each clamped value to a fixed-point integer
before summing, so no floating-point summation can change a sum by more than the declared
sensitivity (Casacuberta et al. 2022 show float sums can). The cost of each part is read
from the measurement's own privacy map (``measurement.map(d_in)``), so the ledger charges
what OpenDP proves, not a formula of ours.

The noise is never seeded. A seed would let anyone who learns it subtract the noise.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import opendp.prelude as dp

__all__ = [
    "Mode",
    "gaussian_sigma_for_rho",
    "half_width_95",
    "laplace_scale_for_epsilon",
    "noisy_vector",
    "partition_threshold",
    "quantile_cost",
    "quantile_scale",
    "select_candidate",
    "threshold_noisy_counts",
    "vector_cost",
]

dp.enable_features("contrib")

Mode = Literal["zcdp", "pure"]
Z95 = NormalDist().inv_cdf(0.975)


# --------------------------------------------------------------------------------------
# counts and sums: one integer vector (a value per group) per part


@lru_cache(maxsize=512)
def _vector_measurement(mode: Mode, scale: float) -> Any:
    dp.enable_features("contrib")  # again: another module may have switched it off
    domain = dp.vector_domain(dp.atom_domain(T="i64"))
    if mode == "zcdp":
        return dp.m.make_gaussian(domain, dp.l2_distance(T="f64"), scale=scale)
    return dp.m.make_laplace(domain, dp.l1_distance(T="i64"), scale=scale)


def gaussian_sigma_for_rho(l2: float, rho: float) -> float:
    """Discrete Gaussian σ with ρ = Δ₂² / (2σ²)."""
    return l2 / math.sqrt(2.0 * rho)


def laplace_scale_for_epsilon(l1: float, epsilon: float) -> float:
    """Discrete Laplace scale b with ε = Δ₁ / b."""
    return l1 / epsilon


def vector_cost(mode: Mode, scale: float, d_in: float) -> float:
    """ρ (zCDP) or ε (pure) of noising a vector with sensitivity `d_in`, by OpenDP's map."""
    meas = _vector_measurement(mode, scale)
    if mode == "zcdp":
        return float(meas.map(float(d_in)))
    return float(meas.map(math.ceil(d_in)))


def noisy_vector(mode: Mode, scale: float, values: list[int]) -> list[int]:
    """Add OpenDP noise to every element (an empty vector stays empty)."""
    if not values:
        return []
    return [int(v) for v in _vector_measurement(mode, scale)(values)]


@lru_cache(maxsize=4096)
def half_width_95(mode: Mode, scale: float) -> int:
    """Smallest integer t with P(|noise| <= t) >= 95% for the discrete noise of `scale`."""
    if scale <= 0:
        return 0
    if mode == "pure":
        # discrete Laplace, P(k) ∝ exp(-|k|/b): P(|X| > t) = 2 e^{-(t+1)/b} / (1 + e^{-1/b})
        b = scale
        t = -b * math.log(0.05 * (1.0 + math.exp(-1.0 / b)) / 2.0) - 1.0
        return max(0, math.ceil(t - 1e-9))
    sigma = scale
    if sigma > 200:
        return math.ceil(Z95 * sigma)
    k = np.arange(0, math.ceil(14 * sigma) + 2, dtype=float)
    w = np.exp(-(k**2) / (2 * sigma * sigma))
    total = w[0] + 2 * w[1:].sum()
    cdf = (w[0] + 2 * np.cumsum(w[1:])) / total  # P(|X| <= t) for t = 1, 2, ...
    cdf = np.concatenate([[w[0] / total], cdf])
    return int(np.searchsorted(cdf, 0.95))


# --------------------------------------------------------------------------------------
# partition selection


@lru_cache(maxsize=512)
def _threshold_measurement(scale: float, threshold: int) -> Any:
    dp.enable_features("contrib")
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    metric = dp.l02inf_distance(dp.absolute_distance(T="i64"))
    return dp.m.make_gaussian_threshold(domain, metric, scale=scale, threshold=threshold)


def _threshold_d_in(rows_per_unit: int) -> tuple[int, int, int]:
    # A unit is in at most `rows_per_unit` groups and adds 1 to each group's unit count:
    # l0 = m, l2 = sqrt(m) (rounded up: OpenDP takes integer distances here), l∞ = 1.
    return (rows_per_unit, math.ceil(math.sqrt(rows_per_unit)), 1)


@lru_cache(maxsize=512)
def partition_threshold(scale: float, rows_per_unit: int, delta: float) -> tuple[int, float, float]:
    """The smallest threshold whose δ (by OpenDP's map) is at most `delta`.

    Returns (threshold, rho, delta_used). Starts from the Gaussian tail bound
    δ ≈ l0 · P(N(0, σ²) > t − l∞) and walks up until OpenDP agrees.
    """
    d_in = _threshold_d_in(rows_per_unit)
    l0 = d_in[0]
    z = NormalDist().inv_cdf(1.0 - min(0.5, delta / l0))
    t = max(2, math.ceil(1 + z * scale))
    for _ in range(64):
        rho, d = _threshold_measurement(scale, t).map(d_in)
        if d <= delta:
            # step down while still fine (the tail bound may overshoot by a little)
            while t > 2:
                rho2, d2 = _threshold_measurement(scale, t - 1).map(d_in)
                if d2 > delta:
                    break
                t, rho, d = t - 1, rho2, d2
            return t, float(rho), float(d)
        t = math.ceil(t * 1.05) + 1
    raise ValueError(f"no threshold reaches delta={delta} at scale={scale}")


def threshold_noisy_counts(scale: float, threshold: int, counts: dict[str, int]) -> dict[str, int]:
    """OpenDP's Gaussian threshold mechanism: keys whose noisy count passes the threshold."""
    if not counts:
        return {}
    out = _threshold_measurement(scale, threshold)(counts)
    return {str(k): int(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------
# quantiles


@lru_cache(maxsize=512)
def _noisy_max(mode: Mode, scale: float) -> Any:
    dp.enable_features("contrib")
    measure = dp.zero_concentrated_divergence() if mode == "zcdp" else dp.max_divergence()
    domain = dp.vector_domain(dp.atom_domain(T="u64"))
    return dp.m.make_noisy_max(domain, dp.linf_distance(T="u64"), measure, scale=scale, negate=True)


def quantile_scale(mode: Mode, d_score: int, budget: float) -> float:
    """Noisy-max scale for score sensitivity `d_score`: ρ = (Δ/s)²/2, or ε = 2Δ/s."""
    if mode == "zcdp":
        return d_score / math.sqrt(2.0 * budget)
    return 2.0 * d_score / budget


def quantile_cost(mode: Mode, scale: float, d_score: int) -> float:
    return float(_noisy_max(mode, scale).map(int(d_score)))


def select_candidate(mode: Mode, scale: float, scores: list[int]) -> int:
    """Index of the candidate with the (noisily) lowest score."""
    return int(_noisy_max(mode, scale)(scores))
