"""Job transitions are compare-and-set, idempotent and audited."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from enclave.jobstore import JobStateError, create_job, get_job, transition
from enclave.tables import audit_log
from shuyu.context import Domain


def _job(domain: Domain) -> str:
    with domain.engine.begin() as conn:
        return create_job(
            conn,
            domain.audit,
            scenario_id="S-1",
            submitter="op1",
            kind="sql",
            output_mode="dp_aggregate",
            code="SELECT COUNT(*) FROM t",
            params={},
        ).id


def test_happy_path_is_audited_step_by_step(any_domain: Domain) -> None:
    jid = _job(any_domain)
    for state in (
        "authorized",
        "running",
        "computed",
        "gated",
        "pending_review",
        "approved",
        "released",
    ):
        with any_domain.engine.begin() as conn:
            assert transition(conn, any_domain.audit, jid, state, actor="system")
    with any_domain.engine.connect() as conn:
        assert get_job(conn, jid).state == "released"
        actions = [
            r.action
            for r in conn.execute(
                sa.select(audit_log.c.action)
                .where(audit_log.c.target == jid)
                .order_by(audit_log.c.seq)
            )
        ]
    assert actions == [
        "job.submit",
        "job.authorized",
        "job.running",
        "job.computed",
        "job.gated",
        "job.pending_review",
        "job.approved",
        "job.released",
    ]


def test_repeating_a_transition_is_a_no_op(domain: Domain) -> None:
    jid = _job(domain)
    with domain.engine.begin() as conn:
        assert transition(conn, domain.audit, jid, "authorized", actor="system")
    with domain.engine.begin() as conn:
        assert not transition(conn, domain.audit, jid, "authorized", actor="system")


def test_an_illegal_transition_says_what_is_allowed(domain: Domain) -> None:
    jid = _job(domain)
    with domain.engine.begin() as conn:
        transition(conn, domain.audit, jid, "refused", actor="system", error_code="policy.deny")
    with pytest.raises(JobStateError, match="is refused; it cannot become approved") as exc:
        with domain.engine.begin() as conn:
            transition(conn, domain.audit, jid, "approved", actor="rev1")
    assert "pending_review" in exc.value.hint


def test_two_workers_cannot_both_claim_a_job(any_domain: Domain) -> None:
    jid = _job(any_domain)
    with any_domain.engine.begin() as conn:
        transition(conn, any_domain.audit, jid, "authorized", actor="system")
    wins: list[bool] = []
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            with any_domain.engine.begin() as conn:
                wins.append(transition(conn, any_domain.audit, jid, "running", actor="w"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and wins.count(True) == 1
