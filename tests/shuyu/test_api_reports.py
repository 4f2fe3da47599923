"""Budgets, supervision, quarterly reports and the public disclosure list over HTTP."""

from __future__ import annotations

from datetime import datetime

from policies.terms import DOMAIN_TZ
from shuyu.client import Client
from shuyu.errors import RemoteForbidden
from tests.shuyu.api_support import Api, pending_review_job


def test_budget_shows_total_spent_and_left(api: Api) -> None:
    pending_review_job(api)  # grants S-2026-001 with ε = 1
    budget = Client("http://testserver", api.tokens["rev.zhao"], http=api.client).budget(
        "S-2026-001"
    )
    assert (budget.epsilon_total, budget.epsilon_spent, budget.epsilon_left) == (1.0, 0.0, 1.0)
    assert budget.charges == 0
    every = api.client.get("/v1/budgets", headers=api.as_role("auditor")).json()
    assert [b["scenario_id"] for b in every] == ["S-2026-001"]


def test_an_operator_reads_only_its_own_organisations_budget(api: Api) -> None:
    pending_review_job(api)  # the scenario belongs to ORG-OP-1; op.wang is of OP-ACME
    client = Client("http://testserver", api.tokens["op.wang"], http=api.client)
    try:
        client.budget("S-2026-001")
    except RemoteForbidden as exc:
        assert exc.code == "api.not_owner"
    else:
        raise AssertionError("an operator read another organisation's budget")


def test_supervision_quarterly_and_disclosure(api: Api) -> None:
    pending_review_job(api)
    r = api.client.get("/v1/reports/supervision/S-2026-001", headers=api.as_role("auditor"))
    assert r.status_code == 200, r.text
    assert r.json()["scenario_id"] == "S-2026-001" and isinstance(r.json()["flags"], list)

    now = datetime.now(DOMAIN_TZ)
    quarter = f"{now.year}Q{(now.month - 1) // 3 + 1}"
    r = api.client.get(
        f"/v1/reports/quarterly/S-2026-001?quarter={quarter}", headers=api.as_role("authority")
    )
    assert r.status_code == 200, r.text
    assert r.json()["jobs_submitted"] == 1 and r.json()["fee_cny"] == "0"

    r = api.client.get(
        "/v1/reports/quarterly/S-2026-001?quarter=2026Q5", headers=api.as_role("authority")
    )
    assert r.status_code == 422 and r.json()["details"]["errors"][0]["field"] == "query.quarter"

    r = api.client.get("/v1/reports/disclosure", headers=api.as_role("provider"))
    assert r.status_code == 200
    (entry,) = r.json()
    assert entry["scenario_id"] == "S-2026-001" and entry["datasets"]["people"]
