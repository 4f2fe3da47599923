"""AES-256-GCM sealing of what the gate keeps at rest, under data keys of the key service.

The gate's keys live in ``data_keys`` like every dataset key, wrapped by the master key:

* ``gate.outputs``  — outputs held between the gate and release;
* ``history.cells`` — the cell sketches differencing compares against;
* ``history.units`` — the salt of the keyed unit hashes (released to the sandbox's trusted
  statistics query, never stored anywhere else).

A sealed blob is ``nonce(12) || ciphertext+tag`` with associated data naming what it is
(``<table>|<row id>|<part>``), so a blob copied onto another row does not open.
"""

from __future__ import annotations

import contextlib
import os

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import Connection

from egress.errors import EgressError
from enclave.errors import KeyMaterialError
from enclave.keys import KeyService, data_key_id

__all__ = ["GATE_KEYS", "key_bytes", "open_sealed", "seal"]

GATE_KEYS: dict[str, tuple[str, str]] = {
    "outputs": ("gate", "outputs"),
    "cells": ("history", "cells"),
    "units": ("history", "units"),
}
_NONCE = 12


def key_bytes(conn: Connection, keys: KeyService, name: str) -> tuple[str, bytes]:
    """The key id and bytes of one gate key, created on first use."""
    owner, group = GATE_KEYS[name]
    key_id = data_key_id(owner, group)
    try:
        return key_id, keys.get(conn, key_id)
    except KeyMaterialError as exc:
        if exc.code != "enclave.key_unknown":
            raise
    # a savepoint, so a concurrent creator's win does not abort the caller's transaction
    with contextlib.suppress(sa.exc.IntegrityError), conn.begin_nested():
        keys.create(conn, owner, group)
    return key_id, keys.get(conn, key_id)


def seal(key: bytes, data: bytes, aad: str) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, data, aad.encode())


def open_sealed(key: bytes, blob: bytes, aad: str) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad.encode())
    except InvalidTag as exc:
        raise EgressError(
            f"a sealed gate record ({aad.split('|')[0]}) does not open: it was altered or moved",
            code="egress.sealed_broken",
            hint="treat this as a security incident; compare the database with its backup",
        ) from exc
