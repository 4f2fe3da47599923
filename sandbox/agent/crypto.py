"""The agent's copy of the KMS client that unwraps Parquet column keys with data keys.

Same wrap format as ``enclave/parquet_crypto.py`` (the agent may import nothing of ours):
``base64(nonce(12) || AES-256-GCM(key_bytes, aad=key_id))``. A test writes a file with the
enclave's client and reads it with this one, so the two stay in step.

Data keys arrive in the job line and live only in this process's memory. Asking for a key
that was not released is remembered, so the agent can report ``data.key_missing`` however
pyarrow wraps the failure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Mapping
from datetime import timedelta

import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KeyRing", "decode_keys"]

_NONCE = 12


def decode_keys(raw: Mapping[str, str]) -> dict[str, bytes]:
    """The job line's ``keys`` (base64) as bytes; a key that is not 256 bits is refused."""
    keys = {str(k): base64.b64decode(v, validate=True) for k, v in raw.items()}
    if any(len(v) != 32 for v in keys.values()):
        raise ValueError("a data key is not 256 bits")
    return keys


class _Client(pe.KmsClient):  # type: ignore[misc]
    def __init__(self, ring: KeyRing) -> None:
        super().__init__()
        self._ring = ring

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        raise PermissionError("the sandbox never writes encrypted files")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        key = self._ring.get(master_key_identifier)
        blob = base64.b64decode(wrapped_key)
        try:
            return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], master_key_identifier.encode())
        except InvalidTag:
            raise ValueError("data key does not match") from None


class KeyRing:
    """The data keys released to the current job, and the ones it asked for but lacked."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = dict(keys)
        self.missing: set[str] = set()
        self.used: dict[str, bytes] = {}  # key id -> sha256 of the key, as pyarrow asked

    def get(self, key_id: str) -> bytes:
        try:
            key = self._keys[key_id]
        except KeyError:
            self.missing.add(key_id)
            raise KeyError("data key was not released") from None
        self.used[key_id] = hashlib.sha256(key).digest()
        return key

    def holds(self, proof: Mapping[str, bytes]) -> bool:
        """Whether this ring holds exactly the keys (by id and digest) in ``proof``."""
        if not proof:
            return False
        for key_id, digest in proof.items():
            key = self._keys.get(key_id)
            if key is None or not hmac.compare_digest(hashlib.sha256(key).digest(), digest):
                return False
        return True

    def decryption_properties(self) -> pe.FileDecryptionProperties:
        # A unique instance id so pyarrow's client cache never serves one job's keys to
        # another job in the same (warm) process.
        config = pe.KmsConnectionConfig(kms_instance_id=uuid.uuid4().hex)
        factory = pe.CryptoFactory(lambda _cfg: _Client(self))
        return factory.file_decryption_properties(
            config, pe.DecryptionConfiguration(cache_lifetime=timedelta(seconds=1))
        )

    def clear(self) -> None:
        """Forget the keys (best effort: Python cannot scrub the bytes objects)."""
        self._keys.clear()
