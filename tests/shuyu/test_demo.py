"""The demo flow end to end against the real Docker engine, and what users rely on around it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from egress.dp_tables import dp_charges
from egress.ledger import Budget, Ledger
from egress.release import verify_release
from enclave.jobstore import get_job
from policies.errors import ShuyuError
from shuyu import jobs
from shuyu.context import open_domain
from shuyu.demo import DP_SQL, SCENARIO_ID, run_demo
from shuyu.settings import Settings

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("demo") / "home", warm_pool_size=0)
    lines: list[str] = []
    # 200,000 rows: the model step's 10% sample must be big enough for the membership
    # attack to tell a leak from chance. The attack counts persons, not rows, so at
    # 100,000 rows its noise floor (~0.048) sits at the scenario's 0.05 limit and a clean
    # model would be refused in a few runs out of a hundred; at 200,000 it is ~0.034.
    result = run_demo(settings, rows=200_000, say=lines.append)
    assert result.audit_ok, "\n".join(lines)
    assert {v["state"] for v in result.jobs.values()} == {"pending_review"}, "\n".join(lines)
    return settings


def _submit(
    settings: Settings,
    code: str,
    mode: str = "dp_aggregate",
    epsilon: float | None = 0.3,
    run: bool = True,
) -> dict[str, Any]:
    """Submit as the demo operator under the demo scenario and (by default) run it."""
    domain = open_domain(settings)
    view = jobs.submit(
        domain,
        domain.identity.get("operator"),
        SCENARIO_ID,
        kind="sql",
        code=code,
        output_mode=mode,
        epsilon=epsilon if mode == "dp_aggregate" else None,
    )
    return jobs.run_job(domain, view["id"]) if run else view


def test_demo_releases_both_outputs_signed_and_verifiable(demo_home: Settings) -> None:
    releases = [p for p in (demo_home.home / "releases").iterdir() if p.is_dir()]
    assert len(releases) == 3  # the DP aggregate, the SDC aggregate, the model
    for folder in releases:
        check = verify_release(folder)
        assert check.ok, check.problems
    # a changed byte in a released file is caught offline
    table_release = next(r for r in releases if any(r.rglob("*.csv")))
    victim = next(p for p in table_release.rglob("*.csv"))
    victim.write_bytes(victim.read_bytes().replace(b",", b";", 1))
    assert not verify_release(table_release).ok


def test_repeating_a_dp_query_returns_the_same_answer_and_charges_nothing(
    demo_home: Settings,
) -> None:
    domain = open_domain(demo_home)
    with domain.engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(dp_charges)).scalar_one()
    view = _submit(demo_home, DP_SQL, epsilon=1.0)
    assert view["state"] == "pending_review"
    with domain.engine.connect() as conn:
        after = conn.execute(sa.select(sa.func.count()).select_from(dp_charges)).scalar_one()
    assert after == before


def test_a_column_outside_the_scenario_is_refused_with_its_reason_and_charges_nothing(
    demo_home: Settings,
) -> None:
    domain = open_domain(demo_home)
    operator = domain.identity.get("operator")
    ledger = Ledger(domain.audit, domain.keys)
    scenario = domain.scenarios.get(SCENARIO_ID).scenario
    spent = ledger.status(domain.engine, SCENARIO_ID, Budget.of(scenario.privacy_budget))
    with pytest.raises(ShuyuError) as exc:
        jobs.submit(
            domain,
            operator,
            SCENARIO_ID,
            kind="sql",
            code="SELECT name, COUNT(*) AS n FROM residents GROUP BY name",
            output_mode="sdc_aggregate",
        )
    assert "name" in str(exc.value)
    after = ledger.status(domain.engine, SCENARIO_ID, Budget.of(scenario.privacy_budget))
    assert after.epsilon_left == spent.epsilon_left


def test_a_malformed_model_job_is_refused_at_submit_and_queues_nothing(
    demo_home: Settings,
) -> None:
    domain = open_domain(demo_home)
    operator = domain.identity.get("operator")
    before = len(jobs.list_jobs(domain, operator, SCENARIO_ID))
    code = "import os\nshuyu.emit_model('m', model, table='residents', target='income')\n"
    with pytest.raises(ShuyuError) as exc:
        jobs.submit(domain, operator, SCENARIO_ID, kind="python", code=code, output_mode="model")
    assert exc.value.code == "service.model_job_invalid"
    assert "os" in exc.value.message
    assert len(jobs.list_jobs(domain, operator, SCENARIO_ID)) == before


def test_a_runner_that_lost_a_job_to_another_process_leaves_it_alone(
    demo_home: Settings,
) -> None:
    # Runner B read the job while it was authorized; runner A (another process) then took
    # it through to review. B's claim must fail quietly, not fail A's job.
    view = _submit(
        demo_home,
        "SELECT district, COUNT(*) AS n FROM residents GROUP BY district",
        epsilon=0.21,
        run=False,
    )
    domain = open_domain(demo_home)
    with domain.engine.connect() as conn:
        stale = get_job(conn, view["id"])
    assert stale.state == "authorized"
    assert jobs.run_job(domain, view["id"])["state"] == "pending_review"  # runner A
    claim = jobs._Claim()
    assert jobs._decide_again(domain, stale, claim) is None  # runner B
    assert claim.held is False
    with domain.engine.connect() as conn:
        assert get_job(conn, view["id"]).state == "pending_review"


def test_a_job_whose_sandbox_fails_charges_nothing(demo_home: Settings, tmp_path: Path) -> None:
    domain = open_domain(demo_home)
    ledger = Ledger(domain.audit, domain.keys)
    budget = Budget.of(domain.scenarios.get(SCENARIO_ID).scenario.privacy_budget)
    before = ledger.status(domain.engine, SCENARIO_ID, budget)
    view = _submit(
        demo_home, "SELECT COUNT(*) AS n FROM residents WHERE visits > 3", epsilon=0.5, run=False
    )
    # the recorded image disappears between authorization and the run
    from sandbox.tables import sandbox_images

    with domain.engine.begin() as conn:
        saved = [dict(r._mapping) for r in conn.execute(sa.select(sandbox_images))]
        conn.execute(sandbox_images.delete())
    try:
        view = jobs.run_job(domain, view["id"])
    finally:
        with domain.engine.begin() as conn:
            conn.execute(sandbox_images.insert(), saved)
    assert view["state"] == "failed" and view["error_code"]
    after = ledger.status(domain.engine, SCENARIO_ID, budget)
    assert after.epsilon_left == before.epsilon_left
    with domain.engine.connect() as conn:
        assert get_job(conn, view["id"]).state == "failed"


def test_a_differencing_pair_across_two_jobs_is_blocked(demo_home: Settings) -> None:
    """count where district = A, then the same minus one person: the second is blocked."""
    domain = open_domain(demo_home)
    first = _submit(
        demo_home,
        "SELECT district, COUNT(*) AS n FROM residents WHERE age >= 30 GROUP BY district",
        "sdc_aggregate",
    )
    assert first["state"] == "pending_review", first
    second = _submit(
        demo_home,
        "SELECT district, COUNT(*) AS n FROM residents "
        "WHERE age >= 30 AND age <> 99 GROUP BY district",
        "sdc_aggregate",
    )
    assert second["state"] == "refused"
    with domain.engine.connect() as conn:
        report, _ = domain.gate.stored_report(conn, second["id"])  # type: ignore[misc]
    checks = {f.check for o in report.outputs for f in o.findings if f.severity == "block"}
    assert "differencing" in checks


def test_identifier_hashes_are_built_once_per_dataset_version(demo_home: Settings) -> None:
    """The second disclosure-checked job of a server reuses the first one's identifier
    hashes: no second cold sandbox, no second key release to the gate."""
    domain = open_domain(demo_home)
    operator = domain.identity.get("operator")

    def sdc(sql: str) -> str:
        view = jobs.submit(
            domain, operator, SCENARIO_ID, kind="sql", code=sql, output_mode="sdc_aggregate"
        )
        assert jobs.run_job(domain, view["id"])["state"] in ("pending_review", "refused")
        return str(view["id"])

    def gate_releases(job_id: str) -> int:
        with domain.engine.connect() as conn:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT seq FROM audit_log WHERE action = 'key.release' "
                        "AND actor = 'gate' AND target = :j"
                    ),
                    {"j": job_id},
                ).all()
            )

    first = sdc("SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex")
    second = sdc("SELECT sex, AVG(age) AS a FROM residents GROUP BY sex")
    assert gate_releases(first) == 1
    assert gate_releases(second) == 0


def test_count_star_reads_no_column_and_still_runs(demo_home: Settings) -> None:
    """COUNT(*) names no column: the key service still releases the unit for bounding."""
    view = _submit(demo_home, "SELECT COUNT(*) AS n FROM residents", epsilon=0.2)
    assert view["state"] == "pending_review", view


def test_a_job_queued_before_a_suspension_is_refused_when_it_would_run(
    demo_home: Settings,
) -> None:
    domain = open_domain(demo_home)
    view = _submit(demo_home, "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex", run=False)
    assert view["state"] == "authorized"
    domain.scenarios.suspend("authority", SCENARIO_ID, "inspection")
    try:
        view = jobs.run_job(domain, view["id"])
    finally:
        domain.scenarios.resume("authority", SCENARIO_ID, "inspection done")
    assert view["state"] == "refused"
    assert "suspended" in (view["error_message"] or "")


def test_revoking_the_scenario_destroys_its_unreleased_outputs_and_keeps_the_log(  # last: revokes
    demo_home: Settings,
) -> None:
    from egress.gate_tables import egress_outputs

    domain = open_domain(demo_home)
    operator = domain.identity.get("operator")
    view = _submit(
        demo_home, "SELECT benefit_type, COUNT(*) AS n FROM residents GROUP BY benefit_type"
    )
    assert view["state"] == "pending_review"
    with domain.engine.connect() as conn:
        held = conn.execute(
            sa.select(sa.func.count())
            .select_from(egress_outputs)
            .where(egress_outputs.c.job_id == view["id"])
        ).scalar_one()
    assert held == 1
    domain.scenarios.revoke("authority", SCENARIO_ID, "end of the pilot")
    with domain.engine.connect() as conn:
        held = conn.execute(
            sa.select(sa.func.count())
            .select_from(egress_outputs)
            .where(egress_outputs.c.job_id == view["id"])
        ).scalar_one()
        assert domain.audit.verify(conn).ok
    assert held == 0
    with pytest.raises(ShuyuError):
        jobs.submit(
            domain,
            operator,
            SCENARIO_ID,
            kind="sql",
            output_mode="dp_aggregate",
            code="SELECT COUNT(*) AS n FROM residents",
            epsilon=0.3,
        )


def _decisions(domain: Any, job_id: str) -> int:
    """How many access decisions the audit log holds for ``job_id``."""
    from enclave.tables import audit_log

    with domain.engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_log.c.details).where(audit_log.c.action == "access.decide")
        ).all()
    return sum(1 for (details,) in rows if job_id in str(details))


def test_one_request_takes_a_query_to_its_answer_or_says_why_not(demo_home: Settings) -> None:
    """Through the HTTP API with the real runner and sandbox. Under a scenario that releases
    clean DP answers, ``Client.query`` is one request and brings the table back; under one
    like the demo's (every answer reviewed) the held submit answers once the job waits for
    a reviewer, and ``query`` raises NotReleased with the job."""
    from datetime import date

    import httpx
    from fastapi.testclient import TestClient

    from policies.scenario import parse_scenario
    from shuyu.api.app import create_app
    from shuyu.client import Client
    from shuyu.demo import _scenario_yaml
    from shuyu.errors import NotReleased
    from shuyu.jobs import JobRunner

    domain = open_domain(demo_home)
    # Scenarios of their own: other tests of this module revoke the demo's.
    for sid, auto in (("S-2026-077", True), ("S-2026-078", False)):
        raw = _scenario_yaml(date.today())
        raw.update(id=sid, auto_release_clean_dp=auto)
        domain.scenarios.grant("authority", parse_scenario(raw))
        req = domain.requests.create("operator", sid, "residents", note="one request")
        domain.requests.approve("provider", req.id, reason="test")
    token = domain.identity.create_token("authority", "operator", ttl_days=1).secret
    requests: list[str] = []
    app = create_app(domain, runner=JobRunner(domain, poll_s=5.0), console=False)
    with TestClient(app) as http:
        http.timeout = httpx.Timeout(120.0)  # the SDK holds requests up to its read timeout
        http.event_hooks["request"].append(lambda r: requests.append(f"{r.method} {r.url.path}"))
        sy = Client("http://testserver", token, http=http)

        answer = sy.query("S-2026-077", DP_SQL, epsilon=0.3)
        assert requests == ["POST /v1/jobs"]
        assert answer.state == "auto_released"
        assert {"district", "residents", "avg_income"} <= set(answer.table.column_names)
        assert answer.table.num_rows > 0
        assert sy.result(answer.job_id).equals(answer.table)  # the same released answer
        # It ran in the request: decided once, authorized and claimed in one transaction.
        assert _decisions(domain, answer.job_id) == 1

        # Every inline slot busy: the runner takes the job (deciding again before it runs)
        # and the request still answers with the table.
        slots = app.state.inline_runs
        taken = [slots.acquire(blocking=False) for _ in range(domain.settings.job_workers)]
        assert all(taken)
        try:
            queued = sy.query("S-2026-077", DP_SQL, epsilon=0.31)
        finally:
            for _ in taken:
                slots.release()
        assert queued.state == "auto_released" and queued.table.num_rows > 0
        assert _decisions(domain, queued.job_id) == 2

        requests.clear()
        view = sy.submit_sql("S-2026-078", DP_SQL, epsilon=0.07, wait_s=60)
        assert view.state == "pending_review", view
        assert requests == ["POST /v1/jobs"]
        with pytest.raises(NotReleased, match="pending_review") as caught:
            sy.query("S-2026-078", DP_SQL, epsilon=0.08)
        assert caught.value.job.state == "pending_review"
        assert "reviewer" in caught.value.hint
    with domain.engine.connect() as conn:
        assert get_job(conn, view.id).state == "pending_review"
    domain.close()
