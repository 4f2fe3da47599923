"""The full demo: every role, one scenario, from raw file to a verified, signed release.

``shuyu demo run`` calls :func:`run_demo`; ``tests/shuyu/test_demo.py`` calls it too, on a
small table, so the demo the README promises is tested against the real Docker engine.
Each step prints what happened and which command (or API call) does the same by hand.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from egress.release import verify_release
from egress.review import ReviewAnswers, approve
from enclave.catalog import load_meta
from enclave.identity import PersonnelSteps
from policies.scenario import parse_scenario
from sandbox.engine import docker_client
from sandbox.image import build_image
from sandbox.image_record import record_image
from shuyu import jobs
from shuyu.context import Domain, init_domain, open_domain
from shuyu.settings import Settings
from shuyu.synthetic import write_demo_data

__all__ = ["DemoResult", "run_demo"]

OPERATOR_ORG = "DEMO-OPERATOR-01"
AUTHORITY_ORG = "DEMO-CITY-DATA"
PROVIDER_ORG = "DEMO-430100-MZJ"
SCENARIO_ID = "S-2026-001"

DP_SQL = (
    "SELECT district, COUNT(*) AS residents, AVG(income) AS avg_income "
    "FROM residents WHERE age >= 60 GROUP BY district"
)
SDC_SQL = "SELECT district, sex, COUNT(*) AS n FROM residents GROUP BY district, sex"
#: The model job: a logistic regression in RestrictedPython (``shuyu job submit --python``).
TRAIN_SCRIPT = Path(__file__).parent / "examples" / "train_logreg.py"

Say = Callable[[str], None]


@dataclass
class DemoResult:
    home: Path
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    releases: list[Path] = field(default_factory=list)
    audit_ok: bool = False
    seconds: float = 0.0


def _scenario_yaml(today: date) -> dict[str, Any]:
    return {
        "id": SCENARIO_ID,
        "title": "Elderly residents' income support by district",
        "operator_org": OPERATOR_ORG,
        "purpose": "Plan social-benefit outreach for residents aged 60 and over, per district.",
        "use_class": "public_welfare",
        "datasets": {
            "residents": {
                "columns": [
                    "person_id",
                    "district",
                    "age",
                    "sex",
                    "income",
                    "benefit_type",
                    "visits",
                ],
            }
        },
        "job_kinds": ["sql", "python"],
        "output_modes": ["dp_aggregate", "sdc_aggregate", "model"],
        "privacy_budget": {
            "epsilon": 10.0,
            "delta": 1e-6,
            "per_job_epsilon": 2.0,
            "per_job_delta": 1e-8,
        },
        "auto_release_clean_dp": False,
        "models": {"dp_training": False},
        "validity": {"start": today.isoformat(), "end": (today + timedelta(days=364)).isoformat()},
    }


def _ensure_image(domain: Domain, say: Say) -> None:
    from sandbox.errors import ImageError
    from sandbox.image_record import current_image_id, stale_image

    try:
        with domain.engine.connect() as conn:
            current_image_id(conn)
            why = stale_image(conn)
        if why is None:
            return
        say(why)
    except ImageError:
        say("no sandbox image recorded in this domain yet")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shuyu" / "image"
    say("building the sandbox image (offline if no registry; cached by content hash) …")
    built = build_image(
        docker_client(timeout_s=900),
        domain.settings.sandbox_image,
        cache,
        method="auto",
        progress=lambda m: None,
    )
    with domain.engine.begin() as conn:
        record_image(conn, domain.audit, built, actor="demo")
    say(f"  sandbox image {built.image_id[:19]}…  (jobs run only on this image)")


def _people(domain: Domain, say: Say) -> None:
    ident = domain.identity
    ident.add_user(
        None,
        "authority",
        org=AUTHORITY_ORG,
        roles=["authority"],
        display_name="市数据局 authority",
    )
    ident.add_user("authority", "auditor", org=AUTHORITY_ORG, roles=["auditor"])
    ident.add_user(
        "authority",
        "provider",
        org=PROVIDER_ORG,
        roles=["provider"],
        display_name="市民政局 provider",
    )
    ident.add_user(
        "authority",
        "operator",
        org=OPERATOR_ORG,
        roles=["operator"],
        display_name="operator analyst",
    )
    ident.add_user("authority", "reviewer1", org=AUTHORITY_ORG, roles=["reviewer"])
    ident.add_user("authority", "reviewer2", org=AUTHORITY_ORG, roles=["reviewer"])
    today = date.today()
    ident.activate(
        "authority",
        "operator",
        PersonnelSteps(
            real_name_ref="RN-0001",
            real_name_verified_on=today,
            training_ref="TR-0001",
            trained_on=today,
            agreement_ref="NDA-0001",
            agreement_signed_on=today,
            agreement_valid_from=today,
            agreement_valid_until=today + timedelta(days=365),
        ),
    )
    say(
        "people: authority, auditor, provider, operator (verified, trained, NDA signed), "
        "reviewer1, reviewer2"
    )


def _approve_all(
    domain: Domain, job_id: str, say: Say, reason: str = "aggregates only; within purpose"
) -> None:
    answers = ReviewAnswers(
        beyond_scope=False, direct_exposure=False, model_attack=False, other_risk=False
    )
    for reviewer in ("reviewer1", "reviewer2"):
        with domain.engine.connect() as conn:
            from enclave.jobstore import get_job

            if get_job(conn, job_id).state != "pending_review":
                break
        approve(domain.gate, job_id, reviewer, answers, reason=reason)
        say(f"  {reviewer} approved {job_id} (answered the four R1.3 questions: no risk)")


def _say_model(domain: Domain, job_id: str, say: Say) -> None:
    """The model's membership advantage and the card's summary, from the gate's report."""
    with domain.engine.connect() as conn:
        stored = domain.gate.stored_report(conn, job_id)
        held = domain.gate.load_outputs(conn, job_id)
    if stored is None:
        return
    for f in stored[0].findings:
        if f.check == "model.membership_inference":
            e = f.evidence
            say(
                f"  membership inference: advantage {e.get('advantage')} (AUC {e.get('auc')}, "
                f"noise floor {e.get('noise_floor')}, limit {e.get('limit')}) -> {f.severity}"
            )
    if held and held[0].mode == "model":
        from egress.models.output import model_parts

        card = json.loads(model_parts(held[0].table)[1])
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(card["metrics"].items()))
        say(
            f"  card: {card['model_class'].rsplit('.', 1)[-1]} "
            f"({' -> '.join(card['structure'][1:]) or 'one step'}), "
            f"{card['parameters']} parameters, {card['training_rows']:,} training / "
            f"{card['holdout_rows']:,} holdout rows of the sample; {metrics}"
        )


