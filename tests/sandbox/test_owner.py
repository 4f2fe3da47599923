"""Containers left by a killed server are found by their owner label and removed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Any

import docker.errors
import pytest

from sandbox.owner import LABEL_OWNER, owner_alive, owner_label, reap_orphans


def _dead_owner() -> str:
    """The owner label of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    label = owner_label(proc.pid)
    proc.wait()
    return label


def test_an_owner_is_alive_while_its_process_runs_and_dead_after() -> None:
    assert owner_alive(owner_label()) is True
    assert owner_alive(_dead_owner()) is False
    # a reused pid with another start time is not the owner
    host_and_pid = owner_label().rsplit(":", 1)[0]
    assert owner_alive(f"{host_and_pid}:1") is False
    # another host or boot cannot be judged from here
    assert owner_alive(f"elsewhere/boot:{os.getpid()}:1") is None
    assert owner_alive("garbage") is None


@pytest.mark.docker
def test_reaping_removes_containers_of_a_dead_owner_only(
    docker_client: Any, sandbox_image_id: str
) -> None:
    def make(owner: str) -> Any:
        return docker_client.containers.create(
            sandbox_image_id,
            command=["--loop"],
            labels={LABEL_OWNER: owner, "org.shuyu.role": "warm"},
            network_disabled=True,
        )

    orphan, mine, foreign = make(_dead_owner()), make(owner_label()), make("other/b:1:1")
    try:
        assert reap_orphans(docker_client) >= 1
        left = {c.id for c in docker_client.containers.list(all=True)}
        assert orphan.id not in left
        assert mine.id in left and foreign.id in left
    finally:
        for c in (orphan, mine, foreign):
            with contextlib.suppress(docker.errors.APIError):  # already gone
                c.remove(force=True)
