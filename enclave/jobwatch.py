"""Wake the waiters of this process (job runners, event streams) once a job change commits.

Why: a job passes through half a dozen states in a few tens of milliseconds. Waiters that
poll (the job runner looking for work, the API's event stream watching one job) add their
polling interval to every job's latency, and at high load polling queries cost more than the
job. Instead, :func:`enclave.jobstore.transition` and :func:`enclave.jobstore.create_job`
mark the job on the connection (:func:`mark_changed`), and a :class:`JobWatch` installed
on the engine wakes the waiters when that connection goes back to the pool — that is,
after its transaction committed. A transaction that rolls back wakes nobody.

Only this process is woken. Another process sharing the database (a second ``shuyu serve``,
the CLI) is seen by the waiters' fallback poll, which every wait keeps (its timeout): the
wake-up is an optimisation, never the only way a waiter learns of a change.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["JobWatch", "mark_changed"]

_PENDING = "shuyu.jobs_changed"
RUNNABLE = "authorized"  # the state a job runner takes jobs from


def mark_changed(conn: Connection, job_id: str, state: str) -> None:
    """Note that ``job_id`` became ``state`` in this connection's transaction."""
    pending: dict[str, str] = conn.info.setdefault(_PENDING, {})
    pending[job_id] = state


class JobWatch:
    """A change counter per job and one condition variable; thread-safe.

    Each committed transaction that changed jobs stamps them with the next generation; a
    waiter on a job remembers the stamp it last saw and sleeps until a newer one exists, or
    the timeout passes. ``queued`` counts only the changes that made a job runnable
    (``authorized``): what a job runner waits for (:meth:`wait_runnable`), so the many other
    state changes of running jobs do not send idle workers looking.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._queued = 0
        self._changed: dict[str, int] = {}
        self._states: dict[str, str] = {}  # the last committed state of each job seen here
        # Waiters on an event loop (the API's event streams): woken thread-safely.
        self._async: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def install(self, engine: Engine) -> None:
        """Wake waiters after commits on ``engine`` (and forget marks of rollbacks)."""
        sa.event.listen(engine, "rollback", self._on_rollback)
        sa.event.listen(engine.pool, "checkin", self._on_checkin)
        sa.event.listen(engine, "commit", self._on_commit)

    def seen(self, job_id: str) -> int:
        """The generation of ``job_id``'s last committed change seen here (0: none)."""
        with self._cond:
            return self._changed.get(job_id, 0)

    def state(self, job_id: str) -> str | None:
        """The state ``job_id``'s last committed change here moved it to (None: none seen).

        Lets a waiter skip reading the job back for changes it does not wait for."""
        with self._cond:
            return self._states.get(job_id)

    @property
    def queued(self) -> int:
        with self._cond:
            return self._queued

    def notify(self, changes: dict[str, str]) -> None:
        """Wake the waiters on these jobs (``job id -> new state``)."""
        if not changes:
            return
        job_ids = set(changes)
        runnable = sum(1 for state in changes.values() if state == RUNNABLE)
        with self._cond:
            self._generation += 1
            if runnable:
                self._queued += 1
            for job_id, state in changes.items():
                self._changed[job_id] = self._generation
                self._states[job_id] = state
            if len(self._changed) > 10_000:  # old jobs: waiters fall back to polling
                oldest = sorted(self._changed, key=self._changed.__getitem__)[:5_000]
                for job_id in oldest:
                    del self._changed[job_id]
                    self._states.pop(job_id, None)
            # Only job runners sleep on the condition, and only for runnable jobs: wake one
            # idle worker per job that became runnable. Waking every worker on every change
            # of any job sent the others to look for work that was not there (a query
            # each; about four looks per job with three workers).
            if runnable:
                self._cond.notify(runnable)
            woken = [w for job_id in job_ids for w in self._async.get(job_id, ())]
        for loop, event in woken:
            loop.call_soon_threadsafe(event.set)

    def wait_runnable(self, after: int, timeout_s: float) -> int:
        """Sleep until :attr:`queued` passes ``after`` (a job became runnable) or the
        timeout; the count to pass next time."""
        with self._cond:
            self._cond.wait_for(lambda: self._queued > after, timeout_s)
            return self._queued

    async def wait_async(self, after: int, timeout_s: float, job_id: str) -> int:
        """Sleep until ``job_id`` has a change newer than ``after``; the stamp to pass next
        time. Sleeps on the event loop and holds no thread. Returns on timeout too: the
        caller then looks at the database anyway (changes made by other processes)."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._cond:
            if self._changed.get(job_id, 0) > after:
                return self._changed[job_id]
            self._async.setdefault(job_id, set()).add(waiter)
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._cond:
                waiters = self._async.get(job_id)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._async[job_id]
        return self.seen(job_id) or after

    # --- engine events ------------------------------------------------------------------

    def _on_commit(self, conn: Connection) -> None:
        # Fires just before the driver commits: move the marks where `checkin` (after the
        # commit, when the connection returns to the pool) or the next begin finds them.
        pending = conn.info.pop(_PENDING, None)
        if pending:
            conn.info.setdefault(_PENDING + ".committed", {}).update(pending)

    def _on_rollback(self, conn: Connection) -> None:
        conn.info.pop(_PENDING, None)

    def _on_checkin(self, _dbapi_conn: Any, record: Any) -> None:
        committed = record.info.pop(_PENDING + ".committed", None)
        record.info.pop(_PENDING, None)  # changed outside a committed transaction: void
        if committed:
            self.notify(committed)
