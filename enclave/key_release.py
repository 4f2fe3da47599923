"""Key release: data keys go to a sandbox only when every claim about its job holds.

Before a sandbox starts, the host asks for the data keys of the job's columns with a set
of *claims*: the job id, the image the sandbox runs (its image ID), the policy hash the
job was authorized under, the columns it will read and the key ids it wants. The key
service releases the keys only when

* the job exists and is ``authorized`` or ``running``;
* the claimed image is the image this domain trusts (recorded by ``shuyu image build``);
* the claimed policy hash equals ``jobs.policy_hash``, stored when the job was authorized;
* every claimed column lies inside the scope the policy decision authorized, every
  dataset is active, and every column exists in its catalog entry;
* the key ids asked for are **exactly** the footer key plus one key per grade of the
  claimed columns: no more (a key for a column the job may not read), no fewer.

Each release and each refusal is recorded in ``key_releases`` (claims, result, reason —
never key material) and in the audit log. A refusal raises :class:`KeyReleaseRefused`.

This is **emulated attestation**: the claims are checked, not cryptographically attested.
The host that makes them is trusted code; the check catches wiring mistakes, stale images
and jobs whose policy changed, and it leaves a record of every key that left the service.
With a TEE, the image claim would be a signed measurement verified here instead.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from enclave.audit import AuditLog
from enclave.catalog import DatasetMeta
from enclave.db import metadata
from enclave.errors import KeyReleaseRefused
from enclave.keys import FOOTER, KeyService, data_key_id
from enclave.tables import datasets, jobs

__all__ = ["RELEASABLE_STATES", "KeyReleaseService", "ReleaseClaims", "key_releases"]

RELEASABLE_STATES: frozenset[str] = frozenset({"authorized", "running"})

key_releases = sa.Table(
    "key_releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("image_id", sa.String(80), nullable=False),  # claimed
    sa.Column("policy_hash", sa.String(64), nullable=False),  # claimed
    sa.Column("key_ids", sa.JSON, nullable=False),  # asked for, sorted; never key material
    sa.Column("columns", sa.JSON, nullable=False),  # claimed: dataset id -> columns
    sa.Column("result", sa.String(16), nullable=False),  # released | refused
    sa.Column("reason", sa.String(64), nullable=True),  # refusals: which claim failed
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Built once: every job's key release runs them.
_INSERT = key_releases.insert()
_JOB = sa.select(jobs.c.state, jobs.c.policy_hash).where(jobs.c.id == sa.bindparam("job_id"))
_DATASET = sa.select(datasets.c.status, datasets.c.meta).where(
    datasets.c.id == sa.bindparam("dataset_id")
)


@dataclass(frozen=True)
class ReleaseClaims:
    """What the host claims about the sandbox that will receive the keys."""

    job_id: str
    image_id: str  # "sha256:…" of the image the sandbox runs
    policy_hash: str
    columns: Mapping[str, Collection[str]]  # dataset id -> columns the job will read
    key_ids: frozenset[str]


class KeyReleaseService:
    """Checks claims, then hands out data keys in memory (never to disk or logs)."""

    def __init__(self, keys: KeyService, audit: AuditLog) -> None:
        self._keys = keys
        self._audit = audit

    def _resolve_key_ids(
        self, conn: Connection, columns: Mapping[str, Collection[str]]
    ) -> frozenset[str]:
        """Footer key + one key per grade of the columns, for each dataset (by id)."""
        needed: set[str] = set()
        for dataset_id, cols in columns.items():
            row = conn.execute(_DATASET, {"dataset_id": dataset_id}).first()
            if row is None or row.status != "active":
                raise _Mismatch("dataset_not_active")
            needed |= _key_ids_of(dataset_id, DatasetMeta.model_validate(row.meta), cols)
        return frozenset(needed)

    @staticmethod
    def key_ids_from_catalog(
        metas: Mapping[str, DatasetMeta], columns: Mapping[str, Collection[str]]
    ) -> frozenset[str]:
        """:meth:`required_key_ids` from catalog entries the host already holds (dataset id
        -> meta), without reading them again. The service still resolves the claim from the
        database when it checks it, so a host with a stale entry is refused."""
        needed: set[str] = set()
        try:
            for dataset_id, cols in columns.items():
                meta = metas.get(dataset_id)
                if meta is None:
                    return frozenset()
                needed |= _key_ids_of(dataset_id, meta, cols)
        except _Mismatch:
            return frozenset()
        return frozenset(needed)

    def required_key_ids(
        self, conn: Connection, columns: Mapping[str, Collection[str]]
    ) -> frozenset[str]:
        """The key ids a host should claim for these columns (dataset id -> columns): the
        footer key plus one per grade. Empty when they do not resolve (unknown or deleted
        dataset, unknown column), so that :meth:`release` refuses with the reason."""
        try:
            return self._resolve_key_ids(conn, columns)
        except _Mismatch:
            return frozenset()

    def release(
        self,
        engine: Engine,
        claims: ReleaseClaims,
        *,
        trusted_image_id: str,
        authorized: Mapping[str, Collection[str]],
        actor: str = "sandbox",
    ) -> dict[str, bytes]:
        """The data keys for ``claims.key_ids``, or :class:`KeyReleaseRefused`.

        ``trusted_image_id`` is the image this domain records as the one jobs run on;
        ``authorized`` is the policy decision's scope (dataset id -> columns).
        """
        with engine.begin() as conn:
            try:
                return self.release_in(
                    conn,
                    claims,
                    trusted_image_id=trusted_image_id,
                    authorized=authorized,
                    actor=actor,
                )
            except KeyReleaseRefused as exc:
                refused = exc  # its record commits: nothing else happened to roll back
        raise refused

    def release_in(
        self,
        conn: Connection,
        claims: ReleaseClaims,
        *,
        trusted_image_id: str,
        authorized: Mapping[str, Collection[str]],
        actor: str = "sandbox",
    ) -> dict[str, bytes]:
        """:meth:`release` in the caller's transaction (the run's claim and decision).

        A refusal is recorded and audited in ``conn`` before :class:`KeyReleaseRefused`
        is raised: the caller commits the transaction and then raises it, so the refusal
        is never rolled back with it.
        """
        try:
            self._check(conn, claims, trusted_image_id, authorized)
        except _Mismatch as mismatch:
            reason = mismatch.reason
        else:
            keys = self._keys.get_many(conn, sorted(claims.key_ids))
            self._record(conn, claims, "released", None, actor)
            self._audit.record(
                conn,
                actor=actor,
                action="key.release",
                target=claims.job_id,
                details={
                    "image_id": claims.image_id,
                    "policy_hash": claims.policy_hash,
                    "key_ids": sorted(claims.key_ids),
                },
            )
            return keys
        self._record(conn, claims, "refused", reason, actor)
        self._audit.record(
            conn,
            actor=actor,
            action="key.release",
            target=claims.job_id,
            result="denied",
            details={
                "reason": reason,
                "image_id": claims.image_id,
                "key_ids": sorted(claims.key_ids),
            },
        )
        raise KeyReleaseRefused(
            f"data keys for job {claims.job_id} were not released: {_REASONS[reason]}",
            hint="the job must be authorized, run on the recorded sandbox image "
            "(`shuyu image show`), under the policy it was authorized with, and ask for "
            "exactly the keys of the columns it may read",
            details={"reason": reason},
        )

    def _check(
        self,
        conn: Connection,
        claims: ReleaseClaims,
        trusted_image_id: str,
        authorized: Mapping[str, Collection[str]],
    ) -> None:
        job = conn.execute(_JOB, {"job_id": claims.job_id}).first()
        if job is None:
            raise _Mismatch("job_unknown")
        if job.state not in RELEASABLE_STATES:
            raise _Mismatch("job_state")
        if not trusted_image_id or claims.image_id != trusted_image_id:
            raise _Mismatch("image_mismatch")
        if not job.policy_hash or claims.policy_hash != job.policy_hash:
            raise _Mismatch("policy_mismatch")
        for dataset_id, cols in claims.columns.items():
            allowed = set(authorized.get(dataset_id, ()))
            if not cols or not set(cols) <= allowed:
                raise _Mismatch("scope_exceeded")
        if not claims.columns:
            raise _Mismatch("scope_exceeded")
        if claims.key_ids != self._resolve_key_ids(conn, claims.columns):
            raise _Mismatch("key_ids_mismatch")

    @staticmethod
    def _record(
        conn: Connection, claims: ReleaseClaims, result: str, reason: str | None, actor: str
    ) -> None:
        conn.execute(
            _INSERT,
            {
                "job_id": claims.job_id,
                "image_id": claims.image_id,
                "policy_hash": claims.policy_hash,
                "key_ids": sorted(claims.key_ids),
                "columns": {k: sorted(v) for k, v in sorted(claims.columns.items())},
                "result": result,
                "reason": reason,
                "actor": actor,
                "created_at": datetime.now(UTC),
            },
        )


def _key_ids_of(dataset_id: str, meta: DatasetMeta, cols: Collection[str]) -> set[str]:
    """The footer key plus one key per grade of ``cols``; ``column_unknown`` otherwise."""
    by_name = {c.name: c for c in meta.columns}
    needed = {data_key_id(dataset_id, FOOTER)}
    for col in cols:
        if col not in by_name:
            raise _Mismatch("column_unknown")
        needed.add(data_key_id(dataset_id, meta.column_grade(by_name[col])))
    return needed


_REASONS: dict[str, str] = {
    "job_unknown": "no such job",
    "job_state": "the job is not authorized or running",
    "image_mismatch": "the sandbox image is not the one this domain records",
    "policy_mismatch": "the policy hash differs from the one the job was authorized under",
    "scope_exceeded": "a claimed column lies outside the authorized scope",
    "dataset_not_active": "a dataset is unknown or deleted",
    "column_unknown": "a claimed column is not in the dataset's catalog entry",
    "key_ids_mismatch": "the keys asked for are not exactly those of the claimed columns",
}


class _Mismatch(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
