"""Releases, their signed manifests and archives, and the product registry (R5.4, R5.5).

Everyone may read the registry and the release list (who released what, from which
sources). Downloading a release is recorded with the receiver's identity (R4.2); an
operator downloads only its own organisation's products.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from egress.errors import ReleaseError
from egress.gate_tables import egress_releases
from egress.registry import get_product, list_products, record_download, withdraw_product
from egress.release import MANIFEST, PUBLIC_KEY, SIGNATURE
from shuyu.api.deps import Caller, DomainDep, allow
from shuyu.api.errors import ERROR_RESPONSES_FOR_FILES
from shuyu.api.schemas import ProductView, Reason, ReleaseView, SignedManifest
from shuyu.context import Domain

__all__ = ["products_router", "releases_router"]

releases_router = APIRouter(prefix="/v1/releases", tags=["releases"])
products_router = APIRouter(prefix="/v1/products", tags=["product registry"])

EVERYONE = allow()
DOWNLOADERS = allow("operator", "authority", "reviewer", "auditor")
AUTHORITY = allow("authority")


def _view(row: Any, product: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "job_id": row.job_id,
        "scenario_id": row.scenario_id,
        "manifest_sha256": row.manifest_sha256,
        "public_key": row.public_key,
        "released_by": row.released_by,
        "auto": bool(row.auto),
        "created_at": row.created_at.isoformat(),
        "product": product,
    }


def _release_row(domain: Domain, release_id: str) -> Any:
    with domain.engine.connect() as conn:
        row = conn.execute(
            sa.select(egress_releases).where(egress_releases.c.id == release_id)
        ).first()
    if row is None:
        raise ReleaseError(
            f"no release {release_id}",
            code="egress.release_unknown",
            kind="not_found",
            hint="GET /v1/releases lists the releases",
        )
    return row


@releases_router.get("", response_model=list[ReleaseView])
def list_releases(
    domain: DomainDep,
    _: Annotated[Caller, Depends(EVERYONE)],
    scenario_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Any:
    """Every release, newest first, with its registry entry."""
    q = sa.select(egress_releases).order_by(egress_releases.c.created_at.desc())
    if scenario_id:
        q = q.where(egress_releases.c.scenario_id == scenario_id)
    with domain.engine.connect() as conn:
        products = {p["release_id"]: p for p in list_products(conn, scenario_id=scenario_id)}
        return [_view(r, products.get(r.id)) for r in conn.execute(q)]


@releases_router.get("/{release_id}", response_model=ReleaseView)
def show_release(
    domain: DomainDep, _: Annotated[Caller, Depends(EVERYONE)], release_id: str
) -> Any:
    row = _release_row(domain, release_id)
    with domain.engine.connect() as conn:
        return _view(row, get_product(conn, release_id))


@releases_router.get("/{release_id}/manifest", response_model=SignedManifest)
def release_manifest(
    domain: DomainDep, _: Annotated[Caller, Depends(EVERYONE)], release_id: str
) -> Any:
    """The signed manifest: sources with versions and dates, checks, reviewers, file hashes."""
    folder = Path(_release_row(domain, release_id).path)
    return {
        "manifest": json.loads((folder / MANIFEST).read_bytes()),
        "signature": (folder / SIGNATURE).read_text(encoding="ascii").strip(),
        "public_key": (folder / PUBLIC_KEY).read_text(encoding="ascii").strip(),
    }


def _archive(folder: Path, root: str, fmt: str) -> bytes:
    buf = io.BytesIO()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, f"{root}/{p.relative_to(folder).as_posix()}")
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for p in files:
                tf.add(p, f"{root}/{p.relative_to(folder).as_posix()}", recursive=False)
    return buf.getvalue()


@releases_router.get(
    "/{release_id}/archive",
    response_class=Response,
    responses={
        **ERROR_RESPONSES_FOR_FILES,
        200: {
            "description": "The release folder: data, report.json, manifest and signature.",
            "content": {
                "application/zip": {"schema": {"type": "string", "format": "binary"}},
                "application/gzip": {"schema": {"type": "string", "format": "binary"}},
            },
        },
    },
)
def download_release(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(DOWNLOADERS)],
    release_id: str,
    format: Annotated[Literal["zip", "tar"], Query()] = "zip",
    purpose: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    """Download a release; who received it, and why, is recorded (R4.2)."""
    row = _release_row(domain, release_id)
    with domain.engine.begin() as conn:
        product = get_product(conn, release_id)
        if (
            "operator" in caller.roles
            and not {"authority", "reviewer", "auditor"} & set(caller.roles)
            and product["operator_org"] != caller.org
        ):
            raise ReleaseError(
                f"release {release_id} belongs to {product['operator_org']}",
                code="api.not_owner",
                kind="forbidden",
                hint="an operator downloads only its own organisation's products",
            )
        record_download(conn, release_id, caller.user_id, purpose=purpose, audit=domain.audit)
    body = _archive(Path(row.path), release_id, format)
    name = f"{release_id}.{'zip' if format == 'zip' else 'tar.gz'}"
    return Response(
        body,
        media_type="application/zip" if format == "zip" else "application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@products_router.get("", response_model=list[ProductView])
def list_registry(
    domain: DomainDep,
    _: Annotated[Caller, Depends(EVERYONE)],
    scenario_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[Literal["registered", "withdrawn"] | None, Query()] = None,
) -> Any:
    """The product registry (登记): every released product and its sources."""
    with domain.engine.connect() as conn:
        return list_products(conn, scenario_id=scenario_id, status=status)


@products_router.get("/{release_id}", response_model=ProductView)
def show_product(
    domain: DomainDep, _: Annotated[Caller, Depends(EVERYONE)], release_id: str
) -> Any:
    with domain.engine.connect() as conn:
        return get_product(conn, release_id)


@products_router.post("/{release_id}/withdraw", response_model=ProductView)
def withdraw(
    domain: DomainDep, caller: Annotated[Caller, Depends(AUTHORITY)], release_id: str, body: Reason
) -> Any:
    """Stop handing a product out; its record and downloads stay."""
    with domain.engine.begin() as conn:
        withdraw_product(conn, domain.audit, release_id, actor=caller.user_id, reason=body.reason)
        return get_product(conn, release_id)
