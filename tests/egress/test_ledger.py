"""The privacy ledger: charges, refusals that show what is left, repeats, sealing, and the
race for the last of a budget on SQLite and PostgreSQL with real concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest
import sqlalchemy as sa

from egress.dp import CompiledQuery, NoisyResult, SpentBudget, apply_noise, compile_query
from egress.dp_tables import dp_charges, dp_releases
from egress.errors import BudgetExhausted, EgressError
from egress.ledger import Budget, Ledger
from enclave.audit import AuditLog
from enclave.tables import audit_log
from shuyu.context import Domain
from tests.egress.dp_support import catalogs, duck, make_residents, run_exact

DATA = make_residents(500, seed=3)


@pytest.fixture(scope="module")
def con() -> Iterator[object]:
    c = duck({"residents": DATA})
    yield c
    c.close()


def released(
    con: object, sql: str, *, epsilon: float = 0.6, delta: float = 0.0
) -> tuple[CompiledQuery, NoisyResult]:
    compiled = compile_query(sql, catalogs(), epsilon=epsilon, delta=delta)
    return compiled, apply_noise(compiled, run_exact(compiled, con))  # type: ignore[arg-type]


def audit_actions(domain: Domain) -> list[tuple[str, str]]:
    with domain.engine.connect() as c:
        return [(r.action, r.result) for r in c.execute(sa.select(audit_log))]


def test_a_charge_is_recorded_with_its_audit_entry(domain: Domain, con: object) -> None:
    ledger = Ledger(domain.audit)
    compiled, result = released(con, "SELECT COUNT(*) FROM residents")
    budget = Budget(epsilon=2.0, delta=1e-6)
    rel = ledger.charge_and_record(
        domain.engine,
        scenario_id="S1",
        job_id="J-1",
        compiled=compiled,
        result=result,
        budget=budget,
        actor="u1",
    )
    assert rel.charged and rel.paid_by == "J-1"
    assert rel.status.epsilon_spent == pytest.approx(0.6)
    assert rel.status.epsilon_left == pytest.approx(1.4)
    charges = ledger.charges(domain.engine, "S1")
    assert [(c.job_id, c.epsilon, c.pure) for c in charges] == [("J-1", pytest.approx(0.6), True)]
    assert ledger.verify(domain.engine, "S1")
    assert ("dp.charge", "ok") in audit_actions(domain)
    assert ledger.status(domain.engine, "S1", budget).charges == 1


def test_an_exhausted_budget_refuses_and_shows_what_is_left(domain: Domain, con: object) -> None:
    ledger = Ledger(domain.audit)
    budget = Budget(epsilon=1.0, delta=1e-6)
    c1, r1 = released(con, "SELECT COUNT(*) FROM residents", epsilon=0.7)
    ledger.charge_and_record(
        domain.engine, scenario_id="S1", job_id="J-1", compiled=c1, result=r1, budget=budget
    )
    c2, r2 = released(con, "SELECT AVG(age) FROM residents", epsilon=0.7)
    with pytest.raises(BudgetExhausted) as err:
        ledger.charge_and_record(
            domain.engine, scenario_id="S1", job_id="J-2", compiled=c2, result=r2, budget=budget
        )
    assert err.value.code == "egress.budget_exhausted"
    assert "epsilon 0.3 of 1 left" in err.value.message
    assert err.value.details["epsilon_left"] == pytest.approx(0.3)
    assert err.value.hint
    # nothing charged, nothing stored; the refusal is audited
    assert [c.job_id for c in ledger.charges(domain.engine, "S1")] == ["J-1"]
    assert ledger.lookup(domain.engine, "S1", c2.query_key) is None
    assert ("dp.charge", "denied") in audit_actions(domain)
    # the early check refuses the same way, before anything runs
    with pytest.raises(BudgetExhausted):
        ledger.check(domain.engine, "S1", c2.cost, budget)


def test_per_job_cap_refuses_a_large_query(domain: Domain, con: object) -> None:
    ledger = Ledger()
    c, r = released(con, "SELECT COUNT(*) FROM residents", epsilon=0.6)
    with pytest.raises(BudgetExhausted, match=r"at most epsilon 0\.5"):
        ledger.charge_and_record(
            domain.engine,
            scenario_id="S1",
            job_id="J-1",
            compiled=c,
            result=r,
            budget=Budget(5.0, 1e-6, per_job_epsilon=0.5),
        )


def test_a_repeat_returns_the_released_answer_and_charges_nothing(
    domain: Domain, con: object
) -> None:
    ledger = Ledger(domain.audit)
    budget = Budget(epsilon=1.0, delta=1e-6)
    sql = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"
    c1, r1 = released(con, sql)
    first = ledger.charge_and_record(
        domain.engine, scenario_id="S1", job_id="J-1", compiled=c1, result=r1, budget=budget
    )
    # the same query written differently: case, whitespace, a comment
    c2, r2 = released(
        con, "select DISTRICT,  count(*) as N  -- again\n from RESIDENTS group by district"
    )
    assert c2.query_key == c1.query_key
    assert ledger.lookup(domain.engine, "S1", c2.query_key) is not None
    again = ledger.charge_and_record(
        domain.engine, scenario_id="S1", job_id="J-2", compiled=c2, result=r2, budget=budget
    )
    assert not again.charged and again.paid_by == "J-1"
    assert again.result.table.equals(first.result.table)
    assert not again.result.table.equals(r2.table)  # fresh noise was dropped, not released
    assert len(ledger.charges(domain.engine, "S1")) == 1
    # a new data version is a new query
    c3 = compile_query(sql, catalogs(_versioned(2)), epsilon=0.6, delta=0.0)
    assert c3.query_key != c1.query_key
    # another scenario does not see this one's releases
    assert ledger.lookup(domain.engine, "S2", c1.query_key) is None
    assert ("dp.repeat", "ok") in audit_actions(domain)


def _versioned(version: int):  # type: ignore[no-untyped-def]
    from tests.egress.dp_support import residents_catalog

    return residents_catalog(version=version)


def test_charging_the_same_job_twice_is_idempotent(domain: Domain, con: object) -> None:
    ledger = Ledger()
    budget = Budget(epsilon=1.0, delta=1e-6)
    c, r = released(con, "SELECT SUM(income) FROM residents")
    ledger.charge_and_record(
        domain.engine, scenario_id="S1", job_id="J-1", compiled=c, result=r, budget=budget
    )
    again = ledger.charge_and_record(
        domain.engine, scenario_id="S1", job_id="J-1", compiled=c, result=r, budget=budget
    )
    assert not again.charged
    assert len(ledger.charges(domain.engine, "S1")) == 1


def test_a_result_from_another_query_is_refused(domain: Domain, con: object) -> None:
    c1, _ = released(con, "SELECT COUNT(*) FROM residents")
    _, r2 = released(con, "SELECT SUM(age) FROM residents")
    with pytest.raises(EgressError) as err:
        Ledger().charge_and_record(
            domain.engine,
            scenario_id="S1",
            job_id="J-1",
            compiled=c1,
            result=r2,
            budget=Budget(1.0, 1e-6),
        )
    assert err.value.code == "egress.ledger_mismatch"


def test_releases_are_sealed_at_rest_with_a_key_service(domain: Domain, con: object) -> None:
    ledger = Ledger(domain.audit, domain.keys)
    c, r = released(con, "SELECT district, COUNT(*) FROM residents GROUP BY district")
    ledger.charge_and_record(
        domain.engine,
        scenario_id="S1",
        job_id="J-1",
        compiled=c,
        result=r,
        budget=Budget(1.0, 1e-6),
    )
    with domain.engine.connect() as conn:
        row = conn.execute(sa.select(dp_releases)).one()
    assert row.sealed and row.key_id == "dp.releases"
    assert bytes(row.result) != r.to_bytes()
    assert b"D00" not in bytes(row.result)
    back = ledger.lookup(domain.engine, "S1", c.query_key)
    assert back is not None and back.table.equals(r.table)
    with pytest.raises(EgressError, match="no key service"):
        Ledger().lookup(domain.engine, "S1", c.query_key)


def test_a_charge_can_join_the_callers_transaction(domain: Domain, con: object) -> None:
    ledger = Ledger(domain.audit)
    c, r = released(con, "SELECT COUNT(*) FROM residents")
    with pytest.raises(RuntimeError), domain.engine.begin() as conn:
        ledger.charge_and_record(
            conn, scenario_id="S1", job_id="J-1", compiled=c, result=r, budget=Budget(1.0, 1e-6)
        )
        raise RuntimeError("the caller's own step failed")
    # rolled back with the caller: no charge, no release
    assert ledger.charges(domain.engine, "S1") == []
    with domain.engine.begin() as conn:
        ledger.charge_and_record(
            conn, scenario_id="S1", job_id="J-1", compiled=c, result=r, budget=Budget(1.0, 1e-6)
        )
    assert len(ledger.charges(domain.engine, "S1")) == 1


def test_dry_run_reports_the_budget_left_after(domain: Domain, con: object) -> None:
    ledger = Ledger()
    budget = Budget(epsilon=2.0, delta=1e-6)
    c1, r1 = released(con, "SELECT COUNT(*) FROM residents", epsilon=0.5)
    ledger.charge_and_record(
        domain.engine, scenario_id="S1", job_id="J-1", compiled=c1, result=r1, budget=budget
    )
    c2 = compile_query("SELECT AVG(age) FROM residents", catalogs(), epsilon=0.5, delta=0.0)
    report = ledger.dry_run(domain.engine, "S1", c2, budget).report
    assert report.budget_left_after is not None
    assert report.budget_left_after[0] == pytest.approx(1.0)


def test_concurrent_charges_never_overspend(any_domain: Domain) -> None:
    """Eight jobs race for a budget only one of them fits in: exactly one is charged."""
    con = duck({"residents": DATA})
    ledger = Ledger(any_domain.audit)
    budget = Budget(epsilon=1.0, delta=1e-6)
    jobs = [
        released(con, f"SELECT COUNT(*) FROM residents WHERE age >= {i}", epsilon=0.6)
        for i in range(8)
    ]
    # precondition: any two together do not fit, under either accounting
    two = SpentBudget().plus(jobs[0][0].cost).plus(jobs[1][0].cost)
    assert not two.fits(budget.epsilon, budget.delta)
    start = threading.Barrier(len(jobs))
    outcomes: list[str] = []
    lock = threading.Lock()

    def charge(i: int) -> None:
        compiled, result = jobs[i]
        start.wait()
        try:
            ledger.charge_and_record(
                any_domain.engine,
                scenario_id="S-race",
                job_id=f"J-{i}",
                compiled=compiled,
                result=result,
                budget=budget,
            )
            outcome = "charged"
        except BudgetExhausted:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=charge, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["charged"] + ["refused"] * (len(jobs) - 1)
    with any_domain.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(dp_charges)).scalar() == 1
        assert c.execute(sa.select(sa.func.count()).select_from(dp_releases)).scalar() == 1
    assert ledger.verify(any_domain.engine, "S-race")
    status = ledger.status(any_domain.engine, "S-race", budget)
    assert status.epsilon_spent <= budget.epsilon
    # the audit chain stayed intact through the race
    with any_domain.engine.connect() as c:
        assert AuditLog(any_domain.signer).verify(c).ok
    con.close()


def test_concurrent_charges_fill_a_budget_exactly(any_domain: Domain) -> None:
    """Twelve cheap jobs race for room for five: five are charged, never six."""
    con = duck({"residents": DATA})
    ledger = Ledger()
    budget = Budget(epsilon=1.0, delta=0.0)  # pure DP only: basic composition, exact sums
    jobs = [
        released(con, f"SELECT SUM(visits) FROM residents WHERE age < {50 + i}", epsilon=0.2)
        for i in range(12)
    ]
    start = threading.Barrier(len(jobs))
    charged: list[int] = []
    lock = threading.Lock()

    def charge(i: int) -> None:
        compiled, result = jobs[i]
        start.wait()
        try:
            ledger.charge_and_record(
                any_domain.engine,
                scenario_id="S-fill",
                job_id=f"J-{i}",
                compiled=compiled,
                result=result,
                budget=budget,
            )
        except BudgetExhausted:
            return
        with lock:
            charged.append(i)

    threads = [threading.Thread(target=charge, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(charged) == 5
    assert ledger.status(any_domain.engine, "S-fill", budget).epsilon_spent == pytest.approx(1.0)
    con.close()


def test_noisy_result_round_trips_through_bytes(con: object) -> None:
    _, r = released(con, "SELECT sex, AVG(age) FROM residents GROUP BY sex")
    back = NoisyResult.from_bytes(r.to_bytes())
    assert back.table.equals(r.table)
    assert back.cost == r.cost and back.query_key == r.query_key
    assert isinstance(back.table, pa.Table)
