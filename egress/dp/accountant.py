"""Privacy accounting: zero-concentrated DP (ρ) inside, (ε, δ) for people.

Every DP query is accounted as *approximate zCDP* ``(ρ, δ_a)``: ``ρ`` from the noise
(discrete Gaussian parts, the Gumbel selection of quantiles) and ``δ_a`` from DP partition
selection (the chance that a group only one person is in passes the threshold). Queries
compose by adding both. A ledger with ``(Σρ, Σδ_a)`` spent and a scenario budget
``(ε_total, δ_total)`` has spent

    ε_spent = ε(Σρ, δ_total − Σδ_a)

where ``ε(ρ, δ)`` is the optimal zCDP→(ε, δ) conversion of Canonne, Kamath and Steinke
(2020, Cor. 13), the same one OpenDP's ``make_zCDP_to_approxDP`` uses. Pure ε-DP queries
(discrete Laplace, chosen when δ = 0) enter as ρ = ε²/2. The ledger also keeps the basic
composition ``(Σε_i, Σδ_i)``, which is valid at the same time; the smaller of the two is the
spent budget (it helps ledgers that hold a few pure-DP queries).

Functions here are pure and fast (no OpenDP call): they run for every dry run and charge.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "Cost",
    "SpentBudget",
    "epsilon_from_rho",
    "rho_from_epsilon",
]


@lru_cache(maxsize=4096)
def epsilon_from_rho(rho: float, delta: float) -> float:
    """Smallest ε such that ρ-zCDP implies (ε, δ)-DP (CKS20 Corollary 13).

    ε = inf_{α>1}  αρ + (ln(1/δ) + α ln(1 − 1/α) − ln(α − 1)) / (α − 1)
    """
    if rho < 0 or not math.isfinite(rho):
        raise ValueError(f"rho must be finite and >= 0, got {rho}")
    if rho == 0:
        return 0.0
    if delta <= 0:
        return math.inf
    if delta >= 1:
        return 0.0
    log_inv_delta = math.log(1.0 / delta)

    def f(alpha: float) -> float:
        return alpha * rho + (
            log_inv_delta + alpha * math.log1p(-1.0 / alpha) - math.log(alpha - 1.0)
        ) / (alpha - 1.0)

    # f is convex in α on (1, ∞); the minimiser lies near 1 + sqrt(ln(1/δ)/ρ).
    lo, hi = 1.0 + 1e-9, max(2.0, 4.0 * (1.0 + math.sqrt(log_inv_delta / rho)))
    while f(hi * 2) < f(hi):  # widen until the right end is past the minimum
        hi *= 2
    # golden-section search on a log scale of (α − 1)
    a, b = math.log(lo - 1.0), math.log(hi - 1.0)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(1 + math.exp(c)), f(1 + math.exp(d))
    for _ in range(120):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(1 + math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(1 + math.exp(d))
        # any α gives a valid bound; this close to the best one, ε is within ~1e-12
        if b - a < 1e-6:
            break
    eps = min(fc, fd)
    # Never report more than the classic bound ρ + 2√(ρ ln 1/δ), which is also valid.
    return max(0.0, min(eps, rho + 2.0 * math.sqrt(rho * log_inv_delta)))


@lru_cache(maxsize=4096)
def rho_from_epsilon(epsilon: float, delta: float) -> float:
    """Largest ρ whose conversion at δ is at most ε (ε(ρ) is increasing: solve for ρ)."""
    if epsilon <= 0:
        return 0.0
    if delta <= 0:
        raise ValueError("zCDP needs delta > 0 to convert to (epsilon, delta)")
    # The classic bound ε ≤ ρ + 2√(ρ ln 1/δ) is looser, so solving it gives a ρ that
    # certainly fits: start the bracket there.
    log_inv_delta = math.log(1.0 / delta)
    lo = (math.sqrt(log_inv_delta + epsilon) - math.sqrt(log_inv_delta)) ** 2
    hi = lo * 2.0
    while epsilon_from_rho(hi, delta) <= epsilon:
        lo, hi = hi, hi * 2.0
    # Illinois regula falsi: ε(ρ) is smooth and increasing, so this takes a handful of
    # conversions where bisection takes thirty. `lo` always satisfies ε(lo) ≤ ε.
    f_lo = epsilon_from_rho(lo, delta) - epsilon
    f_hi = epsilon_from_rho(hi, delta) - epsilon
    side = 0
    for _ in range(60):
        if -f_lo <= 1e-10 * epsilon or hi - lo <= 1e-12 * hi:
            break
        mid = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        if not lo < mid < hi:
            mid = (lo + hi) / 2
        f_mid = epsilon_from_rho(mid, delta) - epsilon
        if f_mid <= 0:
            lo, f_lo = mid, f_mid
            if side == -1:
                f_hi /= 2
            side = -1
        else:
            hi, f_hi = mid, f_mid
            if side == 1:
                f_lo /= 2
            side = 1
    return lo


@dataclass(frozen=True)
class Cost:
    """What one query costs.

    ``epsilon``/``delta``: the query's own (ε, δ)-DP guarantee, for people and for basic
    composition. ``rho``/``delta_approx``: its approximate-zCDP cost, for the zCDP ledger.
    ``pure``: True when the query is pure ε-DP (all noise discrete Laplace).
    """

    epsilon: float
    delta: float
    rho: float
    delta_approx: float = 0.0
    pure: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def zero(cls) -> Cost:
        return cls(0.0, 0.0, 0.0, 0.0, True)


@dataclass(frozen=True)
class SpentBudget:
    """The running totals of one scenario's ledger, and what they mean against its budget."""

    rho: float = 0.0
    delta_approx: float = 0.0
    epsilon_basic: float = 0.0
    delta_basic: float = 0.0
    charges: int = 0

    def plus(self, cost: Cost) -> SpentBudget:
        return SpentBudget(
            rho=self.rho + cost.rho,
            delta_approx=self.delta_approx + cost.delta_approx,
            epsilon_basic=self.epsilon_basic + cost.epsilon,
            delta_basic=self.delta_basic + cost.delta,
            charges=self.charges + 1,
        )

    def epsilon_spent(self, delta_total: float) -> float:
        """ε spent at the scenario's δ: the better of zCDP and basic composition."""
        eps_zcdp = math.inf
        if self.delta_approx < delta_total:
            eps_zcdp = epsilon_from_rho(self.rho, delta_total - self.delta_approx)
        if self.rho == 0:
            eps_zcdp = 0.0 if self.delta_approx <= delta_total else math.inf
        eps_basic = self.epsilon_basic if self.delta_basic <= delta_total else math.inf
        return min(eps_zcdp, eps_basic)

    def fits(self, epsilon_total: float, delta_total: float) -> bool:
        return self.epsilon_spent(delta_total) <= epsilon_total * (1 + 1e-12)
