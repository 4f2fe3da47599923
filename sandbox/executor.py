"""The executor contract: how trusted code runs one job in a sandbox.

One interface for every backend (Docker, the fake for unit tests, later Kubernetes), as
an idempotent state machine per job id::

    NEW ──prepare──▶ PREPARED ──start──▶ RUNNING ──wait──▶ FINISHED ──collect──▶ COLLECTED
      └──────────────────────────────── cleanup (from any state) ──────────────▶ CLEANED

* ``prepare(spec)``: create the sandbox (hardened, not started, no keys in it yet).
* ``start(job_id)``: start it and write the job line — with the data keys — to its stdin.
* ``wait(job_id)``: read its answer, at most ``max_output_bytes``, until it is complete,
  the wall-clock limit passes, or the output limit is passed (then kill it).
* ``collect(job_id)``: the validated :class:`JobOutput`, or the job's error
  (:class:`LimitExceeded`, :class:`JobFailed`, :class:`OutputRejected`).
* ``cleanup(job_id)``: kill and remove the sandbox and forget the job.

Each step called again in its own state or later returns the same result without doing
the work twice (``collect`` raises the same error again); a step called too early raises
``sandbox.executor_state``. Keys are never stored by an executor: they go from the spec
into the sandbox's stdin and the executor drops its copy of the job line.

A host process that dies mid-job loses the in-memory answer: the orchestrator then
cleans up (:meth:`Executor.cleanup` works by job id alone) and marks the job failed.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from sandbox.agent.protocol import Frame
from sandbox.errors import SandboxError
from sandbox.job import JobKind, JobOutput, JobSpec
from sandbox.outcome import to_output

__all__ = ["BaseExecutor", "Executor", "RunState", "run_job"]


class RunState(StrEnum):
    NEW = "new"
    PREPARED = "prepared"
    RUNNING = "running"
    FINISHED = "finished"
    COLLECTED = "collected"
    CLEANED = "cleaned"


_ORDER = list(RunState)


class Executor(Protocol):
    """What the orchestrator calls; see the module docstring for the state machine."""

    @property
    def image_id(self) -> str:
        """The image the sandboxes run: the claim the key service checks."""
        ...

    def prepare(self, spec: JobSpec) -> RunState: ...

    def start(self, job_id: str) -> RunState: ...

    def wait(self, job_id: str) -> RunState: ...

    def collect(self, job_id: str) -> JobOutput: ...

    def cleanup(self, job_id: str) -> RunState: ...

    def state(self, job_id: str) -> RunState: ...


@dataclass
class Run:
    """What an executor remembers about one job (never its keys once started)."""

    job_id: str
    kind: JobKind
    state: RunState = RunState.NEW
    spec: JobSpec | None = field(default=None, repr=False)  # dropped at start
    frames: list[Frame] = field(default_factory=list)
    output_bytes: int = 0
    error: SandboxError | None = None
    output: JobOutput | None = None


def _state_error(job_id: str, step: str, state: RunState) -> SandboxError:
    return SandboxError(
        f"cannot {step} job {job_id}: it is {state.value}",
        code="sandbox.executor_state",
        kind="conflict",
        hint="call prepare, start, wait, collect in that order",
    )


class BaseExecutor(abc.ABC):
    """The state machine; a backend implements the four ``_do_*`` steps."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}

    def state(self, job_id: str) -> RunState:
        run = self._runs.get(job_id)
        return run.state if run else RunState.NEW

    def _need(self, job_id: str, step: str, at_least: RunState) -> Run:
        run = self._runs.get(job_id)
        state = run.state if run else RunState.NEW
        if run is None or _ORDER.index(state) < _ORDER.index(at_least):
            raise _state_error(job_id, step, state)
        return run

    def prepare(self, spec: JobSpec) -> RunState:
        run = self._runs.get(spec.job_id)
        if run is not None and run.state is not RunState.CLEANED:
            return run.state
        run = Run(spec.job_id, spec.kind, spec=spec)
        self._runs[spec.job_id] = run
        self._do_prepare(run, spec)
        run.state = RunState.PREPARED
        return run.state

    def start(self, job_id: str) -> RunState:
        run = self._need(job_id, "start", RunState.PREPARED)
        if run.state is RunState.PREPARED:
            spec, run.spec = run.spec, None
            if spec is None:
                raise _state_error(job_id, "start", run.state)
            run.state = RunState.RUNNING
            self._do_start(run, spec)
        return run.state

    def wait(self, job_id: str) -> RunState:
        run = self._need(job_id, "wait", RunState.RUNNING)
        if run.state is RunState.RUNNING:
            try:
                self._do_wait(run)
            except SandboxError as exc:
                run.error = exc
            run.state = RunState.FINISHED
        return run.state

    def collect(self, job_id: str) -> JobOutput:
        run = self._need(job_id, "collect", RunState.FINISHED)
        if run.error is not None:
            run.state = RunState.COLLECTED
            raise run.error
        if run.output is None:
            try:
                run.output = to_output(run.frames, run.kind, run.output_bytes)
            except SandboxError as exc:
                run.error = exc
                run.state = RunState.COLLECTED
                raise
            run.frames = []
        run.state = RunState.COLLECTED
        return run.output

    def cleanup(self, job_id: str) -> RunState:
        run = self._runs.pop(job_id, None)
        self._do_cleanup(job_id, run)
        return RunState.CLEANED

    @abc.abstractmethod
    def _do_prepare(self, run: Run, spec: JobSpec) -> None: ...

    @abc.abstractmethod
    def _do_start(self, run: Run, spec: JobSpec) -> None: ...

    @abc.abstractmethod
    def _do_wait(self, run: Run) -> None:
        """Fill ``run.frames``/``run.output_bytes``, or raise the job's SandboxError."""

    @abc.abstractmethod
    def _do_cleanup(self, job_id: str, run: Run | None) -> None: ...


def run_job(executor: Executor, spec: JobSpec) -> JobOutput:
    """Run one job start to finish and always clean up; the output or the job's error."""
    try:
        executor.prepare(spec)
        executor.start(spec.job_id)
        executor.wait(spec.job_id)
        return executor.collect(spec.job_id)
    finally:
        executor.cleanup(spec.job_id)
