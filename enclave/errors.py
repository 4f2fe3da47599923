"""Errors of the enclave: keys, encrypted store, catalog, audit, metadata database.

EnclaveError
├── KeyError_          key file missing, wrong key, unwrap failed
├── StoreError         dataset files missing, tampered or truncated
├── CatalogError       META.yaml invalid (field by field), dataset unknown or refused
├── AuditError         chain broken, signature bad
├── IdentityError      user unknown or exists, bad role, bad personnel record
├── AuthenticationError token unknown, expired or revoked; user disabled
├── PermissionDenied   role, organisation or personnel gate refuses an action
├── ScenarioError      scenario unknown, exists, or in the wrong state
└── DataRequestError   data request unknown or in the wrong state
"""

from __future__ import annotations

from policies.errors import ErrorKind, ShuyuError

__all__ = [
    "AuditError",
    "AuthenticationError",
    "CatalogError",
    "DataRequestError",
    "EnclaveError",
    "IdentityError",
    "KeyMaterialError",
    "KeyReleaseRefused",
    "PermissionDenied",
    "ScenarioError",
    "StoreError",
]


class EnclaveError(ShuyuError):
    code = "enclave.error"
    kind: ErrorKind = "internal"


class KeyMaterialError(EnclaveError):
    code = "enclave.key"
    kind: ErrorKind = "unavailable"


class StoreError(EnclaveError):
    code = "enclave.store"
    kind: ErrorKind = "conflict"


class CatalogError(EnclaveError):
    code = "enclave.catalog"
    kind: ErrorKind = "invalid"


class AuditError(EnclaveError):
    code = "enclave.audit"
    kind: ErrorKind = "conflict"


class IdentityError(EnclaveError):
    """A user, role or personnel record is unknown, invalid or in the wrong state."""

    code = "enclave.identity"
    kind: ErrorKind = "invalid"


class AuthenticationError(EnclaveError):
    """A token is unknown, expired or revoked, or its user is disabled."""

    code = "enclave.auth"
    kind: ErrorKind = "unauthenticated"


class PermissionDenied(EnclaveError):
    """The user is known but their roles, organisation or personnel record do not allow it."""

    code = "enclave.forbidden"
    kind: ErrorKind = "forbidden"


class ScenarioError(EnclaveError):
    """A scenario is unknown, already exists, or its state does not allow the action."""

    code = "enclave.scenario"
    kind: ErrorKind = "conflict"


class DataRequestError(EnclaveError):
    """A data request is unknown, or its state or scenario does not allow the action."""

    code = "enclave.data_request"
    kind: ErrorKind = "conflict"


class KeyReleaseRefused(EnclaveError):
    """The key service refused to release data keys: a claim of the sandbox did not hold."""

    code = "enclave.key_release_refused"
    kind: ErrorKind = "forbidden"
