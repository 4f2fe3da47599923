"""Supervision, quarterly and disclosure reports, and the pure supervision rules."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from enclave.db import load_all_tables
from enclave.errors import PermissionDenied
from enclave.tables import jobs
from policies.decision import JobAccess
from policies.supervision import abnormal_days, denial_share_flag, unused_dataset_flag
from shuyu.context import Domain
from shuyu.supervision import (
    disclosure_list,
    quarter_bounds,
    quarterly_report,
    supervision_report,
)
from tests.policies.factories import SID, World, build_world, make_scenario

GOOD = JobAccess({"residents": {"birth_year"}}, "sql", "dp_aggregate")
OVER_SCOPE = JobAccess({"residents": {"id_number"}}, "sql", "dp_aggregate")
OVER_PURPOSE = JobAccess({"residents": {"birth_year"}}, "python", "model")


@pytest.fixture
def world(domain: Domain) -> World:
    return build_world(domain)


def test_over_scope_and_over_purpose_attempts_are_flagged(world: World) -> None:
    world.access.decide_job("op", SID, GOOD)
    world.access.decide_job("op", SID, OVER_SCOPE)
    world.access.decide_job("op", SID, OVER_PURPOSE)
    r = supervision_report(world.domain, "aud", SID)
    assert (r.decisions_allowed, r.decisions_denied) == (1, 2)
    assert r.denied_by_category == {"purpose": 2, "scope": 1}
    kinds = [f.kind for f in r.flags]
    assert kinds.count("over_scope") == 1 and kinds.count("over_purpose") == 2
    scope_flag = next(f for f in r.flags if f.kind == "over_scope")
    assert "`op`: column `id_number` of `residents` is not in scenario `S-2026-014`" in (
        scope_flag.message
    )


def test_datasets_unused_for_90_days_are_flagged(world: World) -> None:
    world.access.decide_job("op", SID, GOOD)  # residents used now; clinic_visits never
    now = datetime.now(UTC)
    r = supervision_report(world.domain, "auth", SID, now=now + timedelta(days=30))
    assert not [f for f in r.flags if f.kind == "unused_dataset"]
    later = supervision_report(world.domain, "auth", SID, now=now + timedelta(days=100))
    unused = {f.subject: f.message for f in later.flags if f.kind == "unused_dataset"}
    assert set(unused) == {"clinic_visits", "residents"}
    assert "never used" in unused["clinic_visits"]
    assert "last used" in unused["residents"] and "idle 100 days" in unused["residents"]


def test_operators_read_only_their_own_reports_and_not_supervision(world: World) -> None:
    with pytest.raises(PermissionDenied):
        supervision_report(world.domain, "op", SID)
    world.identity.add_user("auth", "rival", org="ORG-RIVAL", roles=["operator"])
    with pytest.raises(PermissionDenied, match="may not read reports"):
        quarterly_report(world.domain, "rival", SID, "2026Q4")
    assert quarterly_report(world.domain, "op", SID, "2026Q4").scenario_id == SID


def _job(domain: Domain, jid: str, state: str, created: datetime, sid: str = SID) -> None:
    with domain.engine.begin() as conn:
        conn.execute(
            jobs.insert().values(
                id=jid,
                scenario_id=sid,
                submitter="op",
                kind="sql",
                output_mode="dp_aggregate",
                code="select 1",
                code_sha256="0" * 64,
                params={},
                state=state,
                created_at=created,
                updated_at=created,
            )
        )


def test_quarterly_report_counts_jobs_outputs_datasets_and_fees(domain: Domain) -> None:
    w = build_world(domain, grant=False)
    w.scenarios.grant("auth", make_scenario(use_class="industry", fee_per_job_cny="12.50"))
    for ds in ("residents", "clinic_visits"):
        w.requests.approve("prov", w.requests.create("op", SID, ds).id)
    start, _ = quarter_bounds("2026Q4")
    inside = start + timedelta(days=10)
    for i, state in enumerate(
        ["released", "auto_released", "rejected", "failed", "refused", "pending_review"]
    ):
        _job(domain, f"J-{i}", state, inside)
    _job(domain, "J-old", "released", start - timedelta(days=1))
    w.access.decide_job("op", SID, GOOD)
    w.access.decide_job("op", SID, OVER_SCOPE)
    r = quarterly_report(domain, "op", SID, "2026Q4")
    assert r.jobs_submitted == 6
    assert r.jobs_run == 4  # released, auto_released, rejected, pending_review
    assert (r.outputs_released, r.outputs_rejected) == (2, 1)
    assert r.datasets_used == {"residents": 1}
    assert r.decisions_denied == 1
    assert (r.fee_per_job_cny, r.fee_cny) == ("12.50", "50.00")
    with domain.engine.begin() as conn:
        has_ledger = sa.inspect(conn).has_table("dp_charges")
        if has_ledger:  # the privacy ledger (egress.dp_tables) is installed in this tree
            charges = load_all_tables().tables["dp_charges"]
            for i, eps in enumerate((0.5, 0.25)):
                conn.execute(
                    charges.insert().values(
                        scenario_id=SID,
                        job_id=f"J-{i}",
                        query_key=f"q{i}",
                        epsilon=eps,
                        delta=0.0,
                        rho=eps**2 / 2,
                        delta_approx=0.0,
                        pure=True,
                        created_at=inside,
                    )
                )
    r = quarterly_report(domain, "op", SID, "2026Q4")
    if has_ledger:
        assert r.epsilon_spent == 0.75
    else:
        assert r.epsilon_spent is None
        assert any("ledger" in n for n in r.notes)


def test_quarter_bounds_are_cst_quarters() -> None:
    start, end = quarter_bounds("2026Q4")
    assert start.isoformat() == "2026-10-01T00:00:00+08:00"
    assert end.isoformat() == "2027-01-01T00:00:00+08:00"
    assert quarter_bounds("2026-q1")[1].isoformat() == "2026-04-01T00:00:00+08:00"
    with pytest.raises(ValueError, match="not a quarter"):
        quarter_bounds("2026Q5")


def test_disclosure_lists_authorizations_in_force_only(world: World) -> None:
    world.scenarios.grant("auth", make_scenario(id="S-2026-015", title="second"))
    [a, b] = disclosure_list(world.domain)
    assert (a.scenario_id, b.scenario_id) == (SID, "S-2026-015")
    assert a.providers == ["ORG-HEALTH"]
    assert a.datasets["residents"] == ["person_id", "birth_year", "district_code", "sex"]
    world.scenarios.suspend("auth", "S-2026-015", "incident")
    assert [e.state for e in disclosure_list(world.domain)] == ["active", "suspended"]
    world.scenarios.revoke("auth", "S-2026-015", "ended")
    assert [e.scenario_id for e in disclosure_list(world.domain)] == [SID]
    far = datetime.now(UTC) + timedelta(days=1000)
    assert disclosure_list(world.domain, now=far) == []


def test_pure_rules() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert unused_dataset_flag("d", now - timedelta(days=89), None, now) is None
    assert (
        unused_dataset_flag("d", now - timedelta(days=200), now - timedelta(days=10), now) is None
    )
    flag = unused_dataset_flag("d", now - timedelta(days=200), now - timedelta(days=95), now)
    assert flag is not None and "idle 95 days" in flag.message
    days = {date(2026, 5, d): 4 for d in range(1, 20)}
    assert abnormal_days(days) == []
    days[date(2026, 5, 20)] = 20  # the floor: 20 decisions a day is never abnormal
    assert abnormal_days(days) == []
    days[date(2026, 5, 21)] = 21
    assert [f.subject for f in abnormal_days(days)] == ["2026-05-21"]
    busy = {date(2026, 5, d): 30 for d in range(1, 20)} | {date(2026, 5, 20): 91}
    assert [f.subject for f in abnormal_days(busy)] == ["2026-05-20"]  # 3x the median 30
    assert denial_share_flag(9, 0) is None
    assert denial_share_flag(7, 3) is None
    share = denial_share_flag(6, 4)
    assert share is not None and "4 of 10" in share.message