def run_demo(settings: Settings, *, rows: int = 1_000_000, say: Say = print) -> DemoResult:
    """Run the whole flow in ``settings.home`` (a fresh domain, or resume an existing one)."""
    started = time.monotonic()
    fresh = not settings.master_key_path.exists()
    domain = init_domain(settings) if fresh else open_domain(settings)
    result = DemoResult(home=settings.home)
    say(
        f"domain at {settings.home} ({'new' if fresh else 'existing'}; "
        f"database {settings.resolved_database_url})"
    )
    _ensure_image(domain, say)
    if fresh:
        _people(domain, say)
        data_dir = settings.home / "demo-data"
        say(f"generating {rows:,} synthetic residents …")
        files = write_demo_data(data_dir, rows, seed=7)
        meta = load_meta(files.meta_path)
        rec = domain.store.import_dataset(
            files.data_path, name="residents", meta=meta, actor="authority"
        )
        say(
            f"imported `residents` v{rec.version}: {rec.num_rows:,} rows, encrypted per grade "
            f"(grade {rec.grade}); raw file removed"
        )
        files.data_path.unlink()
        scenario = parse_scenario(_scenario_yaml(date.today()))
        domain.scenarios.grant("authority", scenario)
        say(
            f"granted scenario {SCENARIO_ID}: residents' non-identifying columns, "
            "budget ε=10, two-reviewer review (grade L4)"
        )
        req = domain.requests.create("operator", SCENARIO_ID, "residents", note="outreach planning")
        domain.requests.approve("provider", req.id, reason="matches the agreed purpose")
        say("operator requested `residents`; the provider approved (R2.4)")
    operator = domain.identity.get("operator")

    say("\n1) dry run: cost and accuracy before touching data")
    dry = jobs.submit(
        domain,
        operator,
        SCENARIO_ID,
        kind="sql",
        code=DP_SQL,
        output_mode="dp_aggregate",
        epsilon=1.0,
        dry_run=True,
    )
    dp = dry.get("dp", {})
    say(f"  ε={dp.get('epsilon', 0):.3f} δ={dp.get('delta', 0):.2g}; allowed={dry['allowed']}")
    for col in dp.get("columns", []):
        hw = col.get("half_width_95") or col.get("half_width_95_at_rows")
        say(f"  {col['name']}: {col['mechanism']}, 95% error ±{hw}")

    say("\n2) a DP query, run in a hardened sandbox, noised at the gate")
    view = jobs.submit(
        domain,
        operator,
        SCENARIO_ID,
        kind="sql",
        code=DP_SQL,
        output_mode="dp_aggregate",
        epsilon=1.0,
    )
    view = jobs.run_job(domain, view["id"])
    result.jobs["dp"] = view
    say(f"  job {view['id']}: {view['state']} {view.get('error_code') or ''}")

    say("\n3) a disclosure-checked aggregate (no DP: small cells, dominance, differencing)")
    view = jobs.submit(
        domain, operator, SCENARIO_ID, kind="sql", code=SDC_SQL, output_mode="sdc_aggregate"
    )
    view = jobs.run_job(domain, view["id"])
    result.jobs["sdc"] = view
    say(f"  job {view['id']}: {view['state']} {view.get('error_code') or ''}")

    say("\n3b) a model: logistic regression trained in the sandbox on the desensitized sample")
    view = jobs.submit(
        domain,
        operator,
        SCENARIO_ID,
        kind="python",
        code=TRAIN_SCRIPT.read_text(encoding="utf-8"),
        output_mode="model",
    )
    view = jobs.run_job(domain, view["id"])
    result.jobs["model"] = view
    say(f"  job {view['id']}: {view['state']} {view.get('error_code') or ''}")
    _say_model(domain, view["id"], say)

    say("\n4) egress reports and review (two reviewers: the data is grade L4)")
    for name, view in result.jobs.items():
        with domain.engine.connect() as conn:
            stored = domain.gate.stored_report(conn, view["id"])
        if stored is not None:
            report = stored[0]
            say(f"  {name}: verdict {report.verdict}")
            for o in report.outputs:
                for f in o.findings:
                    say(f"    ({f.severity}) {f.check}: {f.message}")
        if view["state"] == "pending_review":
            reason = (
                "a regularised logistic regression; membership advantage within the limit"
                if name == "model"
                else "aggregates only; within purpose"
            )
            _approve_all(domain, view["id"], say, reason)

    say("\n5) releases, signed and verified offline")
    releases_root = settings.home / "releases"
    for folder in sorted(releases_root.glob("*")) if releases_root.exists() else []:
        if not folder.is_dir():
            continue
        check = verify_release(folder)
        say(f"  {folder.name}: {'verifies' if check.ok else 'DOES NOT VERIFY'}")
        result.releases.append(folder)

    with domain.engine.connect() as conn:
        verification = domain.audit.verify(conn)
    result.audit_ok = verification.ok
    say(
        f"\n6) audit log: {'verifies' if verification.ok else 'BROKEN'} "
        f"({verification.entries} entries, {verification.checkpoints} signed checkpoints)"
    )
    result.seconds = time.monotonic() - started
    say(
        f"\ndone in {result.seconds:.0f} s. Next: `shuyu serve` and open "
        f"http://{settings.host}:{settings.port}/console ; `shuyu audit verify`; "
        f"`shuyu release verify {releases_root}/<id>`"
    )
    domain.close()
    return result
