"""Parquet modular encryption with shuyu's data keys (pyarrow ``AES_GCM_V1``, encrypted footer).

pyarrow generates a fresh key per column per file and asks a "KMS client" to wrap it
with a named master key. Here the named key is a shuyu *data key* (``<dataset>.<grade>``
or ``<dataset>.footer``), held in memory. The wrap format is AES-256-GCM with the key id
as associated data: ``base64(nonce(12) || ciphertext || tag)``.

The in-container agent (``sandbox/agent/crypto.py``) reads the same format with its own
copy of :class:`_DataKeyClient` — it may import nothing of ours — and a test keeps the two
in step. A column whose data key was not released cannot be decrypted: scope is enforced
by cryptography as well as by policy.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Mapping
from datetime import timedelta

import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.keys import FOOTER, data_key_id

__all__ = ["decryption_properties", "encryption_properties"]


class _DataKeyClient(pe.KmsClient):  # type: ignore[misc]
    def __init__(self, keys: Mapping[str, bytes]) -> None:
        super().__init__()
        self._keys = dict(keys)

    def _aead(self, key_id: str) -> AESGCM:
        try:
            return AESGCM(self._keys[key_id])
        except KeyError:
            raise KeyError(f"data key {key_id} was not released") from None

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        nonce = os.urandom(12)
        ct = self._aead(master_key_identifier).encrypt(
            nonce, key_bytes, master_key_identifier.encode()
        )
        return base64.b64encode(nonce + ct).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        blob = base64.b64decode(wrapped_key)
        try:
            return self._aead(master_key_identifier).decrypt(
                blob[:12], blob[12:], master_key_identifier.encode()
            )
        except InvalidTag:
            raise ValueError(f"data key {master_key_identifier} does not match") from None


def _factory(keys: Mapping[str, bytes]) -> tuple[pe.CryptoFactory, pe.KmsConnectionConfig]:
    # A unique instance id per factory so pyarrow's client cache never hands one job's keys
    # to another caller in the same process.
    config = pe.KmsConnectionConfig(kms_instance_id=uuid.uuid4().hex)
    return pe.CryptoFactory(lambda _cfg: _DataKeyClient(keys)), config


def encryption_properties(
    dataset_id: str, keys: Mapping[str, bytes], columns_by_grade: Mapping[str, list[str]]
) -> pe.FileEncryptionProperties:
    """File encryption properties: each grade's columns under that grade's data key."""
    factory, config = _factory(keys)
    enc = pe.EncryptionConfiguration(
        footer_key=data_key_id(dataset_id, FOOTER),
        column_keys={data_key_id(dataset_id, g): cols for g, cols in columns_by_grade.items()},
        encryption_algorithm="AES_GCM_V1",
        plaintext_footer=False,
        double_wrapping=False,
        data_key_length_bits=256,
        internal_key_material=True,
        cache_lifetime=timedelta(minutes=5),
    )
    return factory.file_encryption_properties(config, enc)


def decryption_properties(keys: Mapping[str, bytes]) -> pe.FileDecryptionProperties:
    factory, config = _factory(keys)
    return factory.file_decryption_properties(
        config, pe.DecryptionConfiguration(cache_lifetime=timedelta(minutes=5))
    )
