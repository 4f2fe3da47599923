"""Tables of the egress gate: reports, held outputs, reviews, releases, the product
registry, downloads, and the cell history that differencing compares against.

Everything that could carry data is encrypted at rest with a data key from the key service
(``gate.outputs`` for held outputs, ``history.cells`` for cell sketches): the metadata
database never holds an output value or a unit hash in the clear.
"""

from __future__ import annotations

import sqlalchemy as sa

from enclave.db import metadata

__all__ = [
    "egress_cell_history",
    "egress_cell_history_datasets",
    "egress_downloads",
    "egress_outputs",
    "egress_products",
    "egress_releases",
    "egress_reports",
    "egress_reviews",
]

_TS = sa.DateTime(timezone=True)
_AUTOINC = sa.BigInteger().with_variant(sa.Integer, "sqlite")

egress_reports = sa.Table(
    "egress_reports",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("verdict", sa.String(16), nullable=False),  # blocked | needs_review | clean
    sa.Column("route", sa.String(32), nullable=False),  # refused | pending_review | auto_released
    sa.Column("report", sa.JSON, nullable=False),  # EgressReport.to_dict(): never a value
    sa.Column("report_sha256", sa.String(64), nullable=False),  # of the canonical JSON
    sa.Column("required_reviewers", sa.Integer, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

# Outputs held between the gate and release, encrypted; deleted when a job is rejected.
egress_outputs = sa.Table(
    "egress_outputs",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),  # mode, measures, keys, datasets, shape
    sa.Column("key_id", sa.String(128), nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),  # nonce || AES-256-GCM(Arrow IPC)
    sa.Column("created_at", _TS, nullable=False),
)

egress_reviews = sa.Table(
    "egress_reviews",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # "RV-<hex>"
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("reviewer", sa.String(128), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # comment|approve|reject|send_back
    sa.Column("answers", sa.JSON, nullable=True),  # the four questions of R1.3
    sa.Column("text", sa.Text, nullable=False),  # reason or comment
    sa.Column("created_at", _TS, nullable=False),
)

egress_releases = sa.Table(
    "egress_releases",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # "R-<hex>"
    sa.Column("job_id", sa.String(64), nullable=False, unique=True),
    sa.Column("scenario_id", sa.String(64), nullable=False, index=True),
    sa.Column("path", sa.String(512), nullable=False),  # folder under the releases dir
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),  # Ed25519 over manifest.json
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("released_by", sa.String(128), nullable=False),
    sa.Column("auto", sa.Boolean, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

# The product registry (登记, R5.5): one entry per release, with its catalog fields.
egress_products = sa.Table(
    "egress_products",
    metadata,
    sa.Column("release_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("formats", sa.JSON, nullable=False),
    sa.Column("scenario_id", sa.String(64), nullable=False, index=True),
    sa.Column("operator_org", sa.String(128), nullable=False),
    sa.Column("sources", sa.JSON, nullable=False),  # datasets, versions, providers, dates
    sa.Column("status", sa.String(16), nullable=False),  # registered | withdrawn
    sa.Column("registered_at", _TS, nullable=False),
    sa.Column("withdrawn_at", _TS, nullable=True),
)

# Who received which product (R4.2).
egress_downloads = sa.Table(
    "egress_downloads",
    metadata,
    sa.Column("id", _AUTOINC, primary_key=True, autoincrement=True),
    sa.Column("release_id", sa.String(64), nullable=False, index=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

# One row per gated output with unit sets: the sketches differencing compares against.
egress_cell_history = sa.Table(
    "egress_cell_history",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # "H-<hex>"
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("scenario_id", sa.String(64), nullable=False),
    sa.Column("output_name", sa.String(128), nullable=False),
    sa.Column("datasets", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | released
    sa.Column("cells", sa.Integer, nullable=False),
    sa.Column("key_id", sa.String(128), nullable=False),
    sa.Column("sketch", sa.LargeBinary, nullable=False),  # encrypted CellSketches
    sa.Column("iblt", sa.LargeBinary, nullable=False),  # encrypted Iblt
    sa.Column("created_at", _TS, nullable=False),
)

egress_cell_history_datasets = sa.Table(
    "egress_cell_history_datasets",
    metadata,
    sa.Column("history_id", sa.String(64), primary_key=True),
    sa.Column("dataset", sa.String(128), primary_key=True, index=True),
)
