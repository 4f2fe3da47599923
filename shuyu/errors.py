"""Errors of the composition root (settings, API, client), and the one map from kinds to HTTP.

ServiceError
├── SettingsError     a SHUYU_* setting is invalid
├── AuthError         no, bad, expired or revoked token
└── RemoteError       the client got an error from a server (carries the server's code)
"""

from __future__ import annotations

from policies.errors import ErrorKind, ShuyuError

__all__ = ["HTTP_STATUS", "AuthError", "RemoteError", "ServiceError", "SettingsError"]

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
