"""The domain's Ed25519 signing key: signs audit checkpoints and release manifests.

Created once by ``shuyu init`` (mode 0600, never overwritten). The public key is what an
outside party needs to verify a release or an exported checkpoint offline.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from enclave.errors import KeyMaterialError

__all__ = ["Signer", "create_key_file", "public_key_from_hex", "verify_signature"]


def create_key_file(path: Path) -> None:
    """Write a new Ed25519 private key with mode 0600; refuse to overwrite an existing one."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    _write_secret(path, raw)


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyMaterialError(
            f"key file {path} already exists; refusing to overwrite it",
            code="enclave.key_exists",
            kind="conflict",
            hint="overwriting a key would make existing data unreadable; move it away first "
            "if you really mean to start over",
        ) from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


class Signer:
    """Signs bytes with the domain key; holds the private key only in memory."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise KeyMaterialError(
                f"signing key {path} not found",
                code="enclave.signing_key_missing",
                hint="run `shuyu init` first",
            ) from exc
        if len(raw) != 32:
            raise KeyMaterialError(
                f"signing key {path} is not a 32-byte Ed25519 key",
                code="enclave.signing_key_invalid",
                hint="restore the key file from its backup",
            )
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def generate(cls) -> Signer:
        """An ephemeral signer, for tests."""
        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> str:
        return self._key.sign(data).hex()

    @property
    def public_key_hex(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            .hex()
        )

    def verify(self, data: bytes, signature_hex: str) -> bool:
        return verify_signature(self.public_key_hex, data, signature_hex)


def public_key_from_hex(public_hex: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))


def verify_signature(public_hex: str, data: bytes, signature_hex: str) -> bool:
    """True if ``signature_hex`` is the domain key's signature of ``data``."""
    try:
        public_key_from_hex(public_hex).verify(bytes.fromhex(signature_hex), data)
    except (InvalidSignature, ValueError):
        return False
    return True
