"""The gate and the reviewer's workflow against a real metadata database (SQLite, PostgreSQL).

Who may review what, how many reviewers an output needs, what a rejection leaves behind,
and that differencing sees every earlier release of every scenario on the same data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from egress.checks import DuckDBSource, IdentifierIndex, OutputSpec
from egress.errors import EgressError, ReleaseError, ReviewError
from egress.gate_tables import (
    egress_cell_history,
    egress_outputs,
    egress_products,
    egress_releases,
)
from egress.registry import list_products, record_download
from egress.release import release_job
from egress.review import (
    ReviewAnswers,
    approve,
    comment,
    reject,
    review_queue,
    send_back,
    show,
)
from enclave.audit import AuditLog
from enclave.jobstore import get_job
from policies.errors import ShuyuError
from shuyu.context import Domain
from tests.egress.gate_factories import (
    AUTHORITY,
    CATALOG,
    COUNT,
    OPERATOR,
    REVIEWER_A,
    REVIEWER_B,
    SUM_INCOME,
    add_dataset,
    add_people,
    add_scenario,
    aggregate,
    computed_job,
    people,
    source_conn,
)

NO_RISK = ReviewAnswers(False, False, False, False)


@dataclass
class World:
    domain: Domain
    data: pa.Table
    conn: Any
    index: IdentifierIndex
    sources: dict[str, DuckDBSource]

    def run(self, output: OutputSpec, **job: Any) -> str:
        job_id = computed_job(self.domain, **job)
        self.domain.gate.process(job_id, [output], identifiers=self.index, sources=self.sources)
        return job_id

    def state(self, job_id: str) -> str:
        with self.domain.engine.connect() as c:
            return get_job(c, job_id).state


def make_world(domain: Domain, grade: str = "L3") -> World:
    add_people(domain)
    add_dataset(domain, "people", grade)
    add_scenario(domain, "S-2026-001")
    add_scenario(domain, "S-2026-002")
    data = people(1200)
    conn = source_conn(data)
    return World(
        domain,
        data,
        conn,
        IdentifierIndex.from_tables({"people": data}, CATALOG),
        {"people": DuckDBSource(conn, "people", "people")},
    )


@pytest.fixture
def world(domain: Domain) -> World:
    return make_world(domain)


@pytest.fixture
def any_world(any_domain: Domain) -> World:
    return make_world(any_domain)


def audit_actions(domain: Domain, action: str) -> list[Any]:
    with domain.engine.connect() as c:
        return [e for e in AuditLog.entries(c) if e.action == action]


def district_counts(w: World) -> OutputSpec:
    return aggregate(w.conn, ["district"], [COUNT, SUM_INCOME])


# --- the gate ----------------------------------------------------------------------------------


def test_a_clean_sdc_output_waits_for_a_reviewer_sealed(any_world: World) -> None:
    w = any_world
    job = w.run(district_counts(w))
    assert w.state(job) == "pending_review"
    with w.domain.engine.connect() as c:
        blob = bytes(c.execute(sa.select(egress_outputs.c.blob)).scalar_one())
        sketch = bytes(c.execute(sa.select(egress_cell_history.c.sketch)).scalar_one())
    assert b"district" not in blob and b"total_income" not in blob  # sealed, not plain Arrow
    assert len(sketch) > 0
    [item] = review_queue(w.domain.gate, REVIEWER_A)
    assert item["job_id"] == job and item["verdict"] == "clean" and item["required"] == 1


def test_a_blocked_output_is_refused_and_never_held(world: World) -> None:
    job = world.run(aggregate(world.conn, ["person_id"], [SUM_INCOME]))
    with world.domain.engine.connect() as c:
        j = get_job(c, job)
        held = c.execute(sa.select(sa.func.count()).select_from(egress_outputs)).scalar()
        cells = c.execute(sa.select(sa.func.count()).select_from(egress_cell_history)).scalar()
    assert (j.state, j.error_code) == ("refused", "egress.blocked")
    assert held == 0 and cells == 0
    [entry] = audit_actions(world.domain, "egress.report")
    assert entry.result == "blocked" and entry.details["counts"]["block"] >= 3
    assert review_queue(world.domain.gate, REVIEWER_A) == []


def test_submitting_twice_is_a_no_op(world: World) -> None:
    out = district_counts(world)
    job = computed_job(world.domain)
    gate = world.domain.gate
    report = gate.check(job, [out], identifiers=world.index, sources=world.sources)
    first = gate.submit(job, [out], report)
    again = gate.submit(job, [out], report)
    assert first == again and first.route == "pending_review"


# --- who may review ----------------------------------------------------------------------------


def test_the_submitter_cannot_review_their_own_job(world: World) -> None:
    world.domain.identity.add_user(
        AUTHORITY, "dual", org="ORG-OP-1", roles=["operator", "reviewer"]
    )
    job = world.run(district_counts(world), submitter="dual")
    gate = world.domain.gate
    with pytest.raises(ReviewError) as err:
        approve(gate, job, "dual", NO_RISK)
    assert err.value.code == "egress.self_review"
    with pytest.raises(ReviewError):
        comment(gate, job, "dual", "looks fine to me")
    denied = [e for e in audit_actions(world.domain, "review.approve") if e.result == "denied"]
    assert denied and denied[0].actor == "dual"
    assert world.state(job) == "pending_review"


def test_an_operator_cannot_review(world: World) -> None:
    world.domain.identity.add_user(AUTHORITY, "op2", org="ORG-OP-1", roles=["operator"])
    job = world.run(district_counts(world))
    with pytest.raises(ShuyuError) as err:
        approve(world.domain.gate, job, "op2", NO_RISK)
    assert err.value.code == "enclave.role_required"


def test_approval_needs_four_noes(world: World) -> None:
    job = world.run(district_counts(world))
    with pytest.raises(ReviewError) as err:
        approve(world.domain.gate, job, REVIEWER_A, ReviewAnswers(False, True, False, False))
    assert err.value.code == "egress.review_risk" and "direct_exposure" in err.value.message


def test_one_reviewer_releases_an_l3_output(world: World) -> None:
    job = world.run(district_counts(world))
    view = show(world.domain.gate, job, REVIEWER_A)
    assert view["job"]["code"].startswith("SELECT")
    assert view["scenario"]["purpose"].startswith("Publish income statistics")
    assert view["report"]["verdict"] == "clean"
    assert view["outputs"][0]["table"].num_rows == 8
    outcome = approve(world.domain.gate, job, REVIEWER_A, NO_RISK, "aggregates by district")
    assert outcome.state == "released" and outcome.release is not None
    assert world.state(job) == "released"
    manifest = json.loads((outcome.release.path / "manifest.json").read_text())
    assert [r["user"] for r in manifest["review"]["reviewers"]] == [REVIEWER_A]
    assert audit_actions(world.domain, "review.show")


def test_l4_outputs_need_two_different_reviewers(domain: Domain) -> None:
    w = make_world(domain, grade="L4")
    job = w.run(district_counts(w))
    gate = domain.gate
    first = approve(gate, job, REVIEWER_A, NO_RISK)
    assert (first.state, first.approvals, first.required) == ("pending_review", 1, 2)
    assert w.state(job) == "pending_review"
    with pytest.raises(ReviewError) as err:
        approve(gate, job, REVIEWER_A, NO_RISK)
    assert err.value.code == "egress.review_twice"
    second = approve(gate, job, REVIEWER_B, NO_RISK)
    assert second.state == "released" and w.state(job) == "released"
    assert second.release is not None
    manifest = json.loads((second.release.path / "manifest.json").read_text())
    assert {r["user"] for r in manifest["review"]["reviewers"]} == {REVIEWER_A, REVIEWER_B}
    assert manifest["review"]["required_reviewers"] == 2


def test_a_rejected_output_never_becomes_downloadable(any_world: World) -> None:
    w = any_world
    gate = w.domain.gate
    job = w.run(district_counts(w))
    out = reject(gate, job, REVIEWER_A, NO_RISK, "purpose does not cover income by district")
    assert out.state == "rejected"
    with w.domain.engine.connect() as c:
        j = get_job(c, job)
        held = c.execute(sa.select(sa.func.count()).select_from(egress_outputs)).scalar()
        cells = c.execute(sa.select(sa.func.count()).select_from(egress_cell_history)).scalar()
        releases = c.execute(sa.select(sa.func.count()).select_from(egress_releases)).scalar()
        assert list_products(c) == []
    assert (j.state, j.error_code) == ("rejected", "egress.rejected")
    assert held == 0 and cells == 0 and releases == 0
    with pytest.raises(ReleaseError) as err:
        release_job(gate, job, actor=REVIEWER_B)
    assert err.value.code == "egress.not_approved"
    with pytest.raises(ReviewError):
        approve(gate, job, REVIEWER_B, NO_RISK)  # a second reviewer cannot undo it
    assert show(gate, job, REVIEWER_B)["outputs"] == []
    with w.domain.engine.begin() as c, pytest.raises(ReleaseError):
        record_download(c, f"R-{job}", OPERATOR)


def test_comments_and_send_back(world: World) -> None:
    gate = world.domain.gate
    job = world.run(district_counts(world))
    comment(gate, job, REVIEWER_A, "why income by district?")
    assert world.state(job) == "pending_review"
    with pytest.raises(ReviewError) as err:
        send_back(gate, job, REVIEWER_B, "   ")
    assert err.value.code == "egress.review_reason"
    send_back(gate, job, REVIEWER_B, "round the counts to base 5, then resubmit")
    with world.domain.engine.connect() as c:
        j = get_job(c, job)
    assert (j.state, j.error_code) == ("rejected", "egress.changes_requested")
    actions = [e.action for e in audit_actions(world.domain, "review.comment")]
    assert actions == ["review.comment"]
    assert audit_actions(world.domain, "review.send_back")


def test_approving_after_the_budget_ran_out_still_releases(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the job spent the scenario's whole budget (epsilon 1.0) when it was computed
    out = aggregate(world.conn, ["district"], [COUNT], mode="dp_aggregate")
    job = computed_job(
        world.domain,
        output_mode="dp_aggregate",
        params={"datasets": ["people"], "epsilon": 1.0, "epsilon_spent": 1.0},
    )
    world.domain.gate.process(
        job, [out], identifiers=world.index, sources=world.sources, auto_release_clean_dp=False
    )
    assert world.state(job) == "pending_review"

    def no_budget_check(*_: Any, **__: Any) -> None:
        raise AssertionError("approval must not consult the privacy budget")

    from egress import errors

    monkeypatch.setattr(errors.BudgetExhausted, "__init__", no_budget_check)
    outcome = approve(world.domain.gate, job, REVIEWER_A, NO_RISK)
    assert outcome.state == "released" and outcome.release is not None
    manifest = json.loads((outcome.release.path / "manifest.json").read_text())
    assert manifest["dp_cost"] == {"epsilon": 1.0, "delta": 0.0}


def test_a_clean_dp_output_auto_releases_when_the_scenario_allows(world: World) -> None:
    out = aggregate(world.conn, ["district"], [COUNT], mode="dp_aggregate")
    job = computed_job(world.domain, output_mode="dp_aggregate", params={"datasets": ["people"]})
    result = world.domain.gate.process(
        job, [out], identifiers=world.index, sources=world.sources, auto_release_clean_dp=True
    )
    assert result.route == "auto_released" and result.release_id is not None
    assert world.state(job) == "auto_released"


def test_an_auto_release_packages_exactly_what_the_gate_kept(world: World) -> None:
    """The gate hands its auto-release what it just kept, in memory; the folder must hold
    the very report and table that are stored, as a reviewer's release would."""
    import hashlib
    from pathlib import Path

    import pyarrow.parquet as pq

    from egress.registry import release_path
    from egress.release import verify_release

    out = aggregate(world.conn, ["district"], [COUNT], mode="dp_aggregate")
    job = computed_job(world.domain, output_mode="dp_aggregate", params={"datasets": ["people"]})
    gate = world.domain.gate
    result = gate.process(
        job, [out], identifiers=world.index, sources=world.sources, auto_release_clean_dp=True
    )
    assert result.release_id is not None
    with world.domain.engine.connect() as c:
        stored = gate.stored_report(c, job)
        [kept] = gate.load_outputs(c, job)
        folder = Path(release_path(c, result.release_id))
    assert stored is not None
    report_text = (folder / "report.json").read_text(encoding="utf-8").rstrip("\n")
    assert hashlib.sha256(report_text.encode()).hexdigest() == stored[1].report_sha256
    assert json.loads(report_text) == stored[0].to_dict()
    assert pq.read_table(folder / "data" / "result.parquet").equals(kept.table)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["job"]["id"] == job and manifest["review"]["auto_released"] is True
    assert manifest["checks"]["report_sha256"] == result.report_sha256
    assert verify_release(folder, gate.signer.public_key_hex).ok


