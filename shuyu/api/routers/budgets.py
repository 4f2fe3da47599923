"""Privacy budgets (ε, δ) per scenario, read from the privacy ledger."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from egress.ledger import Budget, Ledger
from enclave.scenarios import ScenarioRecord
from policies.errors import ShuyuError
from shuyu.api.deps import Caller, DomainDep, allow
from shuyu.api.schemas import BudgetView
from shuyu.context import Domain

__all__ = ["budget_of", "router"]

router = APIRouter(prefix="/v1", tags=["budgets"])

READERS = allow("operator", "reviewer", "authority", "auditor")
OVERSEERS = allow("reviewer", "authority", "auditor")


def budget_of(domain: Domain, record: ScenarioRecord) -> dict[str, Any]:
    """The scenario's budget status: totals from its file, spending from the ledger."""
    budget = Budget.of(record.scenario.privacy_budget)
    status = Ledger(domain.audit, domain.keys).status(domain.engine, record.id, budget)
    return {**status.to_dict(), "title": record.scenario.title}


@router.get("/scenarios/{scenario_id}/budget", response_model=BudgetView)
def scenario_budget(
    domain: DomainDep, caller: Annotated[Caller, Depends(READERS)], scenario_id: str
) -> Any:
    """What the scenario may still spend; an operator sees only its own organisation's."""
    record = domain.scenarios.get(scenario_id)
    overseer = {"reviewer", "authority", "auditor"} & set(caller.roles)
    if not overseer and record.scenario.operator_org != caller.org:
        raise ShuyuError(
            f"scenario {scenario_id} belongs to {record.scenario.operator_org}",
            code="api.not_owner",
            kind="forbidden",
            hint="an operator reads the budgets of its own organisation's scenarios",
        )
    return budget_of(domain, record)


@router.get("/budgets", response_model=list[BudgetView])
def all_budgets(domain: DomainDep, _: Annotated[Caller, Depends(OVERSEERS)]) -> Any:
    """Every scenario's budget status (reviewers, the authority, auditors)."""
    return [budget_of(domain, r) for r in domain.scenarios.list_scenarios()]
