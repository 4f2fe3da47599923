"""Errors of the sandbox host side.

SandboxError
├── EngineUnavailable   no Docker engine, or it refused us
├── ImageError          the sandbox image is missing or not the recorded digest
├── LimitExceeded       memory, pids, time, scratch or output limit hit; the job was killed
├── JobFailed           the agent returned an error code (never a message with data)
└── OutputRejected      what came back is not a valid answer; nothing of it is accepted
"""

from __future__ import annotations

from policies.errors import ErrorKind, ShuyuError

__all__ = [
    "EngineUnavailable",
    "ImageError",
    "JobFailed",
    "LimitExceeded",
    "OutputRejected",
    "SandboxError",
]


class SandboxError(ShuyuError):
    code = "sandbox.error"
    kind: ErrorKind = "internal"


class EngineUnavailable(SandboxError):
    code = "sandbox.engine_unavailable"
    kind: ErrorKind = "unavailable"


class ImageError(SandboxError):
    code = "sandbox.image"
    kind: ErrorKind = "unavailable"


class LimitExceeded(SandboxError):
    code = "sandbox.limit"
    kind: ErrorKind = "too_large"


class JobFailed(SandboxError):
    code = "sandbox.job_failed"
    kind: ErrorKind = "invalid"


class OutputRejected(SandboxError):
    """What the sandbox wrote is not a valid answer (bad frames, not Arrow, not skops)."""

    code = "sandbox.output_rejected"
    kind: ErrorKind = "invalid"
