"""The warm pool: sandboxes started ahead of demand, and per-(operator, scenario) sessions.

A *warm* container is a hardened sandbox (the same :func:`hardened_container_config`)
running the agent in loop mode: Python, DuckDB and pandas already imported, waiting on
stdin, holding no data and no keys. The first job of an operator under a scenario binds
one to a *session*; the session keeps its decrypted tables in memory, so the next jobs of
the **same operator under the same scenario** skip decryption. Rules:

* a session never serves another operator or another scenario;
* each job still gets its own key release; the agent re-proves it holds the keys of
  every cached column before using it;
* a session idle for ``idle_s`` is destroyed (:meth:`WarmPool.reap_idle`, also run by a
  background reaper), and so is one whose job hit a limit, timed out or misbehaved;
* :meth:`WarmPool.destroy_sessions` destroys every session of a scenario at once — call
  it when a scenario is suspended, revoked or expires;
* ``size`` idle containers are kept ready; ``size=0`` disables the pool
  (:attr:`WarmPool.enabled` is False and jobs run cold).

*Spares* serve jobs that must run cold (Python and model-check jobs): ``spares`` one-shot
agents (``python -m agent --preload``) are started ahead with every library imported. A
cold job takes one (:meth:`WarmPool.run_fresh`): it is a fresh container, like any cold
one, answers that one job and is destroyed; it never held data or keys before the job.
What it saves is the container start and ~2 s of imports.

:class:`PoolExecutor` puts the same executor contract on top, so the orchestrator runs a
job the same way warm or cold.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from sandbox.docker_executor import (
    LABEL_ROLE,
    SandboxStream,
    check_image,
    pids_limit_hit,
    read_answer,
)
from sandbox.errors import EngineUnavailable, SandboxError
from sandbox.executor import BaseExecutor, Run
from sandbox.hardening import hardened_container_config
from sandbox.job import JobSpec
from sandbox.limits import SandboxLimits
from sandbox.outcome import OutputCollector, limit_exceeded, to_output
from sandbox.owner import LABEL_OWNER, owner_label, reap_orphans
from sandbox.store_access import SANDBOX_GID, grant_sandbox_read

__all__ = ["PoolExecutor", "WarmPool", "WarmSandbox"]

log = logging.getLogger(__name__)

LABEL_POOL = "org.shuyu.pool"
_HELLO_TIMEOUT_S = 60.0


@dataclass
class WarmSandbox:
    """One warm container and its stdin/stdout stream."""

    container: Any
    stream: SandboxStream
    owner: tuple[str, str] | None = None  # (operator, scenario_id) once bound
    last_used: float = 0.0
    jobs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    dead: bool = False
    closed: bool = False  # destroyed because its scenario closed: no successor for its jobs

    def run(self, spec: JobSpec, limits: SandboxLimits, store: Path) -> tuple[list[Any], int]:
        """Send one job and read its answer: (frames, bytes), or the job's SandboxError."""
        deadline = self.send(spec, limits, store)
        return self.receive(spec.kind, limits, deadline)

    def send(self, spec: JobSpec, limits: SandboxLimits, store: Path) -> float:
        """Write the job line (keys included) to the agent; returns the job's deadline."""
        grant_sandbox_read(store, [g.path for g in spec.tables.values()])
        line = spec.job_line(limits)
        try:
            self.stream.send(line)
        finally:
            line[:] = bytes(len(line))
        return time.monotonic() + limits.timeout_s

    def receive(self, kind: str, limits: SandboxLimits, deadline: float) -> tuple[list[Any], int]:
        """Read one answer. Any limit, timeout or protocol fault marks the sandbox dead (the
        pool then destroys it); an ordinary job error (an ``E`` frame) keeps the session."""
        collector = OutputCollector(limits.max_output_bytes)
        try:
            read_answer(self.stream, collector, deadline)
        except TimeoutError:
            self.dead = True
            raise limit_exceeded("pids" if pids_limit_hit(self.container.id) else "time") from None
        if collector.over_limit:
            self.dead = True
            raise limit_exceeded("output", max_output_bytes=limits.max_output_bytes)
        if collector.malformed or not collector.done:
            self.dead = True
            if not collector.malformed:
                with contextlib.suppress(docker.errors.APIError):
                    self.container.reload()
                    if self.container.attrs.get("State", {}).get("OOMKilled"):
                        raise limit_exceeded("memory")
            to_output([], "sql", 0)  # raises OutputRejected
        self.jobs += 1
        self.last_used = time.monotonic()
        if collector.frames and collector.frames[-1].name.startswith("limit."):
            self.dead = True  # it survived, but do not trust its state
        return collector.frames, collector.total_bytes


