"""Errors of the composition root (settings, API, client), and the one map from kinds to HTTP.

ServiceError
├── SettingsError     a SHUYU_* setting is invalid
├── AuthError         no, bad, expired or revoked token
├── RemoteError       the client got an error from a server (carries the server's code)
│   └── Remote<Kind>  one subclass per kind (RemoteForbidden, RemoteNotFound, ...)
└── RateLimited       too many requests or running jobs for now; retry after a delay
"""

from __future__ import annotations

from typing import Any

from policies.errors import ErrorKind, ShuyuError

__all__ = [
    "HTTP_STATUS",
    "REMOTE_ERRORS",
    "AuthError",
    "NotReleased",
    "RateLimited",
    "RemoteConflict",
    "RemoteError",
    "RemoteExhausted",
    "RemoteForbidden",
    "RemoteInternal",
    "RemoteInvalid",
    "RemoteNotFound",
    "RemoteTooLarge",
    "RemoteUnauthenticated",
    "RemoteUnavailable",
    "ServiceError",
    "SettingsError",
    "http_status_of",
]

HTTP_STATUS: dict[str, int] = {
    "invalid": 422,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "exhausted": 409,
    "too_large": 413,
    "unavailable": 503,
    "internal": 500,
}


class ServiceError(ShuyuError):
    code = "service.error"
    kind: ErrorKind = "internal"


class SettingsError(ServiceError):
    code = "service.settings"
    kind: ErrorKind = "invalid"


class AuthError(ServiceError):
    code = "service.auth"
    kind: ErrorKind = "unauthenticated"


class RemoteError(ServiceError):
    code = "service.remote"
    status: int = 0  # the HTTP status the server answered
    request_id: str = ""  # the server's request id, to quote when reporting a problem


class RateLimited(ServiceError):
    """A per-token request rate or a per-scenario job limit is reached; HTTP 429.

    Unlike a spent budget (also kind ``exhausted``, HTTP 409), this passes with time, so it
    carries ``retry_after_s`` and the API answers 429 with a ``Retry-After`` header.
    """

    code = "service.rate_limited"
    kind: ErrorKind = "exhausted"

    def __init__(
        self, message: str, *, retry_after_s: int, hint: str = "", code: str | None = None
    ) -> None:
        super().__init__(message, hint=hint, code=code, details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


def http_status_of(exc: ShuyuError) -> int:
    """The HTTP status of an error: its kind's status, 429 for limits that pass with time."""
    if isinstance(exc, RateLimited):
        return 429
    return HTTP_STATUS.get(exc.kind, 500)


class RemoteInvalid(RemoteError):
    kind: ErrorKind = "invalid"


class RemoteUnauthenticated(RemoteError):
    kind: ErrorKind = "unauthenticated"


class RemoteForbidden(RemoteError):
    kind: ErrorKind = "forbidden"


class RemoteNotFound(RemoteError):
    kind: ErrorKind = "not_found"


class RemoteConflict(RemoteError):
    kind: ErrorKind = "conflict"


class RemoteExhausted(RemoteError):
    kind: ErrorKind = "exhausted"


class RemoteTooLarge(RemoteError):
    kind: ErrorKind = "too_large"


class RemoteUnavailable(RemoteError):
    kind: ErrorKind = "unavailable"


class RemoteInternal(RemoteError):
    kind: ErrorKind = "internal"


# The client raises the subclass named by the error body's ``kind``.
REMOTE_ERRORS: dict[str, type[RemoteError]] = {
    "invalid": RemoteInvalid,
    "unauthenticated": RemoteUnauthenticated,
    "forbidden": RemoteForbidden,
    "not_found": RemoteNotFound,
    "conflict": RemoteConflict,
    "exhausted": RemoteExhausted,
    "too_large": RemoteTooLarge,
    "unavailable": RemoteUnavailable,
    "internal": RemoteInternal,
}


class NotReleased(RemoteConflict):
    """A query the SDK waited for settled without a released answer: refused, failed,
    waiting for a reviewer, or still on its way. ``job`` is the job as the server last
    showed it (its state, error code and message)."""

    code = "client.not_released"

    def __init__(self, message: str, *, job: Any, hint: str = "") -> None:
        super().__init__(message, hint=hint, code=self.code)
        self.job = job
