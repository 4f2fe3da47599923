"""Scenario authorizations (R2, R6): the authority grants and changes them; all may read.

Who is authorized, for what, and until when is public by rule (R6.5), so every role lists
and reads scenarios; only the authority grants, suspends, resumes, revokes and approves
the fusion of operator-owned data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from enclave.scenarios import ScenarioRecord
from policies.scenario import Scenario
from shuyu.api.deps import Caller, DomainDep, allow
from shuyu.api.schemas import ApproveFusion, Reason, ScenarioView

__all__ = ["router"]

router = APIRouter(prefix="/v1/scenarios", tags=["scenarios"])

EVERYONE = allow()
AUTHORITY = allow("authority")


def view(rec: ScenarioRecord) -> dict[str, Any]:
    out = rec.to_dict(datetime.now(UTC))
    since = out.get("state_since")
    out["state_since"] = since.isoformat() if isinstance(since, datetime) else since
    return out


@router.get("", response_model=list[ScenarioView])
def list_scenarios(
    domain: DomainDep,
    _: Annotated[Caller, Depends(EVERYONE)],
    state: Annotated[str | None, Query(max_length=16)] = None,
    operator_org: Annotated[str | None, Query(max_length=128)] = None,
) -> Any:
    """Every granted scenario: who is authorized, for what, until when (R6.5)."""
    records = domain.scenarios.list_scenarios(state=state, operator_org=operator_org)
    return [view(r) for r in records]


@router.get("/{scenario_id}", response_model=ScenarioView)
def show_scenario(
    domain: DomainDep, _: Annotated[Caller, Depends(EVERYONE)], scenario_id: str
) -> Any:
    """One scenario with its full authorization file and policy hash."""
    return view(domain.scenarios.get(scenario_id))


@router.post("", response_model=ScenarioView, status_code=status.HTTP_201_CREATED)
def grant_scenario(
    domain: DomainDep, caller: Annotated[Caller, Depends(AUTHORITY)], body: Scenario
) -> Any:
    """Grant one scenario (一场景一授权): checked against the catalog and the grades."""
    return view(domain.scenarios.grant(caller.user_id, body))


@router.post("/{scenario_id}/suspend", response_model=ScenarioView)
def suspend_scenario(
    domain: DomainDep, caller: Annotated[Caller, Depends(AUTHORITY)], scenario_id: str, body: Reason
) -> Any:
    """Close access at once, running jobs included; everything is kept (R6.2)."""
    return view(domain.scenarios.suspend(caller.user_id, scenario_id, body.reason))


@router.post("/{scenario_id}/resume", response_model=ScenarioView)
def resume_scenario(
    domain: DomainDep, caller: Annotated[Caller, Depends(AUTHORITY)], scenario_id: str, body: Reason
) -> Any:
    """Reopen a suspended scenario after rectification."""
    return view(domain.scenarios.resume(caller.user_id, scenario_id, body.reason))


@router.post("/{scenario_id}/revoke", response_model=ScenarioView)
def revoke_scenario(
    domain: DomainDep, caller: Annotated[Caller, Depends(AUTHORITY)], scenario_id: str, body: Reason
) -> Any:
    """End for good: jobs refused, retained data crypto-shredded, logs kept (R6.3)."""
    return view(domain.scenarios.revoke(caller.user_id, scenario_id, body.reason))


@router.post("/{scenario_id}/fusion", response_model=ScenarioView)
def approve_fusion(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(AUTHORITY)],
    scenario_id: str,
    body: ApproveFusion,
) -> Any:
    """Approve fusing an operator-owned dataset with public data in this scenario (R2.6)."""
    record = domain.scenarios.approve_fusion(caller.user_id, scenario_id, body.dataset, body.reason)
    return view(record)