class WarmPool:
    """Warm sandboxes and the sessions bound to them; thread-safe."""

    def __init__(
        self,
        client: docker.DockerClient,
        image_id: str,
        limits: SandboxLimits,
        store_dir: Path,
        *,
        size: int,
        idle_s: float,
        spares: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._image_id = image_id
        self._limits = limits
        self._store = store_dir
        self._size = size
        self._idle_s = idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: list[WarmSandbox] = []
        self._spare_size = spares
        self._spares: list[WarmSandbox] = []
        self._sessions: dict[tuple[str, str], WarmSandbox] = {}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        # Labels every container of this pool, so it (or an operator cleaning up after a
        # crashed host) can find exactly its own.
        self.pool_id = uuid.uuid4().hex[:12]

    @property
    def enabled(self) -> bool:
        return self._size > 0

    @property
    def image_id(self) -> str:
        return self._image_id

    @property
    def limits(self) -> SandboxLimits:
        return self._limits

    @property
    def store(self) -> Path:
        return self._store

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, reaper_interval_s: float | None = None) -> None:
        """Fill the pool and start the idle-session reaper."""
        if not self.enabled:
            return
        check_image(self._client, self._image_id, self._limits.runtime)
        reap_orphans(self._client)  # warm sandboxes of a server that was killed
        self.fill()
        interval = reaper_interval_s or max(min(self._idle_s / 4, 30.0), 0.5)
        self._reaper = threading.Thread(
            target=self._reap_loop, args=(interval,), name="shuyu-pool-reaper", daemon=True
        )
        self._reaper.start()

    def close(self) -> None:
        """Destroy every warm sandbox and session (after any refill in flight)."""
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=_HELLO_TIMEOUT_S)
        with self._lock:
            doomed = self._idle + self._spares + list(self._sessions.values())
            self._idle, self._spares, self._sessions = [], [], {}
        for warm in doomed:
            self._destroy(warm)

    def fill(self) -> None:
        """Start warm sandboxes until ``size`` idle ones and ``spares`` spares are ready."""
        for spare in (False, True):
            ready = self._spares if spare else self._idle
            size = self._spare_size if spare else self._size
            while self.enabled and not self._stop.is_set():
                with self._lock:
                    if len(ready) >= size:
                        break
                try:
                    warm = self._spawn_retrying(spare)
                except SandboxError as exc:
                    if not spare:
                        raise
                    # spares only save time: without them cold jobs start from nothing
                    log.warning("spares disabled: %s (%s)", exc.message, exc.code)
                    self._spare_size = 0
                    break
                with self._lock:
                    if not self._stop.is_set():
                        ready.append(warm)
                        continue
                self._destroy(warm)  # the pool closed while this one started
                return

    def _spawn_retrying(self, spare: bool) -> WarmSandbox:
        try:
            return self._spawn(spare=spare)
        except SandboxError:
            return self._spawn(spare=spare)  # one retry: a busy engine can lose a start

    def _spawn(self, spare: bool = False) -> WarmSandbox:
        gid = SANDBOX_GID if _is_root() else self._store.stat().st_gid
        role = "spare" if spare else "warm"
        try:
            container = self._client.containers.create(
                self._image_id,
                command=["--preload"] if spare else ["--loop"],
                name=f"shuyu-{role}-{uuid.uuid4().hex[:12]}",
                labels={LABEL_ROLE: role, LABEL_POOL: self.pool_id, LABEL_OWNER: owner_label()},
                **hardened_container_config(self._limits, self._store, store_gid=gid),
            )
            stream = SandboxStream(self._client, container.id)
            container.start()
        except docker.errors.APIError as exc:
            raise EngineUnavailable(
                f"could not start a warm sandbox: {exc.explanation or exc}",
                hint="check `docker info`; set SHUYU_WARM_POOL_SIZE=0 to run jobs cold",
            ) from exc
        warm = WarmSandbox(container, stream)
        hello = OutputCollector(1024)
        why = "no hello"
        try:
            while not hello.hello:
                chunk = stream.read(_HELLO_TIMEOUT_S)
                if not chunk:
                    why = "exited before it was ready"
                    break
                if hello.feed(chunk):
                    why = "answered before it was asked"
                    break
        except TimeoutError:
            why = f"not ready after {_HELLO_TIMEOUT_S:.0f}s"
        if not hello.hello:
            self._destroy(warm)
            raise SandboxError(
                f"a warm sandbox did not become ready: {why}",
                code="sandbox.warm_start_failed",
                kind="unavailable",
                hint="check the image with `shuyu image build` and the engine with `docker info`",
            )
        return warm

    # --- sessions -------------------------------------------------------------------------

    def acquire(self, operator: str, scenario_id: str) -> WarmSandbox:
        """The session of (operator, scenario), binding a warm sandbox to it if needed."""
        if not operator or not scenario_id:
            raise SandboxError(
                "a warm session needs an operator and a scenario",
                code="sandbox.session_owner",
                kind="invalid",
                hint="set JobSpec.operator and JobSpec.scenario_id",
            )
        self.reap_idle()
        key = (operator, scenario_id)
        took_idle = False
        with self._lock:
            warm = self._sessions.get(key)
            if warm is None and self._idle:
                warm = self._idle.pop(0)
                warm.owner = key
                self._sessions[key] = warm
                took_idle = True
        if warm is None:
            fresh = self._spawn()
            spare: WarmSandbox | None = None
            with self._lock:
                warm = self._sessions.get(key)  # another job of this key may have won
                if warm is None:
                    warm = fresh
                    warm.owner = key
                    self._sessions[key] = warm
                elif len(self._idle) < self._size:
                    self._idle.append(fresh)  # unbound and clean: keep it ready
                else:
                    spare = fresh
            if spare is not None:
                self._destroy(spare)
        if took_idle:
            self._refill_later()
        assert warm.owner == key  # a session never serves anyone else
        warm.last_used = self._clock()
        return warm

    def release(self, warm: WarmSandbox) -> None:
        """After a job: keep a healthy session, destroy a dead one."""
        warm.last_used = self._clock()
        if warm.dead:
            with self._lock:
                if warm.owner is not None and self._sessions.get(warm.owner) is warm:
                    del self._sessions[warm.owner]
            self._destroy(warm)

    def run(self, spec: JobSpec) -> Any:
        """Run one job in its (operator, scenario) session; a validated JobOutput.

        Jobs of one session take turns on its lock. A job that waited while the job before
        it killed the session (a limit, a protocol fault) takes the session's successor.
        """
        while True:
            warm = self.acquire(spec.operator, spec.scenario_id)
            with warm.lock:
                if warm.dead and warm.closed:
                    raise SandboxError(
                        "the warm session was closed while this job waited for it",
                        code="sandbox.session_closed",
                        kind="conflict",
                        hint="its scenario was suspended, revoked or expired; the job did not run",
                    )
                if warm.dead:  # destroyed while this job waited for it (a limit, a fault)
                    continue
                try:
                    frames, size = warm.run(spec, self._limits, self._store)
                except SandboxError:
                    warm.dead = True
                    raise
                finally:
                    self.release(warm)
            return to_output(frames, spec.kind, size)

    def run_fresh(self, spec: JobSpec) -> Any:
        """Run one job in a sandbox of its own that is destroyed after it (a cold job's
        guarantees), on a spare started ahead when one is ready; a validated JobOutput."""
        with self._lock:
            spare = self._spares.pop(0) if self._spares else None
        if spare is None:
            spare = self._spawn(spare=True)  # none ready: as slow as a cold start
        else:
            self._refill_later()
        try:
            frames, size = spare.run(spec, self._limits, self._store)
        finally:
            self._destroy(spare)  # one job, then gone, whatever happened
        return to_output(frames, spec.kind, size)

    @property
    def spares_enabled(self) -> bool:
        return self._spare_size > 0

    @property
    def spare_count(self) -> int:
        with self._lock:
            return len(self._spares)

    def destroy_sessions(self, scenario_id: str) -> int:
        """Destroy every session of a scenario (suspended, revoked, expired); how many."""
        with self._lock:
            keys = [k for k in self._sessions if k[1] == scenario_id]
            doomed = [self._sessions.pop(k) for k in keys]
        for warm in doomed:
            warm.closed = True
            self._destroy(warm)
        return len(doomed)

    def reap_idle(self) -> int:
        """Destroy sessions idle longer than ``idle_s``; how many."""
        now = self._clock()
        with self._lock:
            keys = [
                k
                for k, w in self._sessions.items()
                if now - w.last_used > self._idle_s and not w.lock.locked()
            ]
            doomed = [self._sessions.pop(k) for k in keys]
        for warm in doomed:
            self._destroy(warm)
        return len(doomed)

    def sessions(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._sessions)

    @property
    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    # --- helpers --------------------------------------------------------------------------

    def _refill_later(self) -> None:
        if self._stop.is_set():
            return
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            return  # one refill at a time; it fills up to size
        thread = threading.Thread(target=self._safe_fill, name="shuyu-pool-fill", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _safe_fill(self) -> None:
        try:
            self.fill()
        except SandboxError as exc:
            log.warning("warm pool refill failed: %s", exc.code)

    def _reap_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.reap_idle()

    @staticmethod
    def _destroy(warm: WarmSandbox) -> None:
        warm.dead = True
        warm.stream.close()
        with contextlib.suppress(docker.errors.APIError):
            warm.container.kill()
        with contextlib.suppress(docker.errors.APIError):
            warm.container.remove(force=True)


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


class PoolExecutor(BaseExecutor):
    """The executor contract over warm sessions (``JobSpec.operator``/``scenario_id``).

    ``prepare`` binds the session, ``start`` takes the session's lock and sends the job,
    ``wait`` reads the answer and lets the session go; ``cleanup`` keeps a healthy
    session for the next job and destroys a dead one.
    """

    def __init__(self, pool: WarmPool) -> None:
        super().__init__()
        self._pool = pool
        self._bound: dict[str, WarmSandbox] = {}
        self._deadlines: dict[str, float] = {}

    @property
    def image_id(self) -> str:
        return self._pool.image_id

    def _do_prepare(self, run: Run, spec: JobSpec) -> None:
        self._bound[run.job_id] = self._pool.acquire(spec.operator, spec.scenario_id)

    def _do_start(self, run: Run, spec: JobSpec) -> None:
        warm = self._bound[run.job_id]
        warm.lock.acquire()
        try:
            self._deadlines[run.job_id] = warm.send(spec, self._pool.limits, self._pool.store)
        except BaseException:
            warm.dead = True
            warm.lock.release()
            raise

    def _do_wait(self, run: Run) -> None:
        warm = self._bound[run.job_id]
        try:
            run.frames, run.output_bytes = warm.receive(
                run.kind, self._pool.limits, self._deadlines.pop(run.job_id)
            )
        except SandboxError:
            warm.dead = True
            raise
        finally:
            warm.lock.release()

    def _do_cleanup(self, job_id: str, run: Run | None) -> None:
        warm = self._bound.pop(job_id, None)
        if warm is None:
            return
        if job_id in self._deadlines:  # started, never waited: the answer is unread
            self._deadlines.pop(job_id)
            warm.dead = True
            warm.lock.release()
        self._pool.release(warm)
