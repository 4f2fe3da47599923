"""The root of shuyu's error tree.

It lives in ``policies`` because that is the lowest layer: every other package may import
it, so every error in the product shares one base, one shape and one set of kinds.

    ShuyuError                       code, message, hint, kind
    ├── policies.errors.PolicyError     scenario files, decisions, thresholds
    │   ├── ScenarioFileError            a scenario file is invalid (details: field by field)
    │   └── AccessDenied                 a decision refused a job (details: every reason)
    ├── enclave.errors.EnclaveError     keys, store, catalog, audit, metadata database
    ├── sandbox.errors.SandboxError     image, executor, container limits
    ├── egress.errors.EgressError       DP compiler, ledger, checks, reviews, releases
    └── shuyu.errors.ServiceError       settings, API, client

Each error carries a stable ``code`` (dotted, lower case, never reused for another
meaning), a ``message`` for people that says what was wrong, and a ``hint`` that says what
to do. ``kind`` is one of :data:`KINDS`; the single HTTP handler in ``shuyu.api`` maps a kind
to a status code, so domain code never knows about HTTP.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "KINDS",
    "AccessDenied",
    "ErrorKind",
    "PolicyError",
    "ScenarioFileError",
    "ShuyuError",
]

ErrorKind = Literal[
    "invalid",  # the input is wrong; fixing the input fixes it (HTTP 400/422)
    "unauthenticated",  # who you are is unknown (401)
    "forbidden",  # you are known, and not allowed (403)
    "not_found",  # the object does not exist (404)
    "conflict",  # the object's state does not allow it now (409)
    "exhausted",  # a budget or quota is spent (429 for rates, 409 for budgets)
    "too_large",  # a size limit was passed (413)
    "unavailable",  # a dependency (Docker, database, KMS) is not there (503)
    "internal",  # our bug; the message never carries data (500)
]
KINDS: tuple[str, ...] = ErrorKind.__args__  # type: ignore[attr-defined]


class ShuyuError(Exception):
    """Base of every error shuyu raises on purpose."""

    code: str = "shuyu.error"
    kind: ErrorKind = "internal"

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        code: str | None = None,
        kind: ErrorKind | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code
        if kind is not None:
            self.kind = kind
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        """The JSON body the API and the CLI show; never contains data values."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.details:
            body["details"] = self.details
        return body


class PolicyError(ShuyuError):
    """A policy file is invalid or a policy decision refused an action."""

    code = "policy.error"
    kind: ErrorKind = "invalid"


class ScenarioFileError(PolicyError):
    """A scenario file does not validate; ``details["errors"]`` names each bad field."""

    code = "policy.scenario_invalid"
    kind: ErrorKind = "invalid"


class AccessDenied(PolicyError):
    """A decision refused a job; ``details["reasons"]`` holds every reason, not just one."""

    code = "policy.denied"
    kind: ErrorKind = "forbidden"
