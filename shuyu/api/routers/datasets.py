"""Datasets and the catalog: metadata only, never a row (every role reads the catalog).

Importing reads a file already placed on the domain host, in ``$SHUYU_HOME/inbox/``: a
dataset is far larger than an API request, and raw data should reach the domain over the
provider's own controlled channel, not through a web form. The path is checked to stay
inside the inbox, so an import cannot read other files of the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from enclave.catalog import parse_meta
from enclave.store import DatasetRecord
from policies.errors import ShuyuError
from shuyu.api.deps import Caller, DomainDep, allow
from shuyu.api.schemas import DatasetView, ImportDataset
from shuyu.context import Domain

__all__ = ["INBOX", "router"]

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

INBOX = "inbox"  # under $SHUYU_HOME
EVERYONE = allow()
IMPORTERS = allow("authority", "provider")


def view(r: DatasetRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "version": r.version,
        "status": r.status,
        "kind": r.kind,
        "owner_org": r.owner_org,
        "grade": r.grade,
        "num_rows": r.num_rows,
        "num_bytes": r.num_bytes,
        "content_sha256": r.content_sha256,
        "unit_bound_verified": r.unit_bound_verified,
        "created_at": r.created_at.isoformat(),
        "deleted_at": r.deleted_at.isoformat() if r.deleted_at else None,
        "meta": r.meta.to_json(),
    }


def _inbox_file(domain: Domain, relative: str) -> Path:
    inbox = (domain.settings.home / INBOX).resolve()
    path = (inbox / relative).resolve()
    if not path.is_relative_to(inbox) or path == inbox:
        raise ShuyuError(
            f"source {relative!r} is not a file in the domain's inbox",
            code="api.source_outside_inbox",
            kind="invalid",
            hint=f"place the file in {inbox} on the domain host and give its name",
        )
    return path


def _own_or_authority(caller: Caller, owner_org: str, what: str) -> None:
    if "authority" not in caller.roles and owner_org != caller.org:
        raise ShuyuError(
            f"{what} belongs to {owner_org}; you are of {caller.org}",
            code="api.not_owner",
            kind="forbidden",
            hint="a provider manages only its own datasets; ask the authority",
        )


@router.get("", response_model=list[DatasetView])
def list_datasets(
    domain: DomainDep,
    _: Annotated[Caller, Depends(EVERYONE)],
    include_deleted: Annotated[bool, Query(description="Also list tombstones.")] = False,
) -> Any:
    """The catalog: every dataset version with its metadata (no data)."""
    return [view(r) for r in domain.store.list_datasets(include_deleted=include_deleted)]


@router.get("/{name}", response_model=DatasetView)
def show_dataset(
    domain: DomainDep,
    _: Annotated[Caller, Depends(EVERYONE)],
    name: str,
    version: Annotated[int | None, Query(ge=1, le=2**31)] = None,
) -> Any:
    """One dataset's catalog entry and data items (no data)."""
    return view(domain.store.get(name, version))


@router.post("", response_model=DatasetView, status_code=status.HTTP_201_CREATED)
def import_dataset(
    domain: DomainDep, caller: Annotated[Caller, Depends(IMPORTERS)], body: ImportDataset
) -> Any:
    """Encrypt and store a file from the domain's inbox under a catalog entry."""
    meta = parse_meta(body.meta, domain.store.grades, source="meta")
    _own_or_authority(caller, meta.provider.code, f"dataset {body.name!r}")
    source = _inbox_file(domain, body.source)
    return view(
        domain.store.import_dataset(source, name=body.name, meta=meta, actor=caller.user_id)
    )


@router.delete("/{name}", response_model=list[DatasetView])
def delete_dataset(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(IMPORTERS)],
    name: str,
    version: Annotated[int | None, Query(ge=1, le=2**31)] = None,
) -> Any:
    """Crypto-shred a dataset (all versions, or one): keys destroyed, irreversible (R6.3)."""
    _own_or_authority(caller, domain.store.get(name, version).owner_org, f"dataset {name!r}")
    return [
        view(r) for r in domain.store.delete_dataset(name, actor=caller.user_id, version=version)
    ]
