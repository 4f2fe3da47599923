"""Factories for scenario, identity and catalog tests: valid defaults, any field overridable."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from enclave.decisions import AccessService
from enclave.derived import DerivedTables
from enclave.identity import IdentityService, PersonnelSteps
from enclave.requests import RequestService
from enclave.scenarios import ScenarioService
from enclave.tables import datasets
from policies.scenario import Scenario, parse_scenario
from shuyu.context import Domain

TODAY = datetime.now(UTC).date()
SID = "S-2026-014"
OP_ORG = "ORG-OPERATOR-01"
HEALTH_ORG = "ORG-HEALTH"

RESIDENT_COLUMNS = [
    # name, type, role, grade
    ("person_id", "string", "identifier", "L4"),
    ("id_number", "string", "identifier", "L4"),
    ("birth_year", "int", "quasi_identifier", "L3"),
    ("district_code", "string", "quasi_identifier", "L2"),
    ("income", "float", "sensitive", "L3"),
    ("sex", "string", "attribute", "L2"),
]
VISIT_COLUMNS = [
    ("person_id", "string", "identifier", "L4"),
    ("visit_date", "date", "quasi_identifier", "L3"),
    ("diagnosis_code", "string", "sensitive", "L3"),
]


def scenario_dict(**overrides: Any) -> dict[str, Any]:
    """A valid scenario document; nested keys can be replaced whole."""
    start = TODAY - timedelta(days=30)
    base: dict[str, Any] = {
        "id": SID,
        "title": "Chronic disease burden",
        "operator_org": OP_ORG,
        "purpose": "Estimate chronic disease prevalence per district and age band.",
        "use_class": "public_welfare",
        "datasets": {
            "residents": {"columns": ["person_id", "birth_year", "district_code", "sex"]},
            "clinic_visits": {"columns": ["person_id", "visit_date", "diagnosis_code"]},
        },
        "job_kinds": ["sql"],
        "output_modes": ["dp_aggregate", "sdc_aggregate"],
        "privacy_budget": {"epsilon": 4.0, "delta": 1e-6, "per_job_epsilon": 0.5},
        "validity": {"start": start.isoformat(), "end": (start + timedelta(days=700)).isoformat()},
    }
    out = copy.deepcopy(base)
    out.update(overrides)
    return out


def make_scenario(**overrides: Any) -> Scenario:
    return parse_scenario(scenario_dict(**overrides))


def insert_dataset(
    conn: Connection,
    name: str,
    *,
    owner_org: str = HEALTH_ORG,
    columns: list[tuple[str, str, str, str]] | None = None,
    kind: str = "public",
    grade: str = "L4",
    scenario_id: str | None = None,
    privacy_unit: str | None = None,
) -> str:
    """A catalog row without files: enough for grants, requests and decisions."""
    cols = columns or RESIDENT_COLUMNS
    ds_id = f"ds_{uuid.uuid4().hex}"
    conn.execute(
        datasets.insert().values(
            id=ds_id,
            name=name,
            version=1,
            status="active",
            kind=kind,
            owner_org=owner_org,
            grade=grade,
            meta={
                "name": name,
                "kind": kind,
                "privacy_unit": privacy_unit,
                "columns": [{"name": n, "type": t, "role": r, "grade": g} for n, t, r, g in cols],
            },
            path=f"{ds_id}/v1",
            num_rows=0,
            num_bytes=0,
            content_sha256="0" * 64,
            scenario_id=scenario_id,
            created_at=datetime.now(UTC),
        )
    )
    return ds_id


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class World:
    """A domain with the five roles, two provider datasets and one granted scenario."""

    domain: Domain
    clock: FakeClock
    identity: IdentityService
    scenarios: ScenarioService
    requests: RequestService
    access: AccessService
    derived: DerivedTables
    ids: dict[str, str] = field(default_factory=dict)


def open_operator_steps(until: date | None = None) -> PersonnelSteps:
    return PersonnelSteps(
        real_name_ref="RN-0001",
        training_ref="TR-2026-01",
        agreement_ref="NDA-7",
        agreement_signed_on=TODAY - timedelta(days=60),
        agreement_valid_until=until or TODAY + timedelta(days=365),
    )


def build_world(domain: Domain, *, grant: bool = True, approve: bool = True) -> World:
    clock = FakeClock()
    ident = IdentityService(domain.engine, domain.audit, clock)
    scen = ScenarioService(domain.engine, domain.audit, domain.keys, ident, clock=clock)
    reqs = RequestService(domain.engine, domain.audit, ident, scen, clock)
    access = AccessService(domain.engine, domain.audit, ident, scen, clock)
    derived = DerivedTables(domain.audit, scen, clock=clock)
    w = World(domain, clock, ident, scen, reqs, access, derived)
    ident.add_user(None, "auth", org="ORG-BUREAU", roles=["authority"])
    ident.add_user("auth", "prov", org=HEALTH_ORG, roles=["provider"])
    ident.add_user("auth", "op", org=OP_ORG, roles=["operator"])
    ident.add_user("auth", "rev", org="ORG-BUREAU", roles=["reviewer"])
    ident.add_user("auth", "aud", org="ORG-AUDIT", roles=["auditor"])
    ident.activate("auth", "op", open_operator_steps())
    with domain.engine.begin() as conn:
        w.ids["residents"] = insert_dataset(conn, "residents", privacy_unit="person_id")
        w.ids["clinic_visits"] = insert_dataset(
            conn, "clinic_visits", columns=VISIT_COLUMNS, grade="L4"
        )
    if grant:
        scen.grant("auth", make_scenario())
        if approve:
            for ds in ("residents", "clinic_visits"):
                r = reqs.create("op", SID, ds)
                reqs.approve("prov", r.id)
    return w
