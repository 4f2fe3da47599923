"""Which process owns a sandbox container, so containers a dead server left behind are found.

A warm sandbox holds decrypted columns in memory for as long as it runs. If the server that
started it is killed (OOM, SIGKILL, a power cut of the service but not of the engine), the
container would live on with that data and no one to talk to. Every container shuyu starts
is labelled with its owner: this host's boot, the owning process's id and its start time
(which tells a live process from a later one that reused the id). When a warm pool starts,
:func:`reap_orphans` removes every labelled container whose owner is provably gone.
Containers of another host or boot are left alone: their owner cannot be checked here
(after a reboot the engine has stopped them anyway).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from functools import cache
from pathlib import Path
from typing import Any

import docker.errors

__all__ = ["LABEL_OWNER", "owner_alive", "owner_label", "reap_orphans"]

LABEL_OWNER = "org.shuyu.owner"

log = logging.getLogger(__name__)


@cache
def _host() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        boot = "unknown-boot"
    return f"{socket.gethostname()}/{boot}"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def owner_label(pid: int | None = None) -> str:
    """The owner label of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return f"{_host()}:{pid}:{_start_ticks(pid) or '?'}"


def owner_alive(label: str) -> bool | None:
    """True/False for an owner on this host's current boot; None when it cannot be told."""
    parts = label.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != _host() or not parts[1].isdigit():
        return None
    return _start_ticks(int(parts[1])) == parts[2]


def reap_orphans(client: Any) -> int:
    """Remove every shuyu container whose owning process is gone; how many."""
    removed = 0
    try:
        found = client.containers.list(all=True, filters={"label": LABEL_OWNER})
    except docker.errors.APIError:
        return 0
    for container in found:
        if owner_alive(container.labels.get(LABEL_OWNER, "")) is False:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
                removed += 1
    if removed:
        log.warning("removed %d sandbox container(s) left by a stopped server", removed)
    return removed
