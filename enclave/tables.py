"""Core tables of the enclave: datasets and their keys, jobs, and the audit log.

The ``jobs`` table lives here, in the lowest layer that stores anything, because every
package above refers to a job: the key service checks its claims, the ledger charges it,
the gate reviews it, the service orchestrates it.
"""

from __future__ import annotations

import sqlalchemy as sa

from enclave.db import metadata

__all__ = [
    "JOB_STATES",
    "TERMINAL_JOB_STATES",
    "audit_checkpoints",
    "audit_log",
    "data_keys",
    "datasets",
    "jobs",
]

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # "ds_<uuid hex>"
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),  # increases with each re-import
    sa.Column("status", sa.String(16), nullable=False),  # active | deleted
    # public | social (operator-owned) | derived (kept inside the domain by a job)
    sa.Column("kind", sa.String(16), nullable=False, server_default="public"),
    sa.Column("owner_org", sa.String(128), nullable=False),  # provider or operator org code
    sa.Column("grade", sa.String(16), nullable=False),  # highest column grade
    sa.Column("meta", sa.JSON, nullable=False),  # the validated META.yaml (catalog + columns)
    sa.Column("path", sa.String(512), nullable=False),  # folder under the store, relative
    sa.Column("num_rows", sa.BigInteger, nullable=False),
    sa.Column("num_bytes", sa.BigInteger, nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False),  # of the encrypted files
    # True when the import verified no privacy unit owns more rows than declared
    sa.Column("unit_bound_verified", sa.Boolean, nullable=False, server_default=sa.text("false")),
    sa.Column("scenario_id", sa.String(64), nullable=True),  # derived tables: owning scenario
    sa.Column("lineage", sa.JSON, nullable=True),  # derived tables: sources, job, code hash
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_datasets_name_status", "name", "status"),
)

data_keys = sa.Table(
    "data_keys",
    metadata,
    sa.Column("key_id", sa.String(128), primary_key=True),  # "<dataset id>.<grade>"
    sa.Column("dataset_id", sa.String(64), nullable=False, index=True),
    sa.Column("grade", sa.String(16), nullable=False),
    # the 256-bit data key, wrapped by the master key; NULL once crypto-shredded
    sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
)

JOB_STATES: tuple[str, ...] = (
    "submitted",
    "authorized",
    "running",
    "computed",
    "gated",
    "pending_review",
    "auto_released",
    "approved",
    "released",
    "refused",
    "failed",
    "rejected",
    "cancelled",
    "expired",
)
TERMINAL_JOB_STATES: frozenset[str] = frozenset(
    {"released", "auto_released", "refused", "failed", "rejected", "cancelled", "expired"}
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # "J-<uuid hex>"
    sa.Column("scenario_id", sa.String(64), nullable=False),
    sa.Column("submitter", sa.String(128), nullable=False),  # user id
    sa.Column("kind", sa.String(16), nullable=False),  # sql | python
    sa.Column("output_mode", sa.String(32), nullable=False),  # dp_aggregate|sdc_aggregate|model
    sa.Column("code", sa.Text, nullable=False),  # the SQL or Python as submitted
    sa.Column("code_sha256", sa.String(64), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),  # epsilon, accuracy target, datasets...
    sa.Column("state", sa.String(32), nullable=False, index=True),
    sa.Column("error_code", sa.String(64), nullable=True),  # a code, never data
    sa.Column("error_message", sa.Text, nullable=True),  # written by trusted code only
    sa.Column("policy_hash", sa.String(64), nullable=True),
    sa.Column("result", sa.LargeBinary, nullable=True),  # gated output, encrypted at rest
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # Scenario then state: every submit counts the scenario's jobs in progress (the
    # per-scenario concurrency limit). With an index on scenario_id alone SQLite walked
    # all the scenario's jobs, finished ones included: 2.5 ms a submit at 7,000 jobs,
    # growing with history. The prefix still serves lookups by scenario alone.
    sa.Index("ix_jobs_scenario_id_state", "scenario_id", "state"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("ts", sa.String(40), nullable=False),  # ISO-8601 UTC, part of the hash
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(256), nullable=False),
    sa.Column("result", sa.String(32), nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # canonical JSON, part of the hash
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),  # Ed25519, hex
)