# --- differencing through the history -----------------------------------------------------------


def test_differencing_pair_is_blocked_across_jobs_and_scenarios(any_world: World) -> None:
    w = any_world
    gate = w.domain.gate
    x = w.data.filter(pc.equal(w.data.column("district"), "A")).column("id_number")[0].as_py()
    first = w.run(aggregate(w.conn, [], [COUNT], where="district = 'A'", name="a"))
    approve(gate, first, REVIEWER_A, NO_RISK)
    probe = aggregate(w.conn, [], [COUNT], where=f"district = 'A' AND id_number <> '{x}'")
    for scenario in ("S-2026-001", "S-2026-002"):  # same scenario, then another one
        job = w.run(probe, scenario_id=scenario)
        with w.domain.engine.connect() as c:
            j = get_job(c, job)
            stored = gate.stored_report(c, job)
        assert (j.state, j.error_code) == ("refused", "egress.blocked")
        assert stored is not None
        [f] = [f for f in stored[0].findings if f.check == "differencing"]
        assert f.severity == "block"
        assert f.evidence["pairs"][0]["earlier"]["job_id"] == first
        assert f.evidence["pairs"][0]["earlier"]["scenario_id"] == "S-2026-001"


def test_pending_outputs_are_differenced_against_each_other(world: World) -> None:
    x = world.data.filter(pc.equal(world.data.column("district"), "B")).column("id_number")[0]
    world.run(aggregate(world.conn, [], [COUNT], where="district = 'B'"))
    second = world.run(
        aggregate(world.conn, [], [COUNT], where=f"district = 'B' AND id_number <> '{x}'")
    )
    assert world.state(second) == "refused"


