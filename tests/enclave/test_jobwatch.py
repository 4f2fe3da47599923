"""The job watch wakes waiters after a job change commits, and only then."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from enclave.jobstore import transition
from shuyu.context import Domain
from tests.enclave.test_jobstore import _job


def test_a_committed_transition_wakes_a_waiting_thread_at_once(any_domain: Domain) -> None:
    job_id = _job(any_domain)
    watch = any_domain.job_watch
    seen = watch.seen(job_id)
    assert seen > 0  # the create was committed and seen
    woke: list[float] = []

    def waiter() -> None:
        t0 = time.monotonic()
        watch.wait(seen, 10.0, job_id)
        woke.append(time.monotonic() - t0)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    with any_domain.engine.begin() as conn:
        transition(conn, any_domain.audit, job_id, "authorized", actor="system")
    t.join(5)
    assert woke and woke[0] < 2.0  # not the 10 s timeout
    assert watch.seen(job_id) > seen


def test_a_rolled_back_transition_wakes_nobody(domain: Domain) -> None:
    job_id = _job(domain)
    watch = domain.job_watch
    seen = watch.seen(job_id)
    with pytest.raises(RuntimeError), domain.engine.begin() as conn:
        transition(conn, domain.audit, job_id, "authorized", actor="system")
        raise RuntimeError("abort")
    t0 = time.monotonic()
    assert watch.wait(seen, 0.3, job_id) == seen
    assert time.monotonic() - t0 >= 0.25
    # a change of another job does not wake a waiter on this one
    _job(domain)
    assert watch.seen(job_id) == seen


def test_an_event_loop_waiter_is_woken_without_a_thread(domain: Domain) -> None:
    job_id = _job(domain)
    watch = domain.job_watch
    seen = watch.seen(job_id)

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
    from enclave.jobwatch import RUNNABLE

    watch = domain.job_watch
    queued = watch.queued
    job_id = _job(domain)  # submitted: not runnable yet
    assert watch.wait(queued, 0.1, RUNNABLE) == queued
    with domain.engine.begin() as conn:
        transition(conn, domain.audit, job_id, "authorized", actor="system")
    assert watch.wait(queued, 5.0, RUNNABLE) == queued + 1
    with domain.engine.begin() as conn:
        transition(conn, domain.audit, job_id, "running", actor="system")
    assert watch.queued == queued + 1
