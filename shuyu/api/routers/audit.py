"""Audit: export, verify and checkpoint the hash-chained log (auditor and authority)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from enclave.audit import AuditLog
from shuyu.api.deps import Caller, DomainDep, allow
from shuyu.api.errors import ERROR_RESPONSES_FOR_FILES
from shuyu.api.schemas import AuditCheckpoint, AuditEntryView, AuditVerification

__all__ = ["router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])

READERS = allow("auditor", "authority")
MAX_PAGE = 1000


@router.get("/entries", response_model=list[AuditEntryView])
def entries(
    domain: DomainDep,
    _: Annotated[Caller, Depends(READERS)],
    after_seq: Annotated[
        int, Query(ge=0, le=2**62, description="Entries after this sequence number.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    since: Annotated[datetime | None, Query(description="Only entries at or after.")] = None,
) -> Any:
    """A page of audit entries in order (page with ``after_seq``)."""
    with domain.engine.connect() as conn:
        return [e.__dict__ for e in AuditLog.entries(conn, since, after_seq=after_seq, limit=limit)]


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        **ERROR_RESPONSES_FOR_FILES,
        200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
    },
)
def export(
    domain: DomainDep,
    _: Annotated[Caller, Depends(READERS)],
    since: Annotated[datetime | None, Query(description="Only entries at or after.")] = None,
) -> StreamingResponse:
    """Every audit entry as JSON lines, the same format as `shuyu audit export`."""

    def lines() -> Any:
        with domain.engine.connect() as conn:
            for entry in AuditLog.entries(conn, since):
                yield entry.to_json() + "\n"

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="shuyu-audit.jsonl"'},
    )


@router.get("/verify", response_model=AuditVerification)
def verify(domain: DomainDep, _: Annotated[Caller, Depends(READERS)]) -> Any:
    """Check the hash chain and every signed checkpoint; names the first bad entry."""
    with domain.engine.connect() as conn:
        return domain.audit.verify(conn).__dict__


@router.post("/verify", response_model=AuditVerification)
def verify_against(
    domain: DomainDep, _: Annotated[Caller, Depends(READERS)], checkpoint: AuditCheckpoint
) -> Any:
    """Verify against a signed checkpoint exported earlier and kept outside the domain."""
    with domain.engine.connect() as conn:
        return domain.audit.verify(conn, against=checkpoint.model_dump()).__dict__


@router.post("/checkpoint", response_model=AuditCheckpoint | None)
def checkpoint(domain: DomainDep, caller: Annotated[Caller, Depends(READERS)]) -> Any:
    """Sign the current head now; keep the answer outside the domain (``POST /verify``)."""
    with domain.engine.begin() as conn:
        domain.audit.record(conn, actor=caller.user_id, action="audit.checkpoint", target="audit")
        return domain.audit.checkpoint(conn)
