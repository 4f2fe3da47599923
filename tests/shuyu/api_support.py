"""Shared set-up for the API, client and console tests: a domain with one user per role.

Not a conftest: the tests that need it import its fixtures by name, so the fixtures of the
other engineers' tests in this folder stay independent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from enclave.identity import IdentityService, PersonnelSteps
from shuyu.api import create_app
from shuyu.context import Domain, init_domain
from shuyu.settings import Settings

# user id -> (org, roles); two reviewers because high grades need two.
USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "auth.chen": ("GOV-DATA", ("authority",)),
    "prov.li": ("PROV-CIVIL", ("provider",)),
    "op.wang": ("OP-ACME", ("operator",)),
    "rev.zhao": ("GOV-DATA", ("reviewer",)),
    "rev.sun": ("GOV-DATA", ("reviewer",)),
    "aud.qian": ("GOV-AUDIT", ("auditor",)),
}
ROLE_USER = {
    "authority": "auth.chen",
    "provider": "prov.li",
    "operator": "op.wang",
    "reviewer": "rev.zhao",
    "auditor": "aud.qian",
}


@dataclass
class Api:
    domain: Domain
    app: FastAPI
    client: TestClient
    tokens: dict[str, str]  # user id -> token

    def as_role(self, role: str) -> dict[str, str]:
        return self.headers(ROLE_USER[role])

    def headers(self, user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user_id]}"}


def add_users(domain: Domain) -> dict[str, str]:
    """Create every user of USERS (operators fully activated); return their tokens."""
    ids = IdentityService(domain.engine, domain.audit)
    ids.add_user(None, "auth.chen", org="GOV-DATA", roles=["authority"])
    for user_id, (org, roles) in USERS.items():
        if user_id != "auth.chen":
            ids.add_user("auth.chen", user_id, org=org, roles=roles)
        if "operator" in roles:
            ids.activate(
                "auth.chen",
                user_id,
                PersonnelSteps(
                    real_name_ref="RN-1",
                    training_ref="TR-1",
                    agreement_ref="NDA-1",
                    agreement_signed_on=date(2026, 1, 1),
                    agreement_valid_until=date(2028, 12, 31),
                ),
            )
    return {u: ids.create_token(u, ttl_days=30).secret for u in USERS}


def open_api(domain: Domain) -> Iterator[Api]:
    tokens = add_users(domain)
    app = create_app(domain)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(domain, app, client, tokens)


@pytest.fixture
def api(domain: Domain) -> Iterator[Api]:
    """A fresh domain with one user per role, and a test client of its app."""
    yield from open_api(domain)


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """Like ``api``, shared by a module's tests (for read-mostly tables of checks)."""
    domain = init_domain(
        Settings(home=tmp_path_factory.mktemp("shared") / "home", audit_checkpoint_every=50)
    )
    try:
        yield from open_api(domain)
    finally:
        domain.close()


def pending_review_job(api: Api, *, grade: str = "L3", scenario_id: str = "S-2026-001") -> str:
    """A job of op.wang whose district counts wait for review (built through the gate)."""
    from egress.report import build_report
    from tests.egress.gate_factories import (
        COUNT,
        DEFAULT,
        add_dataset,
        add_scenario,
        aggregate,
        computed_job,
        people,
        source_conn,
    )

    domain = api.domain
    if domain.scenarios.find(scenario_id) is None:
        add_dataset(domain, grade=grade)
        add_scenario(domain, scenario_id)
    job_id = computed_job(domain, scenario_id=scenario_id, submitter="op.wang")
    output = aggregate(source_conn(people(400)), ["district"], [COUNT])
    # check() would also compare with earlier releases; the first job has none.
    report = build_report(job_id, [output], DEFAULT)
    result = domain.gate.submit(job_id, [output], report)
    assert result.route == "pending_review", result
    return job_id
