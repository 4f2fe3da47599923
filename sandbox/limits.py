"""Resource limits of one sandbox, as a plain value the composition root builds from settings.

Sandbox code never reads settings: ``shuyu`` builds a :class:`SandboxLimits` from
``Settings.sandbox_*`` and passes it in, so tests can use tiny limits directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["LIMIT_NAMES", "SandboxLimits"]

# The limits a job can hit; each names the ``limit`` in LimitExceeded's details.
LIMIT_NAMES: tuple[str, ...] = ("memory", "pids", "cpu", "time", "scratch", "output")


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int = 2 * 1024**3  # RAM, and RAM+swap: no swap at all
    pids_limit: int = 128  # processes + threads
    cpus: float = 1.0  # CPU share (nano_cpus)
    tmpfs_bytes: int = 256 * 1024**2  # /tmp scratch (counts against memory too)
    timeout_s: float = 300.0  # wall clock per job; then the container is killed
    max_output_bytes: int = 64 * 1024**2  # everything the agent writes for one job
    runtime: Literal["runc", "runsc"] = "runc"  # runsc = gVisor

    @property
    def threads(self) -> int:
        """Worker threads a job's engines should use: the CPU share, at least one."""
        return max(1, int(self.cpus))
