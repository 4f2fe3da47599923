"""Errors of the enclave: keys, encrypted store, catalog, audit, metadata database.

EnclaveError
├── KeyError_          key file missing, wrong key, unwrap failed
├── StoreError         dataset files missing, tampered or truncated
├── CatalogError       META.yaml invalid (field by field), dataset unknown or refused
└── AuditError         chain broken, signature bad
"""

from __future__ import annotations

from policies.errors import ErrorKind, ShuyuError

__all__ = ["AuditError", "CatalogError", "EnclaveError", "KeyMaterialError", "StoreError"]


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
