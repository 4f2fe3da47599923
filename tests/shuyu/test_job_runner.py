"""The background runner with several workers: every job runs once, and jobs overlap."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from enclave.jobstore import create_job, get_job, transition
from shuyu import jobs
from shuyu.context import Domain
from shuyu.jobs import JobRunner


def _authorized_job(domain: Domain) -> str:
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
        transition(conn, domain.audit, job.id, "authorized", actor="system", policy_hash="h")
    return job.id


def test_several_workers_run_each_job_once_and_in_parallel(
    domain: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [_authorized_job(domain) for _ in range(9)]
    runs: Counter[str] = Counter()
    lock = threading.Lock()
    active = peak = 0

    def fake_run_job(d: Domain, job_id: str) -> dict[str, object]:
        nonlocal active, peak
        with lock:
            runs[job_id] += 1
            active += 1
            peak = max(peak, active)
        # The job stays `authorized` for a while, as a real one does while it is compiled:
        # the window in which a second worker that only polled the table would take it too.
        time.sleep(0.05)
        with d.engine.begin() as conn:
            transition(conn, d.audit, job_id, "running", actor="system")
        time.sleep(0.05)
        with d.engine.begin() as conn:
            transition(conn, d.audit, job_id, "failed", actor="system", error_code="test.done")
        with lock:
            active -= 1
        return {}

    monkeypatch.setattr(jobs, "run_job", fake_run_job)
    runner = JobRunner(domain, poll_s=0.01, workers=3)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with domain.engine.connect() as conn:
                if all(get_job(conn, j).state == "failed" for j in ids):
                    break
            time.sleep(0.05)
    finally:
        runner.stop()

    assert dict(runs) == dict.fromkeys(ids, 1)  # no job taken twice, none left behind
    assert peak >= 2  # the workers did overlap
    with domain.engine.connect() as conn:
        assert all(get_job(conn, j).error_code == "test.done" for j in ids)
        assert domain.audit.verify(conn).ok


def test_a_runner_needs_a_worker(domain: Domain) -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        JobRunner(domain, workers=0)
