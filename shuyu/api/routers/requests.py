"""Data requests (R2.4): the operator asks for a dataset in a scenario; its provider answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from enclave.errors import DataRequestError
from shuyu.api.deps import Caller, DomainDep, allow
from shuyu.api.schemas import CreateDataRequest, DataRequestView, DecideDataRequest

__all__ = ["router"]

router = APIRouter(prefix="/v1/requests", tags=["data requests"])

READERS = allow("authority", "provider", "operator", "auditor")
OPERATOR = allow("operator")
PROVIDER = allow("provider")


@router.get("", response_model=list[DataRequestView])
def list_requests(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(READERS)],
    scenario_id: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> Any:
    """Requests you may see: a provider's for its data, an operator's organisation's."""
    found = domain.requests.list_requests(caller.user_id, scenario_id=scenario_id, state=state)
    return [r.to_dict() for r in found]


@router.get("/{request_id}", response_model=DataRequestView)
def show_request(
    domain: DomainDep, caller: Annotated[Caller, Depends(READERS)], request_id: str
) -> Any:
    for r in domain.requests.list_requests(caller.user_id):
        if r.id == request_id:
            return r.to_dict()
    raise DataRequestError(
        f"no data request {request_id} that you may see",
        code="enclave.request_unknown",
        kind="not_found",
        hint="GET /v1/requests lists the requests you may see",
    )


@router.post("", response_model=DataRequestView, status_code=status.HTTP_201_CREATED)
def create_request(
    domain: DomainDep, caller: Annotated[Caller, Depends(OPERATOR)], body: CreateDataRequest
) -> Any:
    """Ask the dataset's provider for a dataset the scenario lists."""
    created = domain.requests.create(caller.user_id, body.scenario_id, body.dataset, body.note)
    return created.to_dict()


@router.post("/{request_id}/approve", response_model=DataRequestView)
def approve_request(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(PROVIDER)],
    request_id: str,
    body: DecideDataRequest,
) -> Any:
    """The provider approves a request for its own dataset."""
    return domain.requests.approve(caller.user_id, request_id, body.reason).to_dict()


@router.post("/{request_id}/refuse", response_model=DataRequestView)
def refuse_request(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(PROVIDER)],
    request_id: str,
    body: DecideDataRequest,
) -> Any:
    """The provider refuses, saying why (kept and shown to the operator)."""
    return domain.requests.refuse(caller.user_id, request_id, body.reason).to_dict()
