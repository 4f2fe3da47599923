"""The product registry (产品登记, R5.5) and who received each product (R4.2).

Every release is registered with the catalog fields a product needs to be traced: its
name and summary, formats, the scenario and operator it was made for, and its sources —
each dataset with version, provider and acquisition date (R5.4). Each download names the
user who received it; both are audited. A product can be withdrawn, after which it is no
longer handed out (the record stays).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from egress.errors import ReleaseError
from egress.gate_tables import egress_downloads, egress_products, egress_releases
from enclave.audit import AuditLog

__all__ = [
    "downloads",
    "get_product",
    "list_products",
    "record_download",
    "register_product",
    "withdraw_product",
]

_INSERT_PRODUCT = egress_products.insert()  # built once: every release registers a product


def register_product(
    conn: Connection,
    *,
    release_id: str,
    name: str,
    summary: str,
    formats: Sequence[str],
    scenario_id: str,
    operator_org: str,
    sources: Sequence[dict[str, Any]],
) -> None:
    conn.execute(
        _INSERT_PRODUCT,
        {
            "release_id": release_id,
            "name": name,
            "summary": summary,
            "formats": sorted(set(formats)),
            "scenario_id": scenario_id,
            "operator_org": operator_org,
            "sources": list(sources),
            "status": "registered",
            "registered_at": datetime.now(UTC),
        },
    )


def _product(r: Any) -> dict[str, Any]:
    return {
        "release_id": r.release_id,
        "name": r.name,
        "summary": r.summary,
        "formats": list(r.formats),
        "scenario_id": r.scenario_id,
        "operator_org": r.operator_org,
        "sources": list(r.sources),
        "status": r.status,
        "registered_at": r.registered_at.isoformat() if r.registered_at else None,
        "withdrawn_at": r.withdrawn_at.isoformat() if r.withdrawn_at else None,
    }


def list_products(
    conn: Connection, *, scenario_id: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    q = sa.select(egress_products).order_by(
        egress_products.c.registered_at, egress_products.c.release_id
    )
    if scenario_id is not None:
        q = q.where(egress_products.c.scenario_id == scenario_id)
    if status is not None:
        q = q.where(egress_products.c.status == status)
    return [_product(r) for r in conn.execute(q)]


def get_product(conn: Connection, release_id: str) -> dict[str, Any]:
    r = conn.execute(
        sa.select(egress_products).where(egress_products.c.release_id == release_id)
    ).first()
    if r is None:
        raise ReleaseError(
            f"no released product {release_id}",
            code="egress.release_unknown",
            kind="not_found",
            hint="see `shuyu release list`; only approved outputs are ever released",
        )
    return _product(r)


def record_download(
    conn: Connection,
    release_id: str,
    user: str,
    *,
    purpose: str = "",
    audit: AuditLog | None = None,
) -> int:
    """Record that ``user`` received the product; refuses unknown or withdrawn products."""
    product = get_product(conn, release_id)
    if product["status"] != "registered":
        raise ReleaseError(
            f"product {release_id} was withdrawn",
            code="egress.release_withdrawn",
            kind="conflict",
            hint="a withdrawn product is no longer handed out",
        )
    res = conn.execute(
        egress_downloads.insert().values(
            release_id=release_id, user_id=user, purpose=purpose, created_at=datetime.now(UTC)
        )
    )
    if audit is not None:
        audit.record(
            conn,
            actor=user,
            action="release.download",
            target=release_id,
            details={"purpose": purpose},
        )
    pk = res.inserted_primary_key
    return int(pk[0]) if pk else 0


def downloads(conn: Connection, release_id: str) -> list[dict[str, Any]]:
    return [
        {"user": r.user_id, "purpose": r.purpose, "at": r.created_at.isoformat()}
        for r in conn.execute(
            sa.select(egress_downloads)
            .where(egress_downloads.c.release_id == release_id)
            .order_by(egress_downloads.c.id)
        )
    ]


def withdraw_product(
    conn: Connection, audit: AuditLog, release_id: str, *, actor: str, reason: str
) -> None:
    get_product(conn, release_id)
    conn.execute(
        egress_products.update()
        .where(egress_products.c.release_id == release_id)
        .values(status="withdrawn", withdrawn_at=datetime.now(UTC))
    )
    audit.record(
        conn, actor=actor, action="release.withdraw", target=release_id, details={"reason": reason}
    )


def release_path(conn: Connection, release_id: str) -> str:
    row = conn.execute(
        sa.select(egress_releases.c.path).where(egress_releases.c.id == release_id)
    ).first()
    if row is None:
        raise ReleaseError(
            f"no release {release_id}",
            code="egress.release_unknown",
            kind="not_found",
            hint="see `shuyu release list`",
        )
    return str(row.path)
