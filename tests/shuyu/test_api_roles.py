"""Every /v1 route × every role: the route gate allows exactly the roles the table says.

The table is written out here, by hand, from the product's rules (REQUIREMENTS "Roles"):
it is the spec the routes are checked against, so a route added without an entry fails,
and a route whose gate drifts from the table fails.
"""

from __future__ import annotations

import re

import pytest

from policies.roles import ROLES
from shuyu.api import create_app
from tests.shuyu.api_support import Api

ALL = frozenset(ROLES)
A = frozenset({"authority"})
READ_AUDIT = frozenset({"authority", "auditor"})
REQUEST_READERS = frozenset({"authority", "provider", "operator", "auditor"})
REVIEW_READERS = frozenset({"reviewer", "authority", "auditor"})
JOB_READERS = ALL - {"provider"}

# (method, path) -> roles allowed past the route gate.
TABLE: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/v1/me"): ALL,
    ("GET", "/v1/users"): READ_AUDIT,
    ("POST", "/v1/users"): A,
    ("POST", "/v1/users/{user_id}/activate"): A,
    ("POST", "/v1/users/{user_id}/disable"): A,
    ("GET", "/v1/tokens"): ALL,
    ("POST", "/v1/tokens"): ALL,
    ("POST", "/v1/tokens/{token_id}/revoke"): ALL,
    ("GET", "/v1/datasets"): ALL,
    ("GET", "/v1/datasets/{name}"): ALL,
    ("POST", "/v1/datasets"): frozenset({"authority", "provider"}),
    ("DELETE", "/v1/datasets/{name}"): frozenset({"authority", "provider"}),
    ("GET", "/v1/scenarios"): ALL,
    ("GET", "/v1/scenarios/{scenario_id}"): ALL,
    ("POST", "/v1/scenarios"): A,
    ("POST", "/v1/scenarios/{scenario_id}/suspend"): A,
    ("POST", "/v1/scenarios/{scenario_id}/resume"): A,
    ("POST", "/v1/scenarios/{scenario_id}/revoke"): A,
    ("POST", "/v1/scenarios/{scenario_id}/fusion"): A,
    ("GET", "/v1/requests"): REQUEST_READERS,
    ("GET", "/v1/requests/{request_id}"): REQUEST_READERS,
    ("POST", "/v1/requests"): frozenset({"operator"}),
    ("POST", "/v1/requests/{request_id}/approve"): frozenset({"provider"}),
    ("POST", "/v1/requests/{request_id}/refuse"): frozenset({"provider"}),
    ("POST", "/v1/jobs"): frozenset({"operator"}),
    ("POST", "/v1/jobs/dry-run"): frozenset({"operator"}),
    ("GET", "/v1/jobs"): JOB_READERS,
    ("GET", "/v1/jobs/{job_id}"): JOB_READERS,
    ("POST", "/v1/jobs/{job_id}/cancel"): frozenset({"operator", "authority"}),
    ("GET", "/v1/jobs/{job_id}/events"): JOB_READERS,
    ("GET", "/v1/jobs/{job_id}/result"): JOB_READERS,
    ("GET", "/v1/reviews"): REVIEW_READERS,
    ("GET", "/v1/reviews/{job_id}"): REVIEW_READERS,
    ("POST", "/v1/reviews/{job_id}/approve"): frozenset({"reviewer"}),
    ("POST", "/v1/reviews/{job_id}/reject"): frozenset({"reviewer"}),
    ("POST", "/v1/reviews/{job_id}/send-back"): frozenset({"reviewer"}),
    ("POST", "/v1/reviews/{job_id}/comments"): REVIEW_READERS,
    ("GET", "/v1/releases"): ALL,
    ("GET", "/v1/releases/{release_id}"): ALL,
    ("GET", "/v1/releases/{release_id}/manifest"): ALL,
    ("GET", "/v1/releases/{release_id}/archive"): ALL - {"provider"},
    ("GET", "/v1/products"): ALL,
    ("GET", "/v1/products/{release_id}"): ALL,
    ("POST", "/v1/products/{release_id}/withdraw"): A,
    ("GET", "/v1/scenarios/{scenario_id}/budget"): ALL - {"provider"},
    ("GET", "/v1/budgets"): REVIEW_READERS,
    ("GET", "/v1/reports/supervision/{scenario_id}"): READ_AUDIT,
    ("GET", "/v1/reports/quarterly/{scenario_id}"): frozenset({"authority", "auditor", "operator"}),
    ("GET", "/v1/reports/disclosure"): ALL,
    ("GET", "/v1/audit/entries"): READ_AUDIT,
    ("GET", "/v1/audit/export"): READ_AUDIT,
    ("GET", "/v1/audit/verify"): READ_AUDIT,
    ("POST", "/v1/audit/verify"): READ_AUDIT,
    ("POST", "/v1/audit/checkpoint"): READ_AUDIT,
}


def _v1_routes() -> list[tuple[str, str]]:
    from shuyu.context import Domain
    from shuyu.settings import Settings

    app = create_app(Domain(Settings()), console=False)  # routes only; never opened
    paths = app.openapi()["paths"]
    return [
        (method.upper(), path)
        for path, ops in paths.items()
        if path.startswith("/v1/")
        for method in ops
    ]


ROUTES = _v1_routes()


def test_every_route_is_in_the_table_and_every_entry_is_a_route() -> None:
    assert set(ROUTES) == set(TABLE), {
        "routes without an entry": sorted(set(ROUTES) - set(TABLE)),
        "entries without a route": sorted(set(TABLE) - set(ROUTES)),
    }


@pytest.mark.parametrize(("method", "path"), sorted(TABLE))
def test_the_route_gate_allows_exactly_the_table(shared_api: Api, method: str, path: str) -> None:
    api = shared_api
    url = re.sub(r"\{[^}]+\}", "x-1", path)
    for role in sorted(ALL):
        r = api.client.request(method, url, headers=api.as_role(role), json={})
        refused = r.status_code == 403 and r.json()["code"] == "api.forbidden_role"
        if role in TABLE[(method, path)]:
            assert not refused, f"{role} was refused {method} {path}"
            assert r.status_code < 500, (role, r.text)
        else:
            assert refused, f"{role} was let through {method} {path}: {r.status_code} {r.text}"


def test_a_refusal_is_audited(api: Api) -> None:
    r = api.client.post("/v1/scenarios/x-1/revoke", headers=api.as_role("operator"), json={})
    assert r.status_code == 403
    entries = api.client.get("/v1/audit/entries?limit=1000", headers=api.as_role("auditor")).json()
    denied = [e for e in entries if e["action"] == "api.denied"]
    assert denied[-1]["actor"] == "op.wang"
    assert denied[-1]["target"] == "POST /v1/scenarios/{scenario_id}/revoke"
    assert denied[-1]["result"] == "denied"
