"""The Docker executor: each job in a fresh hardened container on the recorded image ID.

The job line (with the data keys) goes in over the container's stdin through the attach
socket; the answer comes back over the same socket's stdout, read by the host at most
``max_output_bytes`` at a time. stderr is never attached and the container has no log
driver, so nothing the job writes is stored anywhere. Docker errors become our errors.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from sandbox.errors import EngineUnavailable, ImageError, SandboxError
from sandbox.executor import BaseExecutor, Run
from sandbox.hardening import hardened_container_config
from sandbox.job import JobSpec
from sandbox.limits import SandboxLimits
from sandbox.outcome import OutputCollector, limit_exceeded
from sandbox.owner import LABEL_OWNER, owner_label
from sandbox.store_access import grant_sandbox_read

__all__ = ["DockerExecutor", "SandboxStream", "check_image", "container_name", "pids_limit_hit"]

LABEL_JOB = "org.shuyu.job"
LABEL_ROLE = "org.shuyu.role"
_HEADER = struct.Struct(">BxxxL")


def container_name(job_id: str) -> str:
    return "shuyu-job-" + re.sub(r"[^a-zA-Z0-9_.-]", "_", job_id)[:100]


def check_image(client: docker.DockerClient, image_id: str, runtime: str) -> None:
    """The image exists locally by ID, and the runtime is installed; else a clear error."""
    if not image_id.startswith("sha256:"):
        raise ImageError(
            f"sandbox image {image_id!r} is not an image ID",
            code="sandbox.image_not_pinned",
            hint="jobs run on the recorded image ID (sha256:…), never on a tag",
        )
    try:
        client.images.get(image_id)
    except docker.errors.ImageNotFound:
        raise ImageError(
            f"the recorded sandbox image {image_id[:19]} is not in the Docker engine",
            code="sandbox.image_missing",
            hint="run `shuyu image build`",
        ) from None
    except docker.errors.APIError as exc:
        raise _engine(exc) from exc
    if runtime != "runc":
        runtimes = client.info().get("Runtimes") or {}
        if runtime not in runtimes:
            raise EngineUnavailable(
                f"the OCI runtime {runtime!r} is not installed in this Docker engine",
                code="sandbox.runtime_missing",
                hint="install gVisor (runsc) and register it in /etc/docker/daemon.json, "
                "or set SHUYU_SANDBOX_RUNTIME=runc",
            )


def _engine(exc: Exception) -> EngineUnavailable:
    text = getattr(exc, "explanation", None) or str(exc)
    return EngineUnavailable(
        f"the Docker engine failed: {text}",
        hint="check `docker info`; see scripts/ensure-docker.sh",
    )


def pids_limit_hit(container_id: str) -> bool:
    """Whether the container's pids cgroup refused a fork (cgroup v1 or v2); best effort.

    Readable only while the container exists, so callers ask before killing it.
    """
    candidates = [
        f"/sys/fs/cgroup/pids/docker/{container_id}/pids.events",
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/pids.events",
        f"/sys/fs/cgroup/docker/{container_id}/pids.events",
    ]
    for path in candidates:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            name, _, count = line.partition(" ")
            if name == "max" and count.strip().isdigit():
                return int(count) > 0
    return False


class SandboxStream:
    """The attach socket of one container: write stdin, read demultiplexed stdout.

    Only stdout is attached; frames of any other stream are dropped unread.
    """

    def __init__(self, client: docker.DockerClient, container_id: str) -> None:
        try:
            self._wrapped = client.api.attach_socket(
                container_id, params={"stdin": 1, "stdout": 1, "stderr": 0, "stream": 1}
            )
        except docker.errors.APIError as exc:
            raise _engine(exc) from exc
        self._sock: socket.socket = getattr(self._wrapped, "_sock", self._wrapped)
        self._buf = bytearray()
        self._want: tuple[int, int] | None = None  # (stream, bytes left in this frame)
        self.eof = False

    def send(self, data: bytearray) -> None:
        with contextlib.suppress(OSError):  # the container already died; wait() says why
            self._sock.sendall(data)

    def read(self, timeout_s: float) -> bytes:
        """Up to one chunk of stdout; b"" at EOF; raises TimeoutError past ``timeout_s``."""
        while True:
            out = self._take()
            if out:
                return out
            if self.eof:
                return b""
            try:
                self._sock.settimeout(max(timeout_s, 0.001))
                chunk = self._sock.recv(1 << 16)
            except TimeoutError:
                raise
            except OSError:  # reset, or closed under us (the sandbox was destroyed): EOF
                chunk = b""
            if not chunk:
                self.eof = True
            self._buf += chunk

    def _take(self) -> bytes:
        out = bytearray()
        while self._buf:
            if self._want is None:
                if len(self._buf) < _HEADER.size:
                    break
                stream, size = _HEADER.unpack_from(self._buf, 0)
                del self._buf[: _HEADER.size]
                self._want = (stream, size)
            stream, left = self._want
            piece = bytes(self._buf[:left])
            del self._buf[: len(piece)]
            left -= len(piece)
            self._want = None if left == 0 else (stream, left)
            if stream == 1:
                out += piece
        return bytes(out)

    def close(self) -> None:
        for closable in (self._sock, self._wrapped):
            with contextlib.suppress(OSError):
                closable.close()


@dataclass
class _Live:
    container: Any
    stream: SandboxStream | None = None
    started: float = 0.0


class DockerExecutor(BaseExecutor):
    """Runs each job in its own container; see :mod:`sandbox.executor` for the contract."""

    def __init__(
        self,
        client: docker.DockerClient,
        image_id: str,
        limits: SandboxLimits,
        store_dir: Path,
    ) -> None:
        super().__init__()
        self._client = client
        self._image_id = image_id
        self._limits = limits
        self._store = store_dir
        self._live: dict[str, _Live] = {}

    @property
    def image_id(self) -> str:
        """The image ID every container of this executor runs (its key-release claim)."""
        return self._image_id

    # --- the four steps ------------------------------------------------------------------

    def _do_prepare(self, run: Run, spec: JobSpec) -> None:
        check_image(self._client, self._image_id, self._limits.runtime)
        name = container_name(spec.job_id)
        self._remove(name)  # a leftover of a host that died mid-job
        gid = grant_sandbox_read(self._store, [g.path for g in spec.tables.values()])
        try:
            container = self._client.containers.create(
                self._image_id,
                name=name,
                labels={LABEL_JOB: spec.job_id, LABEL_ROLE: "job", LABEL_OWNER: owner_label()},
                **hardened_container_config(self._limits, self._store, store_gid=gid),
            )
        except docker.errors.APIError as exc:
            raise _engine(exc) from exc
        self._live[spec.job_id] = _Live(container)

    def _do_start(self, run: Run, spec: JobSpec) -> None:
        live = self._live[run.job_id]
        live.stream = SandboxStream(self._client, live.container.id)
        try:
            live.container.start()
        except docker.errors.APIError as exc:
            raise _engine(exc) from exc
        live.started = time.monotonic()
        line = spec.job_line(self._limits)
        live.stream.send(line)
        line[:] = bytes(len(line))  # drop our copy of the keys

    def _do_wait(self, run: Run) -> None:
        live = self._live[run.job_id]
        assert live.stream is not None
        collector = OutputCollector(self._limits.max_output_bytes)
        deadline = live.started + self._limits.timeout_s
        try:
            read_answer(live.stream, collector, deadline)
        except TimeoutError:
            hit_pids = pids_limit_hit(live.container.id)
            self._kill(live)
            raise limit_exceeded("pids" if hit_pids else "time") from None
        run.output_bytes = collector.total_bytes
        if collector.over_limit:
            self._kill(live)
            raise limit_exceeded("output", max_output_bytes=self._limits.max_output_bytes)
        if collector.malformed:
            self._kill(live)
            from sandbox.outcome import to_output

            to_output([], run.kind, 0)  # raises OutputRejected
        if collector.done:
            run.frames = collector.frames
            self._reap(live, max(deadline - time.monotonic(), 1.0))
            return
        # The stream ended without an answer: the container died. Ask the engine why.
        raise self._death(live, deadline)

    def _do_cleanup(self, job_id: str, run: Run | None) -> None:
        live = self._live.pop(job_id, None)
        if live is not None and live.stream is not None:
            live.stream.close()
        self._remove(container_name(job_id))

    # --- helpers ---------------------------------------------------------------------------

    def _death(self, live: _Live, deadline: float) -> SandboxError:
        status = self._reap(live, max(deadline - time.monotonic(), 1.0))
        try:
            live.container.reload()
            state = live.container.attrs.get("State", {})
        except docker.errors.APIError:
            state = {}
        if state.get("OOMKilled"):
            return limit_exceeded("memory")
        return SandboxError(
            "the sandbox stopped without answering",
            code="sandbox.agent_crashed",
            hint="the job's code may have crashed the interpreter; the attempt is audited",
            details={"exit_code": status},
        )

    def _reap(self, live: _Live, timeout_s: float) -> int | None:
        """Wait for the container to exit (kill it past ``timeout_s``); its exit code."""
        try:
            result = live.container.wait(timeout=timeout_s)
            return int(result.get("StatusCode", -1))
        except (requests.exceptions.RequestException, docker.errors.APIError):
            self._kill(live)
            return None

    @staticmethod
    def _kill(live: _Live) -> None:
        # Close our end first: an agent blocked writing output it may no longer send would
        # otherwise hold the engine's attach copy (and the kill) until the socket drains.
        if live.stream is not None:
            live.stream.close()
        with contextlib.suppress(docker.errors.APIError):  # already stopped
            live.container.kill()

    def _remove(self, name: str) -> None:
        try:
            self._client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # removal already in progress
                raise _engine(exc) from exc


def read_answer(stream: SandboxStream, collector: OutputCollector, deadline: float) -> None:
    """Read until the answer is complete, the output limit passes, or EOF; TimeoutError at
    the deadline."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        chunk = stream.read(remaining)
        if not chunk:
            return
        if collector.feed(chunk):
            return
