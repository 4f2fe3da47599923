"""The job watch wakes waiters after a job change commits, and only then."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from enclave.jobstore import transition
from shuyu.context import Domain
from tests.enclave.test_jobstore import _job


def test_a_rolled_back_transition_wakes_nobody(domain: Domain) -> None:
    job_id = _job(domain)
    watch = domain.job_watch
    seen = watch.seen(job_id)
    with pytest.raises(RuntimeError), domain.engine.begin() as conn:
        transition(conn, domain.audit, job_id, "authorized", actor="system")
        raise RuntimeError("abort")
    t0 = time.monotonic()
    assert asyncio.run(watch.wait_async(seen, 0.3, job_id)) == seen
    assert time.monotonic() - t0 >= 0.25
    # a change of another job does not wake a waiter on this one
    _job(domain)
    assert watch.seen(job_id) == seen


def test_a_committed_transition_wakes_a_waiter_at_once(any_domain: Domain) -> None:
    domain = any_domain
    job_id = _job(domain)
    watch = domain.job_watch
    seen = watch.seen(job_id)
    assert seen > 0  # the create was committed and seen

    async def main() -> tuple[int, float]:
        def later() -> None:
            time.sleep(0.05)
            with domain.engine.begin() as conn:
                transition(conn, domain.audit, job_id, "authorized", actor="system")

        t = threading.Thread(target=later)
        t.start()
        t0 = time.monotonic()
        gen = await watch.wait_async(seen, 10.0, job_id)
        t.join()
        return gen, time.monotonic() - t0

    gen, waited = asyncio.run(main())
    assert gen > seen and waited < 2.0


def test_a_job_runner_is_woken_only_by_a_job_becoming_runnable(domain: Domain) -> None:
    watch = domain.job_watch
    queued = watch.queued
    job_id = _job(domain)  # submitted: not runnable yet
    assert watch.wait_runnable(queued, 0.1) == queued
    with domain.engine.begin() as conn:
        transition(conn, domain.audit, job_id, "authorized", actor="system")
    assert watch.wait_runnable(queued, 5.0) == queued + 1
    with domain.engine.begin() as conn:
        transition(conn, domain.audit, job_id, "running", actor="system")
    assert watch.queued == queued + 1


def test_one_runnable_job_wakes_one_idle_worker(domain: Domain) -> None:
    """Idle workers are not all sent looking for one job (each look is a query)."""
    watch = domain.job_watch
    queued = watch.queued
    woken: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        after = watch.wait_runnable(queued, 1.5)
        if after > queued:
            with lock:
                woken.append(after)

    workers = [threading.Thread(target=worker) for _ in range(3)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 5
    while len(watch._cond._waiters) < 3 and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)  # until all three sleep on the condition (CPython's waiter list)
    watch.notify({"J-other": "running"})  # not runnable: wakes none
    watch.notify({"J-new": "authorized"})
    time.sleep(0.3)
    with lock:
        assert len(woken) == 1  # the other two still sleep until their timeout
    for w in workers:
        w.join()
