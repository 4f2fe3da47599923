"""Container hardening: every flag the sandbox runs with, in one place, each with its reason.

Used for every sandbox container (cold jobs, warm sessions) and by the attack tests, so
what is tested is what runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docker.types import LogConfig, Ulimit

from sandbox.limits import SandboxLimits

__all__ = ["DATA_MOUNT", "SANDBOX_USER", "hardened_container_config"]

SANDBOX_USER = "10001:10001"
DATA_MOUNT = "/data"
SCRATCH = "/tmp"  # noqa: S108 - a private tmpfs inside the container


def hardened_container_config(
    limits: SandboxLimits, store_dir: Path, store_gid: int | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create`` that make the container the boundary.

    ``store_gid``: the group that may read the granted dataset folders
    (:func:`sandbox.store_access.grant_sandbox_read`), when it is not the sandbox's own.
    """
    return {
        # No network at all: the only interface is lo. No DNS, no TCP/UDP anywhere.
        "network_mode": "none",
        # Nothing in the image can be changed; only /tmp (below) is writable.
        "read_only": True,
        # Scratch space: in memory, capped, and nothing on it can be executed or setuid.
        "tmpfs": {SCRATCH: f"rw,noexec,nosuid,nodev,size={limits.tmpfs_bytes}"},
        # No Linux capabilities (no raw sockets, no mounts, no chown, no ptrace …).
        "cap_drop": ["ALL"],
        # setuid binaries cannot raise privileges. Docker's default seccomp profile stays
        # on: we never pass "seccomp=unconfined".
        "security_opt": ["no-new-privileges"],
        # Not root inside the container either; in the store's group only to read it.
        "user": SANDBOX_USER,
        "group_add": [str(store_gid)] if store_gid not in (None, 10001) else [],
        # Memory == memory+swap: the job gets no swap, so a memory bomb is OOM-killed at
        # the limit instead of thrashing the host.
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,
        # Processes + threads: a fork bomb stops at this many.
        "pids_limit": limits.pids_limit,
        # CPU share in billionths of a CPU.
        "nano_cpus": int(limits.cpus * 1_000_000_000),
        # No core dumps: a crashing job must not write its memory (decrypted data) anywhere.
        "ulimits": [Ulimit(name="core", soft=0, hard=0)],
        # Docker keeps nothing the container writes: its stdout is the answer, read once by
        # the host from the attach stream; stderr is discarded. No log file with data in it.
        "log_config": LogConfig(type=LogConfig.types.NONE),
        # The only host path: the encrypted dataset store, read-only. Never the Docker
        # socket, never a device, never another host path.
        "volumes": {str(store_dir): {"bind": DATA_MOUNT, "mode": "ro"}},
        "devices": [],
        "privileged": False,
        # Own IPC namespace, no shared memory with anything on the host.
        "ipc_mode": "private",
        # No environment from the host (keys never travel by environment anyway).
        "environment": {},
        # gVisor (runsc) when the settings say so: a user-space kernel under the job.
        "runtime": limits.runtime,
        # stdin carries the job line (with the data keys); no TTY so stdout stays binary.
        "stdin_open": True,
        "tty": False,
        "working_dir": SCRATCH,
        "hostname": "sandbox",
    }
