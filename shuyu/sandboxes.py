"""The Docker side of a domain: the recorded image, the limits, the warm pool.

One per :class:`~shuyu.context.Domain` (``domain.sandboxes``), built on first use so that
commands that never run a job never need a Docker engine.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sandbox.job import JobOutput, JobSpec

if TYPE_CHECKING:
    from shuyu.context import Domain

__all__ = ["Sandboxes"]


class Sandboxes:
    """The Docker side of the domain: the recorded image, the limits, the warm pool."""

    def __init__(self, domain: Domain) -> None:
        self._domain = domain
        self._lock = threading.Lock()
        self._pool: Any = None

    @cached_property
    def client(self) -> Any:
        from sandbox.engine import docker_client

        return docker_client()

    @cached_property
    def image_id(self) -> str:
        from sandbox.image_record import current_image_id

        with self._domain.engine.connect() as conn:
            return current_image_id(conn)

    @cached_property
    def limits(self) -> Any:
        from sandbox.limits import SandboxLimits

        s = self._domain.settings
        return SandboxLimits(
            memory_bytes=s.sandbox_memory_bytes,
            pids_limit=s.sandbox_pids_limit,
            cpus=s.sandbox_cpus,
            tmpfs_bytes=s.sandbox_tmpfs_bytes,
            timeout_s=s.sandbox_timeout_s,
            max_output_bytes=s.max_output_bytes,
            runtime=s.sandbox_runtime,
        )

    @property
    def pool(self) -> Any:
        """The warm pool, or None when ``warm_pool_size`` is 0; started once, under a lock,
        because several job-runner workers may ask for it at the same moment."""
        s = self._domain.settings
        if s.warm_pool_size <= 0:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = self._start_pool()
            return self._pool

    def _start_pool(self) -> Any:
        from sandbox.pool import WarmPool

        s = self._domain.settings
        pool = WarmPool(
            self.client,
            self.image_id,
            self.limits,
            s.store_dir,
            size=s.warm_pool_size,
            idle_s=s.warm_session_idle_s,
            spares=s.cold_spares,
        )
        pool.start()

        # A closed scenario's warm sessions die with it (R6.2, R6.3).
        def close_sessions(event: Any) -> None:
            pool.destroy_sessions(event.scenario_id)

        self._domain.scenarios.hooks.on_scenario_closed(close_sessions)
        return pool

    @property
    def started_pool(self) -> Any:
        """The warm pool if this process has started it, else None (never starts one)."""
        return self._pool

    def run(self, spec: JobSpec, *, warm: bool) -> JobOutput:
        """Run one job: in the operator's warm session when allowed, else in a container of
        its own (a spare started ahead when the pool keeps them)."""
        out: JobOutput
        if warm and self.pool is not None:
            out = self.pool.run(spec)
            return out
        pool = self.pool
        if pool is not None and pool.spares_enabled:
            out = pool.run_fresh(spec)
            return out
        from sandbox.docker_executor import DockerExecutor
        from sandbox.executor import run_job as run_in

        executor = DockerExecutor(
            self.client, self.image_id, self.limits, self._domain.settings.store_dir
        )
        return run_in(executor, spec)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
