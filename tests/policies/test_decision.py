"""The access decision: each reason it refuses for, named specifically, all at once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from policies.decision import (
    Actor,
    DatasetFacts,
    Decision,
    JobAccess,
    ScenarioGrant,
    decide,
)
from policies.errors import AccessDenied
from policies.personnel import PersonnelRecord
from policies.scenario import Scenario
from tests.policies.factories import HEALTH_ORG, OP_ORG, SID, make_scenario

NOW = datetime.now(UTC)
OPEN = PersonnelRecord(
    real_name_verified_at=NOW - timedelta(days=90),
    real_name_ref="RN-1",
    trained_at=NOW - timedelta(days=80),
    training_ref="TR-1",
    agreement_ref="NDA-7",
    agreement_signed_at=NOW - timedelta(days=70),
    agreement_valid_from=NOW - timedelta(days=70),
    agreement_valid_until=NOW + timedelta(days=300),
)
OPERATOR = Actor("op", OP_ORG, frozenset({"operator"}), True, OPEN)
FACTS = {
    "residents": DatasetFacts("residents", "public", HEALTH_ORG),
    "clinic_visits": DatasetFacts("clinic_visits", "public", HEALTH_ORG),
    "taxes": DatasetFacts("taxes", "public", "ORG-TAX"),
    "bank_defaults": DatasetFacts("bank_defaults", "social", OP_ORG),
    "visits_by_person": DatasetFacts(
        "visits_by_person", "derived", OP_ORG, scenario_id=SID, columns=frozenset({"n"})
    ),
    "other_derived": DatasetFacts(
        "other_derived", "derived", "ORG-X", scenario_id="S-2026-999", columns=frozenset({"n"})
    ),
}


def grant(scenario: Scenario | None = None, **kw: Any) -> ScenarioGrant:
    s = scenario or make_scenario()
    return ScenarioGrant(s, kw.pop("state", "active"), kw.pop("policy_hash", s.policy_hash), **kw)


def job(columns: dict[str, set[str]] | None = None, **kw: Any) -> JobAccess:
    cols = columns if columns is not None else {"residents": {"birth_year", "district_code"}}
    return JobAccess(
        columns=cols,
        kind=kw.get("kind", "sql"),
        output_mode=kw.get("mode", "dp_aggregate"),
        epsilon=kw.get("epsilon"),
        delta=kw.get("delta"),
    )


def run(
    *,
    actor: Actor = OPERATOR,
    g: ScenarioGrant | None = None,
    j: JobAccess | None = None,
    approved: set[str] | None = None,
    fusion: set[str] | None = None,
    now: datetime = NOW,
) -> Decision:
    return decide(
        actor=actor,
        scenario_id=SID,
        grant=g if g is not None else grant(),
        job=j or job(),
        datasets=FACTS,
        approved_requests=approved if approved is not None else {"residents", "clinic_visits"},
        fusion_approvals=fusion or set(),
        now=now,
    )


def codes(d: Decision) -> list[str]:
    return [r.code for r in d.reasons]


def messages(d: Decision) -> str:
    return " | ".join(r.message for r in d.reasons)


def test_an_operator_in_scope_with_approvals_is_allowed_and_bound_to_the_policy_hash() -> None:
    d = run()
    assert d.allowed, messages(d)
    assert d.policy_hash == make_scenario().policy_hash
    assert d.scope == {"residents": {"birth_year", "district_code"}}
    d.raise_if_denied()


@pytest.mark.parametrize(
    ("change", "code", "text"),
    [
        ({"trained_at": None}, "personnel.not_trained", "has not completed the"),
        ({"real_name_verified_at": None}, "personnel.not_verified", "real-name verified"),
        ({"agreement_ref": None}, "personnel.no_agreement", "no signed confidentiality"),
        (
            {"agreement_valid_until": NOW - timedelta(days=1)},
            "personnel.agreement_expired",
            "confidentiality agreement `NDA-7` of user `op` expired on",
        ),
        (
            {"agreement_valid_from": NOW + timedelta(days=3)},
            "personnel.agreement_not_started",
            "starts only on",
        ),
    ],
)
def test_each_missing_personnel_step_is_named(change: dict[str, Any], code: str, text: str) -> None:
    actor = replace(OPERATOR, personnel=replace(OPEN, **change))
    d = run(actor=actor)
    assert codes(d) == [code]
    assert text in messages(d)


def test_an_operator_with_no_record_at_all_gets_every_missing_step() -> None:
    d = run(actor=replace(OPERATOR, personnel=None))
    assert codes(d) == ["personnel.not_verified", "personnel.not_trained", "personnel.no_agreement"]


def test_identity_reasons() -> None:
    assert codes(run(actor=replace(OPERATOR, enabled=False))) == ["identity.disabled"]
    authority = Actor("boss", "ORG-BUREAU", frozenset({"authority"}))
    assert codes(run(actor=authority)) == ["identity.not_operator"]
    other = replace(OPERATOR, org="ORG-RIVAL")
    d = run(actor=other)
    assert codes(d) == ["identity.wrong_org"]
    assert "belongs to `ORG-RIVAL`, not to `ORG-OPERATOR-01`" in messages(d)


def test_an_expired_scenario_names_its_last_day() -> None:
    s = make_scenario(validity={"start": "2024-01-01", "end": "2026-03-01"})
    d = run(g=grant(s))
    assert codes(d) == ["scenario.expired"]
    assert messages(d) == f"scenario `{SID}` expired on 2026-03-01"


def test_a_scenario_ends_at_midnight_cst_after_its_last_day() -> None:
    s = make_scenario(validity={"start": "2026-01-01", "end": "2026-03-01"})
    long_agreement = replace(
        OPEN,
        agreement_valid_from=datetime(2020, 1, 1, tzinfo=UTC),
        agreement_valid_until=datetime(2100, 1, 1, tzinfo=UTC),
    )
    actor = replace(OPERATOR, personnel=long_agreement)
    just_before = datetime.fromisoformat("2026-03-01T23:59:59+08:00")
    assert run(actor=actor, g=grant(s), now=just_before).allowed
    at_end = datetime.fromisoformat("2026-03-02T00:00:00+08:00")
    assert codes(run(actor=actor, g=grant(s), now=at_end)) == ["scenario.expired"]


def test_not_yet_started_suspended_revoked_and_unknown_scenarios() -> None:
    future = make_scenario(validity={"start": "2099-01-01", "end": "2099-06-01"})
    assert codes(run(g=grant(future))) == ["scenario.not_started"]
    d = run(g=grant(state="suspended", state_since=NOW, state_reason="over-scope calls"))
    assert codes(d) == ["scenario.suspended"]
    assert "over-scope calls" in messages(d)
    assert codes(run(g=grant(state="revoked"))) == ["scenario.revoked"]
    assert codes(run(g=grant(state="expired"))) == ["scenario.expired"]
    unknown = decide(
        actor=OPERATOR,
        scenario_id="S-2026-404",
        grant=None,
        job=job(),
        datasets=FACTS,
        approved_requests=set(),
        fusion_approvals=set(),
        now=NOW,
    )
    assert codes(unknown) == ["scenario.unknown"]


def test_a_stored_policy_altered_after_its_grant_is_refused() -> None:
    d = run(g=grant(policy_hash="0" * 64))
    assert codes(d) == ["scenario.hash_mismatch"]


def test_column_out_of_scope_is_named_with_its_dataset_and_scenario() -> None:
    d = run(j=job({"residents": {"birth_year", "id_number"}}))
    assert codes(d) == ["scope.column"]
    assert messages(d) == f"column `id_number` of `residents` is not in scenario `{SID}`"


def test_dataset_not_in_scenario_and_unknown_dataset() -> None:
    d = run(j=job({"taxes": {"amount"}, "nowhere": {"x"}}))
    assert sorted(codes(d)) == ["scope.dataset_not_in_scenario", "scope.dataset_unknown"]
    assert f"dataset `taxes` is not in scenario `{SID}`" in messages(d)
    deleted = dict(FACTS, residents=replace(FACTS["residents"], status="deleted"))
    d = decide(
        actor=OPERATOR,
        scenario_id=SID,
        grant=grant(),
        job=job(),
        datasets=deleted,
        approved_requests={"residents"},
        fusion_approvals=set(),
        now=NOW,
    )
    assert "dataset `residents` was deleted in the catalog" in messages(d)


def test_provider_not_approved() -> None:
    d = run(approved={"clinic_visits"})
    assert codes(d) == ["approval.provider"]
    assert messages(d) == (
        f"provider `{HEALTH_ORG}` has not approved a data request for `residents` in "
        f"scenario `{SID}`"
    )


def test_job_kind_output_mode_and_per_job_caps() -> None:
    d = run(j=job(kind="python", mode="model", epsilon=2.0, delta=1e-3))
    assert codes(d) == [
        "purpose.job_kind",
        "purpose.output_mode",
        "purpose.epsilon_cap",
        "purpose.delta_cap",
    ]
    assert "job kind `python` is not allowed in scenario `S-2026-014` (allowed: sql)" in messages(d)
    assert run(j=job(epsilon=0.5, delta=0.0)).allowed


def _fusion_scenario() -> Scenario:
    return make_scenario(
        datasets={
            "residents": {"columns": ["person_id", "birth_year"]},
            "bank_defaults": {"columns": ["person_id", "defaulted"]},
        }
    )


def test_fusing_operator_data_with_public_data_needs_the_authoritys_approval() -> None:
    g = grant(_fusion_scenario())
    fused = job({"residents": {"person_id"}, "bank_defaults": {"person_id", "defaulted"}})
    d = run(g=g, j=fused)
    assert codes(d) == ["approval.fusion"]
    assert "fusing operator dataset `bank_defaults` with public data" in messages(d)
    assert run(g=g, j=fused, fusion={"bank_defaults"}).allowed
    # the operator's own data alone needs neither a provider's nor a fusion approval
    assert run(g=g, j=job({"bank_defaults": {"defaulted"}}), approved=set()).allowed


def test_derived_tables_are_visible_only_to_their_own_scenario() -> None:
    assert run(j=job({"visits_by_person": {"n"}})).allowed
    d = run(j=job({"other_derived": {"n"}}))
    assert codes(d) == ["scope.derived_other_scenario"]
    assert "derived table `other_derived` belongs to scenario `S-2026-999`" in messages(d)
    assert codes(run(j=job({"visits_by_person": {"secret"}}))) == ["scope.column"]


def test_every_reason_is_given_not_just_the_first() -> None:
    actor = replace(OPERATOR, personnel=replace(OPEN, trained_at=None))
    d = run(
        actor=actor,
        g=grant(state="suspended"),
        j=job({"residents": {"id_number"}, "taxes": {"amount"}}, kind="python"),
        approved=set(),
    )
    assert sorted(codes(d)) == sorted(
        [
            "personnel.not_trained",
            "scenario.suspended",
            "purpose.job_kind",
            "approval.provider",
            "scope.column",
            "scope.dataset_not_in_scenario",
        ]
    )
    with pytest.raises(AccessDenied) as info:
        d.raise_if_denied()
    assert info.value.kind == "forbidden"
    assert len(info.value.details["reasons"]) == 6
    assert "shuyu user activate" in info.value.hint
    assert "shuyu request create" in info.value.hint
