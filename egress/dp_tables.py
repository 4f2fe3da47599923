"""Tables of the privacy ledger: one budget row per scenario, every charge, every release.

``dp_budgets`` holds the running totals the charge check reads, and is the row a charge
locks (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises
writers) so two charges against one scenario are checked one after the other.
``dp_charges`` is the ledger proper — the totals can always be recomputed from it
(:meth:`egress.ledger.Ledger.verify`). ``dp_releases`` keeps each released answer under the
hash of its query, so a repeat is answered from here and charges nothing; the noisy table is
sealed at rest when the ledger has a key service.
"""

from __future__ import annotations

import sqlalchemy as sa

from enclave.db import metadata

__all__ = ["dp_budgets", "dp_charges", "dp_releases"]

_TS = sa.DateTime(timezone=True)
_AUTOINC = sa.BigInteger().with_variant(sa.Integer, "sqlite")

dp_budgets = sa.Table(
    "dp_budgets",
    metadata,
    sa.Column("scenario_id", sa.String(64), primary_key=True),
    # the scenario's total budget as last given (the scenario is the source of truth)
    sa.Column("epsilon_total", sa.Double, nullable=False),
    sa.Column("delta_total", sa.Double, nullable=False),
    # running totals of dp_charges: approximate zCDP and basic composition
    sa.Column("rho_spent", sa.Double, nullable=False, server_default="0"),
    sa.Column("delta_approx_spent", sa.Double, nullable=False, server_default="0"),
    sa.Column("epsilon_basic_spent", sa.Double, nullable=False, server_default="0"),
    sa.Column("delta_basic_spent", sa.Double, nullable=False, server_default="0"),
    sa.Column("charges", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", _TS, nullable=False),
)

dp_charges = sa.Table(
    "dp_charges",
    metadata,
    sa.Column("id", _AUTOINC, primary_key=True, autoincrement=True),
    sa.Column("scenario_id", sa.String(64), nullable=False, index=True),
    sa.Column("job_id", sa.String(64), nullable=False, unique=True),  # a job pays once
    sa.Column("query_key", sa.String(64), nullable=False),
    sa.Column("epsilon", sa.Double, nullable=False),
    sa.Column("delta", sa.Double, nullable=False),
    sa.Column("rho", sa.Double, nullable=False),
    sa.Column("delta_approx", sa.Double, nullable=False),
    sa.Column("pure", sa.Boolean, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

dp_releases = sa.Table(
    "dp_releases",
    metadata,
    sa.Column("scenario_id", sa.String(64), primary_key=True),
    # sha256 of normalized SQL + dataset versions + privacy parameters
    sa.Column("query_key", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),  # the job that paid
    sa.Column("normalized_sql", sa.Text, nullable=False),
    sa.Column("sealed", sa.Boolean, nullable=False),
    sa.Column("key_id", sa.String(128), nullable=True),
    sa.Column("result", sa.LargeBinary, nullable=False),  # Arrow IPC of the noisy table
    sa.Column("created_at", _TS, nullable=False),
)
