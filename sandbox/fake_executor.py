"""The fake executor: the real agent in a plain subprocess, for unit tests without Docker.

Same contract and the same host-side output discipline (size cap, deadline, framed and
validated answer) as :class:`~sandbox.docker_executor.DockerExecutor`, but **no
isolation at all**: the agent runs as this user, with this network and file system. For
tests only; the composition root never builds one.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import SandboxError
from sandbox.executor import BaseExecutor, Run
from sandbox.job import JobSpec
from sandbox.limits import SandboxLimits
from sandbox.outcome import OutputCollector, limit_exceeded, to_output

__all__ = ["FakeExecutor"]


@dataclass
class _Proc:
    proc: subprocess.Popen[bytes]
    started: float


class FakeExecutor(BaseExecutor):
    def __init__(
        self, limits: SandboxLimits, store_dir: Path, image_id: str = "sha256:" + "0" * 64
    ) -> None:
        super().__init__()
        self.image_id = image_id  # what it claims to run, for key release
        self._limits = limits
        self._store = store_dir
        self._procs: dict[str, _Proc] = {}
        self.started_jobs: list[str] = []  # for tests: what actually started

    def _do_prepare(self, run: Run, spec: JobSpec) -> None:
        pass  # nothing to create before start

    def _do_start(self, run: Run, spec: JobSpec) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.agent", "--data", str(self._store)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self._procs[run.job_id] = _Proc(proc, time.monotonic())
        self.started_jobs.append(run.job_id)
        line = spec.job_line(self._limits)
        assert proc.stdin is not None
        try:
            proc.stdin.write(line)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        line[:] = bytes(len(line))

    def _do_wait(self, run: Run) -> None:
        p = self._procs[run.job_id]
        assert p.proc.stdout is not None
        fd = p.proc.stdout.fileno()
        collector = OutputCollector(self._limits.max_output_bytes)
        deadline = p.started + self._limits.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                p.proc.kill()
                raise limit_exceeded("time")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk or collector.feed(chunk):
                break
        run.output_bytes = collector.total_bytes
        if collector.over_limit:
            p.proc.kill()
            raise limit_exceeded("output", max_output_bytes=self._limits.max_output_bytes)
        if collector.malformed:
            p.proc.kill()
            to_output([], run.kind, 0)
        if not collector.done:
            code = p.proc.wait()
            raise SandboxError(
                "the sandbox stopped without answering",
                code="sandbox.agent_crashed",
                details={"exit_code": code},
            )
        run.frames = collector.frames
        try:
            p.proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            p.proc.kill()

    def _do_cleanup(self, job_id: str, run: Run | None) -> None:
        p = self._procs.pop(job_id, None)
        if p is not None:
            if p.proc.poll() is None:
                p.proc.kill()
            p.proc.wait()
            if p.proc.stdout is not None:
                p.proc.stdout.close()
