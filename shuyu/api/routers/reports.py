"""Supervision (R6.1), quarterly reports (R6.4) and the public disclosure list (R6.5)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from shuyu.api.deps import Caller, DomainDep, allow
from shuyu.api.schemas import DisclosureView, QuarterlyView, SupervisionView
from shuyu.supervision import disclosure_list, quarterly_report, supervision_report

__all__ = ["router"]

router = APIRouter(prefix="/v1/reports", tags=["supervision and reports"])

SUPERVISORS = allow("authority", "auditor")
QUARTERLY = allow("authority", "auditor", "operator")
EVERYONE = allow()


@router.get("/supervision/{scenario_id}", response_model=SupervisionView)
def supervision(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(SUPERVISORS)],
    scenario_id: str,
    window_days: Annotated[int, Query(ge=1, le=3660)] = 90,
) -> Any:
    """Flags for over-scope, over-purpose, unused data and abnormal use (R6.1)."""
    return supervision_report(
        domain, caller.user_id, scenario_id, window_days=window_days
    ).to_dict()


@router.get("/quarterly/{scenario_id}", response_model=QuarterlyView)
def quarterly(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(QUARTERLY)],
    scenario_id: str,
    quarter: Annotated[str, Query(pattern=r"^(19|20|21)\d{2}-?[Qq][1-4]$", examples=["2026Q3"])],
) -> Any:
    """One quarter of a scenario: jobs, data used, outputs, budget, fees (R6.4)."""
    return quarterly_report(domain, caller.user_id, scenario_id, quarter).to_dict()


@router.get("/disclosure", response_model=list[DisclosureView])
def disclosure(domain: DomainDep, _: Annotated[Caller, Depends(EVERYONE)]) -> Any:
    """Every authorization in force: who, for what, which data, until when (R6.5)."""
    return [e.to_dict() for e in disclosure_list(domain)]
