"""A DP SQL job's whole governed path, without Docker: the agent runs in a subprocess.

What the throughput work relies on staying true: a clean DP answer under a scenario that
auto-releases is charged, reported, held and released in one transaction (a verifiable
folder, the ledger and the audit chain agree); a job whose scenario was suspended after it
was queued is refused when it would run and charges nothing; a budget that cannot pay rolls
back everything the gate would have written, release folder included.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa

from egress.dp_tables import dp_charges
from egress.gate_tables import egress_outputs, egress_releases, egress_reports
from egress.release import verify_release
from enclave.catalog import load_meta
from enclave.tables import audit_log
from policies.scenario import parse_scenario
from sandbox.executor import run_job as run_in
from sandbox.fake_executor import FakeExecutor
from sandbox.job import JobOutput, JobSpec
from sandbox.limits import SandboxLimits
from shuyu import demo, jobs
from shuyu.context import Domain, init_domain
from shuyu.settings import Settings
from shuyu.synthetic import write_demo_data

SID = demo.SCENARIO_ID
COUNT_BY_DISTRICT = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"


class _Subprocess:
    """Stands in for ``domain.sandboxes``: each run is the real agent in a subprocess."""

    image_id = "sha256:" + "0" * 64

    def __init__(self, store: Path) -> None:
        self._store = store
        self.runs = 0

    def run(self, spec: JobSpec, *, warm: bool = False) -> JobOutput:
        self.runs += 1
        return run_in(FakeExecutor(SandboxLimits(timeout_s=60.0), self._store), spec)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Domain]:
    root = tmp_path_factory.mktemp("dp_path")
    domain = init_domain(Settings(home=root / "home", warm_pool_size=0))
    demo._people(domain, lambda _m: None)
    files = write_demo_data(root / "src", 3000, seed=7)
    domain.store.import_dataset(
        files.data_path, name="residents", meta=load_meta(files.meta_path), actor="authority"
    )
    raw = demo._scenario_yaml(date.today())
    raw["privacy_budget"] = {"epsilon": 3.0, "delta": 1e-6, "per_job_epsilon": 2.0}
    raw["auto_release_clean_dp"] = True
    domain.scenarios.grant("authority", parse_scenario(raw))
    req = domain.requests.create("operator", SID, "residents", note="test")
    domain.requests.approve("provider", req.id, reason="test")
    domain.__dict__["sandboxes"] = _Subprocess(domain.settings.store_dir)
    try:
        yield domain
    finally:
        domain.close()


def _runs(domain: Domain) -> int:
    """How many sandbox runs the stand-in has made."""
    return cast(_Subprocess, domain.__dict__["sandboxes"]).runs


def _submit(domain: Domain, sql: str, epsilon: float) -> dict[str, Any]:
    return jobs.submit(
        domain,
        domain.identity.get("operator"),
        SID,
        kind="sql",
        code=sql,
        output_mode="dp_aggregate",
        epsilon=epsilon,
    )


def _count(domain: Domain, table: sa.Table, job_id: str) -> int:
    with domain.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.job_id == job_id)
            ).scalar_one()
        )


def _actions(domain: Domain, job_id: str) -> list[str]:
    with domain.engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_log.c.action, audit_log.c.details)
            .where(
                (audit_log.c.target == job_id)
                | audit_log.c.details.contains(f'"job":"{job_id}"')
                | audit_log.c.details.contains(f'"job_id":"{job_id}"')
            )
            .order_by(audit_log.c.seq)
        ).all()
    return [r.action for r in rows]


def test_a_clean_dp_answer_is_charged_reported_and_released_together(world: Domain) -> None:
    view = _submit(world, COUNT_BY_DISTRICT, 0.5)
    assert view["state"] == "authorized"
    done = jobs.run_job(world, view["id"])
    assert done["state"] == "auto_released", done
    job_id = view["id"]
    assert _count(world, dp_charges, job_id) == 1
    assert _count(world, egress_reports, job_id) == 1
    assert _count(world, egress_outputs, job_id) == 1
    with world.engine.connect() as conn:
        rel = conn.execute(
            sa.select(egress_releases).where(egress_releases.c.job_id == job_id)
        ).one()
        assert world.audit.verify(conn).ok
    folder = Path(rel.path)
    check = verify_release(folder, public_key=world.signer.public_key_hex)
    assert check.ok, check.problems
    assert {p.name for p in (folder / "data").iterdir()} == {
        "result.parquet",
        "result.csv",
        "result.json",
    }
    # Every step is audited, in the order it happened.
    assert _actions(world, job_id) == [
        "job.submit",
        "access.decide",
        "job.authorized",
        "job.running",
        "access.decide",
        "key.release",
        "job.computed",
        "dp.charge",
        "job.gated",
        "egress.report",
        "job.auto_released",
        "release.create",
    ]
    # The released table is what the API hands out.
    table = jobs.result_table(world, world.identity.get("operator"), job_id)
    assert table.column_names[:2] == ["district", "n"] and table.num_rows > 0


def test_a_repeat_is_answered_from_the_first_release_and_charges_nothing(world: Domain) -> None:
    first = jobs.run_job(world, _submit(world, COUNT_BY_DISTRICT, 0.25)["id"])
    second = _submit(world, COUNT_BY_DISTRICT, 0.25)
    runs = _runs(world)
    assert jobs.run_job(world, second["id"])["state"] == "auto_released"
    assert _runs(world) == runs  # no second run, no second noisy draw
    assert _count(world, dp_charges, second["id"]) == 0
    op = world.identity.get("operator")
    assert jobs.result_table(world, op, second["id"]).equals(
        jobs.result_table(world, op, first["id"])
    )


def test_a_suspension_after_queueing_refuses_the_run_and_charges_nothing(world: Domain) -> None:
    view = _submit(world, "SELECT COUNT(*) AS n FROM residents", 0.2)
    world.scenarios.suspend("authority", SID, "inspection")
    runs = _runs(world)
    try:
        done = jobs.run_job(world, view["id"])
    finally:
        world.scenarios.resume("authority", SID, "inspection done")
    assert done["state"] == "refused"
    assert done["error_code"] == "policy.denied_at_run"
    assert "suspended" in (done["error_message"] or "")
    assert _runs(world) == runs  # no keys, no sandbox
    assert _count(world, dp_charges, view["id"]) == 0


def test_a_budget_spent_meanwhile_rolls_back_the_gate_and_the_release(
    world: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    from egress.ledger import Ledger

    view = _submit(world, "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex", 0.3)
    before = {p.name for p in (world.settings.home / "releases").iterdir()}
    # The budget is gone by the time the job is charged (another job took it after this
    # one was queued): the charge refuses inside the transaction that would have kept
    # and released the answer.
    real = Ledger._check_fits

    def exhausted(
        self: Ledger, scenario_id: str, status: Any, spent: Any, cost: Any, b: Any
    ) -> None:
        real(self, scenario_id, status, spent, cost, type(b)(0.01, b.delta))

    monkeypatch.setattr(Ledger, "_check_fits", exhausted)
    done = jobs.run_job(world, view["id"])
    assert done["state"] == "failed" and done["error_code"] == "egress.budget_exhausted"
    for table in (dp_charges, egress_reports, egress_outputs, egress_releases):
        assert _count(world, table, view["id"]) == 0
    assert {p.name for p in (world.settings.home / "releases").iterdir()} == before
    with world.engine.connect() as conn:
        assert world.audit.verify(conn).ok
    assert "dp.charge" in _actions(world, view["id"])  # the refusal is audited


def test_a_repeat_released_while_the_job_ran_is_what_the_job_releases(
    world: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger hands back the earlier answer inside the charge: the fresh noisy draw
    is dropped with its release folder, and the earlier answer goes through the gate."""
    from egress.ledger import Ledger

    sql = "SELECT district, SUM(age) AS s FROM residents GROUP BY district"
    first = jobs.run_job(world, _submit(world, sql, 0.2)["id"])
    assert first["state"] == "auto_released"
    second = _submit(world, sql, 0.2)
    releases = world.settings.home / "releases"
    before = {p.name for p in releases.iterdir()}
    # The run looks before the first job's answer is stored (it races it).
    monkeypatch.setattr(Ledger, "lookup", lambda *_a, **_k: None)
    runs = _runs(world)
    done = jobs.run_job(world, second["id"])
    assert done["state"] == "auto_released", done
    assert _runs(world) == runs + 1
    assert _count(world, dp_charges, second["id"]) == 0
    op = world.identity.get("operator")
    assert jobs.result_table(world, op, second["id"]).equals(
        jobs.result_table(world, op, first["id"])
    )
    assert len({p.name for p in releases.iterdir()} - before) == 1  # no orphan folder
    assert "dp.repeat" in _actions(world, second["id"])
    with world.engine.connect() as conn:
        assert world.audit.verify(conn).ok