def test_a_sealed_record_moved_to_another_row_does_not_open(world: World) -> None:
    world.run(district_counts(world))
    world.run(aggregate(world.conn, ["sex"], [COUNT]))
    with world.domain.engine.begin() as c:
        rows = list(c.execute(sa.select(egress_cell_history.c.id, egress_cell_history.c.sketch)))
        c.execute(
            egress_cell_history.update()
            .where(egress_cell_history.c.id == rows[0].id)
            .values(sketch=rows[1].sketch)
        )
    fresh = type(world.domain.gate)(
        world.domain.engine,
        world.domain.keys,
        world.domain.audit,
        world.domain.signer,
        world.domain.settings.releases_dir,
    )
    with world.domain.engine.connect() as c, pytest.raises(EgressError) as err:
        fresh.history.index(c, ["people"], 10)
    assert err.value.code == "egress.sealed_broken"


def test_the_audit_log_still_verifies_after_a_full_cycle(world: World) -> None:
    job = world.run(district_counts(world))
    approve(world.domain.gate, job, REVIEWER_A, NO_RISK)
    with world.domain.engine.connect() as c:
        assert world.domain.audit.verify(c).ok
        [product] = list_products(c)
        assert c.execute(sa.select(egress_products.c.status)).scalar() == "registered"
    assert product["sources"][0]["acquired_at"] == "2026-03-01"
    assert product["sources"][0]["provider"]["code"] == "GOV-CA-01"


def test_an_auto_release_that_crashed_is_finished_by_a_retry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import egress.release as release_mod

    out = aggregate(world.conn, ["district"], [COUNT], mode="dp_aggregate")
    job = computed_job(world.domain, output_mode="dp_aggregate", params={"datasets": ["people"]})
    gate = world.domain.gate
    report = gate.check(job, [out], identifiers=world.index, sources=world.sources)
    real = release_mod.release_job

    def crash(*_: Any, **__: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(release_mod, "release_job", crash)
    with pytest.raises(OSError):
        gate.submit(job, [out], report, auto_release_clean_dp=True)
    assert world.state(job) == "gated"
    monkeypatch.setattr(release_mod, "release_job", real)
    result = gate.submit(job, [out], report, auto_release_clean_dp=True)
    assert result.release_id is not None and world.state(job) == "auto_released"
