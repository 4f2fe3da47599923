"""After a crash, every job ends in a correct state and the ledger and audit agree."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from egress.dp_tables import dp_charges
from enclave.jobstore import create_job, get_job, transition
from shuyu.context import Domain
from shuyu.jobs import JobRunner


def _job(domain: Domain, to: list[str]) -> str:
    with domain.engine.begin() as conn:
        job = create_job(
            conn,
            domain.audit,
            scenario_id="S-2026-001",
            submitter="op",
            kind="sql",
            output_mode="dp_aggregate",
            code="SELECT COUNT(*) AS n FROM residents",
            params={},
        )
        for state in to:
            transition(conn, domain.audit, job.id, state, actor="system", policy_hash="h")
    return job.id


def test_recover_fails_interrupted_jobs_keeps_queued_ones_and_charges_nothing(
    any_domain: Domain,
) -> None:
    queued = _job(any_domain, ["authorized"])
    running = _job(any_domain, ["authorized", "running"])
    computed = _job(any_domain, ["authorized", "running", "computed"])
    waiting = _job(any_domain, ["authorized", "running", "computed", "gated", "pending_review"])

    assert JobRunner(any_domain).recover() == 2

    with any_domain.engine.connect() as conn:
        states = {j: get_job(conn, j) for j in (queued, running, computed, waiting)}
        charges = conn.execute(sa.select(sa.func.count()).select_from(dp_charges)).scalar_one()
        verification = any_domain.audit.verify(conn)
    assert states[queued].state == "authorized"  # the runner picks it up again
    assert states[waiting].state == "pending_review"  # a reviewer's queue survives
    for j in (running, computed):
        assert states[j].state == "failed"
        assert states[j].error_code == "service.interrupted"
        assert "nothing was charged" in (states[j].error_message or "")
    assert charges == 0
    assert verification.ok


def test_concurrent_workers_start_one_warm_pool(
    domain: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several runner workers asking for the pool at once must not start several."""
    import threading
    import time

    from shuyu.sandboxes import Sandboxes

    domain.settings.warm_pool_size = 1
    started: list[int] = []

    def slow_start(self: Sandboxes) -> object:
        started.append(1)
        time.sleep(0.05)  # widen the window a racing second worker would fall into
        return object()

    monkeypatch.setattr(Sandboxes, "_start_pool", slow_start)
    sb = Sandboxes(domain)
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(sb.pool)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 1
    assert len({id(p) for p in seen}) == 1
