"""The Docker engine client, with engine errors turned into our own."""

from __future__ import annotations

import docker
import docker.errors

from sandbox.errors import EngineUnavailable

__all__ = ["docker_client", "has_runtime"]

# The docker CLI here may be newer than the engine (client 28, engine 20.10): negotiate.
API_VERSION = "auto"


def docker_client(timeout_s: int = 120) -> docker.DockerClient:
    """A client for the local engine; :class:`EngineUnavailable` when there is none."""
    try:
        client = docker.from_env(version=API_VERSION, timeout=timeout_s)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise EngineUnavailable(
            f"no Docker engine answers: {exc}",
            hint="start it with `bash scripts/ensure-docker.sh` (as root), or check DOCKER_HOST",
        ) from exc
    return client


def has_runtime(client: docker.DockerClient, runtime: str) -> bool:
    """Whether the engine knows an OCI runtime by this name (e.g. ``runsc`` for gVisor)."""
    runtimes = client.info().get("Runtimes") or {}
    return runtime in runtimes