def test_a_refused_key_release_is_recorded_with_the_claim_and_fails_the_job(
    world: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys are asked for in the claim's transaction: a refusal commits there (with
    the claim and the decision) and the job fails; no sandbox runs, nothing is charged."""
    from enclave.key_release import KeyReleaseService, key_releases

    view = _submit(world, "SELECT sex, SUM(age) AS s FROM residents GROUP BY sex", 0.1)
    # A host that claims one key too many (a column it may not read).
    real = KeyReleaseService.key_ids_from_catalog

    def greedy(metas: Any, columns: Any) -> frozenset[str]:
        return real(metas, columns) | {"ds_other.L4"}

    monkeypatch.setattr(KeyReleaseService, "key_ids_from_catalog", staticmethod(greedy))
    runs = _runs(world)
    done = jobs.run_job(world, view["id"])
    assert done["state"] == "failed" and done["error_code"] == "enclave.key_release_refused"
    assert _runs(world) == runs
    assert _count(world, dp_charges, view["id"]) == 0
    with world.engine.connect() as conn:
        recorded = conn.execute(
            sa.select(key_releases.c.result, key_releases.c.reason).where(
                key_releases.c.job_id == view["id"]
            )
        ).all()
        assert world.audit.verify(conn).ok
    assert [tuple(r) for r in recorded] == [("refused", "key_ids_mismatch")]
    actions = _actions(world, view["id"])
    assert actions[-4:] == ["job.running", "access.decide", "key.release", "job.failed"]
