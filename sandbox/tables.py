"""Tables of the sandbox host side: the images jobs may run on.

``sandbox_images`` is the list of sandbox images this domain trusts, newest last. Jobs
run only on the newest recorded image, by its image ID (``sha256:…``), and the key
service releases data keys only to a sandbox claiming that same ID (emulated
attestation, see ``enclave/key_release.py``).
"""

from __future__ import annotations

import sqlalchemy as sa

from enclave.db import metadata

__all__ = ["sandbox_images"]

sandbox_images = sa.Table(
    "sandbox_images",
    metadata,
    sa.Column("image_id", sa.String(80), primary_key=True),  # "sha256:<64 hex>"
    sa.Column("content_hash", sa.String(64), nullable=False),  # of everything built into it
    sa.Column("method", sa.String(16), nullable=False),  # registry | offline
    sa.Column("tag", sa.String(200), nullable=False),  # local tag, for people; never run by tag
    sa.Column("recorded_by", sa.String(128), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
