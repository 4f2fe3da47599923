"""A DP model's ledger charge: pure ε-DP (ρ = ε²/2), once per job, refused when it cannot pay,
and inside the caller's transaction so it commits with the held model or not at all."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from egress.dp_tables import dp_charges
from egress.errors import BudgetExhausted
from egress.ledger import Budget, Ledger, charge_model
from shuyu.context import Domain

BUDGET = Budget(epsilon=1.0, delta=1e-6, per_job_epsilon=0.8)
SHA = "ab" * 32


def _charge(domain: Domain, job_id: str, epsilon: float) -> float:
    ledger = Ledger(domain.audit, domain.keys)
    with domain.engine.begin() as conn:
        status = charge_model(
            ledger,
            conn,
            scenario_id="S-M",
            job_id=job_id,
            model_sha256=SHA,
            epsilon=epsilon,
            budget=BUDGET,
            actor="op",
        )
    return status.epsilon_spent


def test_a_model_is_charged_as_pure_epsilon_dp_once_per_job(domain: Domain) -> None:
    assert _charge(domain, "J-1", 0.5) == pytest.approx(0.5)
    assert _charge(domain, "J-1", 0.5) == pytest.approx(0.5)  # a retried gate pays once
    ledger = Ledger(domain.audit, domain.keys)
    (charge,) = ledger.charges(domain.engine, "S-M")
    assert (charge.job_id, charge.query_key) == ("J-1", SHA)
    assert (charge.epsilon, charge.delta, charge.pure) == (0.5, 0.0, True)
    assert charge.rho == pytest.approx(0.125)
    assert ledger.verify(domain.engine, "S-M")


def test_over_the_per_job_cap_or_the_budget_left_nothing_is_charged(domain: Domain) -> None:
    with pytest.raises(BudgetExhausted, match=r"at most epsilon 0\.8"):
        _charge(domain, "J-1", 0.9)
    _charge(domain, "J-2", 0.7)
    with pytest.raises(BudgetExhausted, match="not enough budget left") as exc:
        _charge(domain, "J-3", 0.5)
    assert exc.value.details["epsilon_left"] == pytest.approx(0.3)
    ledger = Ledger(domain.audit, domain.keys)
    assert [c.job_id for c in ledger.charges(domain.engine, "S-M")] == ["J-2"]


def test_the_charge_rolls_back_with_the_callers_transaction(domain: Domain) -> None:
    ledger = Ledger(domain.audit, domain.keys)
    with pytest.raises(RuntimeError), domain.engine.begin() as conn:
        charge_model(
            ledger,
            conn,
            scenario_id="S-M",
            job_id="J-1",
            model_sha256=SHA,
            epsilon=0.5,
            budget=BUDGET,
        )
        raise RuntimeError("the held model could not be stored")
    with domain.engine.connect() as conn:
        assert conn.execute(sa.select(dp_charges)).all() == []
    assert ledger.status(domain.engine, "S-M", BUDGET).epsilon_spent == 0.0
