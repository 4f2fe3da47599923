"""Tables of identity and authorization: users, roles, personnel, tokens, scenarios, requests.

The rules live in ``policies`` (roles, the personnel gate, the scenario format, the
decision); these tables only store the facts those rules are applied to. A scenario's
validated file is kept whole in ``scenarios.spec`` next to the hash it was granted under,
so a decision can detect a stored policy that was altered after the grant.

Timestamps are written in UTC by the code. SQLite hands timezone-aware columns back
without their offset, so readers pass them through :func:`from_db_time`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from enclave.db import metadata

__all__ = [
    "api_tokens",
    "data_requests",
    "from_db_time",
    "fusion_approvals",
    "personnel",
    "scenarios",
    "to_db_time",
    "user_roles",
    "users",
]


def to_db_time(value: datetime) -> datetime:
    """An aware datetime as UTC, the form every timestamp is stored in."""
    if value.tzinfo is None:
        raise ValueError("refusing to store a naive datetime; give it a timezone")
    return value.astimezone(UTC)


def from_db_time(value: datetime | None) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (SQLite drops the offset)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),  # login name, e.g. "wang.li"
    sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("org", sa.String(128), nullable=False, index=True),  # organisation code
    sa.Column("status", sa.String(16), nullable=False),  # active | disabled
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("disabled_reason", sa.Text, nullable=True),
)

user_roles = sa.Table(
    "user_roles",
    metadata,
    sa.Column("user_id", sa.String(128), sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),  # policies.roles.ROLES
)

# R4.1: the steps an authority has recorded for a person. One row per user; each change
# is also in the audit log, which keeps the history.
personnel = sa.Table(
    "personnel",
    metadata,
    sa.Column("user_id", sa.String(128), sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("real_name_verified_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("real_name_ref", sa.String(128), nullable=True),  # never the ID number itself
    sa.Column("trained_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("training_ref", sa.String(128), nullable=True),
    sa.Column("agreement_ref", sa.String(128), nullable=True),
    sa.Column("agreement_signed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("agreement_valid_from", sa.DateTime(timezone=True), nullable=True),
    sa.Column("agreement_valid_until", sa.DateTime(timezone=True), nullable=True),  # exclusive
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(128), nullable=False),
)

# API tokens are stored only as the SHA-256 of the token (see enclave.identity for why a
# fast hash is right for a 256-bit random token).
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # "tok_<hex>", public, for revoking
    sa.Column("user_id", sa.String(128), sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.String(128), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_by", sa.String(128), nullable=True),
)

scenarios = sa.Table(
    "scenarios",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # "S-2026-014"
    sa.Column("operator_org", sa.String(128), nullable=False, index=True),
    sa.Column("use_class", sa.String(16), nullable=False),  # public_welfare | industry
    sa.Column("state", sa.String(16), nullable=False, index=True),  # policies.decision states
    sa.Column("spec", sa.JSON, nullable=False),  # the validated scenario file, as JSON
    sa.Column("policy_hash", sa.String(64), nullable=False),  # sha256 of canonical spec
    sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),  # exclusive
    sa.Column("granted_by", sa.String(128), nullable=False),
    sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("state_by", sa.String(128), nullable=True),
    sa.Column("state_reason", sa.Text, nullable=True),
    # when the scenario's retained data was crypto-shredded (revocation or expiry)
    sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True),
)

# R2.4: an operator asks for a dataset within a scenario; its provider answers.
data_requests = sa.Table(
    "data_requests",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # "R-<hex>"
    sa.Column(
        "scenario_id", sa.String(64), sa.ForeignKey("scenarios.id"), nullable=False, index=True
    ),
    sa.Column("dataset", sa.String(128), nullable=False),  # catalog name
    sa.Column("provider_org", sa.String(128), nullable=False, index=True),
    sa.Column("requested_by", sa.String(128), nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("state", sa.String(16), nullable=False),  # pending | approved | refused
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
)

# R2.6: an authority's approval to fuse an operator-owned dataset with public data.
fusion_approvals = sa.Table(
    "fusion_approvals",
    metadata,
    sa.Column("scenario_id", sa.String(64), sa.ForeignKey("scenarios.id"), primary_key=True),
    sa.Column("dataset", sa.String(128), primary_key=True),
    sa.Column("approved_by", sa.String(128), nullable=False),
    sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
