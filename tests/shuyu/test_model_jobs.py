"""Python model jobs end to end against the real Docker engine: sandbox, checks, gate, release."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import skops.io as sio

from egress.ledger import Budget, Ledger
from egress.models import EXTRA_TRUSTED_TYPES
from egress.release import verify_release
from egress.review import ReviewAnswers, approve
from enclave.audit import AuditLog
from shuyu import jobs
from shuyu.context import Domain, open_domain
from shuyu.demo import SCENARIO_ID, TRAIN_SCRIPT, run_demo
from shuyu.settings import Settings

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NO_RISK = ReviewAnswers(False, False, False, False)

KNN = """
from sklearn.compose import ColumnTransformer
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

df = shuyu.table("residents")
columns = ["age", "sex", "district"]
encode = ColumnTransformer([("onehot", OneHotEncoder(sparse_output=False), columns)])
model = Pipeline([("encode", encode), ("knn", KNeighborsClassifier(n_neighbors=5))])
model.fit(df[columns], df["income"] >= 30000)
shuyu.emit_model("knn", model, target="income >= 30000")
"""

IMPORTS_OS = """
import os
shuyu.emit_model("m", None)
"""

# passes the submit-time import check; the sandbox's attribute guard refuses it when it runs
REACHES_CTYPES = """
import numpy
numpy.ctypeslib
shuyu.emit_model("m", None)
"""


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # 200,000 rows: the 10% sample holds ~8,000 training and ~2,000 held-out persons (the
    # attacks count persons), so the noise floor (~0.034) sits well below the scenario's
    # 0.05 limit and a clean model is not blocked by chance (at 100,000 rows it is ~0.048)
    settings = Settings(home=tmp_path_factory.mktemp("models") / "home", warm_pool_size=0)
    lines: list[str] = []
    result = run_demo(settings, rows=200_000, say=lines.append)
    assert result.audit_ok, "\n".join(lines)
    assert result.jobs["model"]["state"] == "pending_review", "\n".join(lines)
    return settings


@pytest.fixture
def domain(demo_home: Settings) -> Any:
    d = open_domain(demo_home)
    yield d
    d.close()


def _submit(domain: Domain, code: str) -> dict[str, Any]:
    operator = domain.identity.get("operator")
    view = jobs.submit(domain, operator, SCENARIO_ID, kind="python", code=code, output_mode="model")
    return jobs.run_job(domain, view["id"])


def _findings(domain: Domain, job_id: str) -> dict[str, Any]:
    with domain.engine.connect() as conn:
        stored = domain.gate.stored_report(conn, job_id)
    assert stored is not None
    return {f.check: f for f in stored[0].findings}


def _why(domain: Domain, view: dict[str, Any]) -> str:
    """The job's error and the blocking findings, for an assertion message."""
    with domain.engine.connect() as conn:
        stored = domain.gate.stored_report(conn, view["id"])
    blocks = [] if stored is None else [f for f in stored[0].findings if f.severity == "block"]
    return f"{view['error_code']}: {view['error_message']}; " + "; ".join(
        f"{f.check}: {f.message}" for f in blocks
    )


def _spent(domain: Domain) -> float:
    scenario = domain.scenarios.get(SCENARIO_ID).scenario
    status = Ledger(domain.audit, domain.keys).status(
        domain.engine, SCENARIO_ID, Budget.of(scenario.privacy_budget)
    )
    return float(status.epsilon_left)


def test_a_logistic_regression_waits_for_two_reviewers_then_releases_with_its_card(
    domain: Domain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = _submit(domain, TRAIN_SCRIPT.read_text(encoding="utf-8"))
    assert view["state"] == "pending_review", _why(domain, view)
    found = _findings(domain, view["id"])
    membership = found["model.membership_inference"]
    assert membership.severity in ("info", "review")
    assert membership.evidence["advantage"] < membership.evidence["limit"] == 0.05
    assert found["model.refit"].severity == "info"  # the gate rebuilt the very training rows
    assert "model.review_required" in found

    first = approve(domain.gate, view["id"], "reviewer1", NO_RISK, reason="low risk")
    assert first.release is None  # grade L4: a second reviewer is needed
    second = approve(domain.gate, view["id"], "reviewer2", NO_RISK, reason="low risk")
    assert second.release is not None
    folder: Path = second.release.path
    assert verify_release(folder).ok
    path = folder / "data" / "income_model.skops"
    # as docs/models.md says: check the file's untrusted types against the allow-list, load
    untrusted = sio.get_untrusted_types(file=path)
    assert set(untrusted) <= set(EXTRA_TRUSTED_TYPES)
    model = sio.load(path, trusted=untrusted)
    assert type(model).__name__ == "Pipeline"
    assert list(model.feature_names_in_) == ["age", "sex", "district"]
    card = json.loads((folder / "data" / "income_model.card.json").read_text(encoding="utf-8"))
    assert card["training_rows"] > 4 * card["holdout_rows"] * 0.8
    assert 0.5 < card["metrics"]["roc_auc"] < 1
    assert (
        (folder / "data" / "income_model.card.md")
        .read_text(encoding="utf-8")
        .startswith("# Model card: Pipeline")
    )

    # the operator downloads it: a .skops file named after the job, the card next to it,
    # and the exact skops call (with its trusted types) printed to load it
    from typer.testing import CliRunner

    from shuyu.cli import app

    env = {"SHUYU_HOME": str(domain.settings.home)}
    monkeypatch.chdir(tmp_path)
    got = CliRunner().invoke(app, ["job", "result", view["id"], "--as", "operator"], env=env)
    assert got.exit_code == 0, got.output
    assert (tmp_path / f"{view['id']}.skops").read_bytes() == path.read_bytes()
    assert (tmp_path / f"{view['id']}.card.json").exists()
    assert "sio.load(" in got.output and "trusted=[" in got.output


def test_a_nearest_neighbours_model_is_refused_for_storing_training_rows(domain: Domain) -> None:
    view = _submit(domain, KNN)
    assert view["state"] == "refused", view
    assert view["error_code"] == "egress.blocked"
    assert _findings(domain, view["id"])["model.stores_training_rows"].severity == "block"
    with domain.engine.connect() as conn:
        assert domain.gate.load_outputs(conn, view["id"]) == []


def test_a_script_that_imports_os_is_refused_at_submit_and_nothing_is_queued(
    domain: Domain,
) -> None:
    from shuyu.errors import ServiceError

    operator = domain.identity.get("operator")
    before = len(jobs.list_jobs(domain, operator))
    with pytest.raises(ServiceError) as exc:
        _submit(domain, IMPORTS_OS)
    assert exc.value.code == "service.model_job_invalid" and "imports os" in exc.value.message
    assert len(jobs.list_jobs(domain, operator)) == before


def test_a_script_the_sandbox_refuses_fails_with_the_refusal_and_charges_nothing(
    domain: Domain,
) -> None:
    before = _spent(domain)
    view = _submit(domain, REACHES_CTYPES)
    assert view["state"] == "failed"
    assert view["error_code"] == "sandbox.python.not_allowed"
    assert _spent(domain) == before
    with domain.engine.connect() as conn:
        assert domain.gate.stored_report(conn, view["id"]) is None


def test_a_model_without_a_declared_target_is_refused_not_waved_through(domain: Domain) -> None:
    code = TRAIN_SCRIPT.read_text(encoding="utf-8").replace(', target="income >= 30000"', "")
    view = _submit(domain, code)
    assert view["state"] == "refused", view
    assert _findings(domain, view["id"])["model.target_unknown"].severity == "block"


def test_the_sample_view_key_release_is_audited_and_no_key_is_in_the_log(
    domain: Domain,
) -> None:
    with domain.engine.connect() as conn:
        entries = [e for e in AuditLog.entries(conn) if e.action == "key.release"]
    sample = [e for e in entries if (e.details or {}).get("purpose") == "sample_view"]
    assert sample and all(e.details["key_ids"] == [f"{SCENARIO_ID}.pseudonym"] for e in sample)


# --- DP models (diffprivlib) under a scenario that requires DP training --------------------

DP_JOB = """
from diffprivlib.models import LogisticRegression
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

df = shuyu.table("residents")
columns = ["sex", "district"]
onehot = OneHotEncoder(categories={categories!r}, handle_unknown="ignore", sparse_output=False)
encode = ColumnTransformer([("onehot", onehot, columns)])
classify = LogisticRegression(epsilon={epsilon!r}, data_norm=2.0)
model = Pipeline([("encode", encode), ("classify", classify)])
model.fit(df[columns], df["income"] >= 30000)
shuyu.emit_model("dp_income", model, target="income >= 30000")
"""


def _dp_job(epsilon: float) -> str:
    from shuyu.synthetic import DISTRICTS, SEXES

    categories = [list(SEXES), [name for _, name in DISTRICTS]]
    return DP_JOB.format(categories=categories, epsilon=epsilon)


def _dp_scenario(domain: Domain, scenario_id: str, *, total: float, per_job: float) -> None:
    """A scenario like the demo's, but DP training required and a small budget."""
    from datetime import date

    from policies.scenario import parse_scenario
    from shuyu.demo import _scenario_yaml

    data = _scenario_yaml(date.today())
    data.update(
        id=scenario_id,
        # DP bounds what any attack can learn; the attack limit is the default's 0.1 here
        models={"dp_training": True, "membership_inference_max_advantage": 0.1},
        privacy_budget={"epsilon": total, "delta": 1e-6, "per_job_epsilon": per_job},
    )
    domain.scenarios.grant("authority", parse_scenario(data))
    req = domain.requests.create("operator", scenario_id, "residents", note="DP model")
    domain.requests.approve("provider", req.id, reason="matches the agreed purpose")


def _submit_to(domain: Domain, scenario_id: str, code: str) -> dict[str, Any]:
    operator = domain.identity.get("operator")
    view = jobs.submit(domain, operator, scenario_id, kind="python", code=code, output_mode="model")
    return jobs.run_job(domain, view["id"])


def _charges(domain: Domain, scenario_id: str) -> list[tuple[str, float]]:
    ledger = Ledger(domain.audit, domain.keys)
    return [(c.job_id, c.epsilon) for c in ledger.charges(domain.engine, scenario_id)]


def test_a_dp_logistic_regression_is_charged_reviewed_and_released_loadable_with_skops(
    domain: Domain,
) -> None:
    _dp_scenario(domain, "S-2026-101", total=1.5, per_job=1.0)
    view = _submit_to(domain, "S-2026-101", _dp_job(0.8))
    assert view["state"] == "pending_review", _why(domain, view)
    found = _findings(domain, view["id"])
    assert "model.dp_required" not in found
    assert found["model.dp_epsilon"].severity == "info"
    assert found["model.dp_epsilon"].evidence["epsilon"] == 0.8  # read from the model
    # the ledger charged the model's own ε, pure DP, in the transaction that held it
    assert _charges(domain, "S-2026-101") == [(view["id"], 0.8)]
    ledger = Ledger(domain.audit, domain.keys)
    assert ledger.verify(domain.engine, "S-2026-101")

    approve(domain.gate, view["id"], "reviewer1", NO_RISK, reason="DP, low risk")
    second = approve(domain.gate, view["id"], "reviewer2", NO_RISK, reason="DP, low risk")
    assert second.release is not None
    folder: Path = second.release.path
    assert verify_release(folder).ok
    path = folder / "data" / "dp_income.skops"
    untrusted = sio.get_untrusted_types(file=path)
    assert "diffprivlib.models.logistic_regression.LogisticRegression" in untrusted
    assert set(untrusted) <= set(EXTRA_TRUSTED_TYPES)
    model = sio.load(path, trusted=untrusted)
    assert type(model.steps[-1][1]).__module__ == "diffprivlib.models.logistic_regression"
    assert model.steps[-1][1].epsilon == 0.8
    card = json.loads((folder / "data" / "dp_income.card.json").read_text(encoding="utf-8"))
    assert card["dp_epsilon"] == 0.8
    assert card["dp_classes"] == ["diffprivlib.models.logistic_regression.LogisticRegression"]
    assert card["dp_charge"]["epsilon"] == 0.8 and card["dp_charge"]["scenario"] == "S-2026-101"
    markdown = (folder / "data" / "dp_income.card.md").read_text(encoding="utf-8")
    assert "Privacy budget charged" in markdown


def test_a_plain_scikit_learn_model_under_a_dp_scenario_is_refused_and_charges_nothing(
    domain: Domain,
) -> None:
    _dp_scenario(domain, "S-2026-102", total=1.5, per_job=1.0)
    view = _submit_to(domain, "S-2026-102", TRAIN_SCRIPT.read_text(encoding="utf-8"))
    assert view["state"] == "refused", _why(domain, view)
    finding = _findings(domain, view["id"])["model.dp_required"]
    assert finding.severity == "block"
    assert "LogisticRegression" in finding.message
    assert finding.fix is not None
    assert "diffprivlib.models.LogisticRegression" in finding.fix.description
    assert _charges(domain, "S-2026-102") == []


def test_a_dp_model_over_the_per_job_epsilon_is_refused_and_charges_nothing(
    domain: Domain,
) -> None:
    _dp_scenario(domain, "S-2026-103", total=3.0, per_job=1.0)
    view = _submit_to(domain, "S-2026-103", _dp_job(1.5))
    assert view["state"] == "refused", _why(domain, view)
    assert _findings(domain, view["id"])["model.dp_epsilon"].severity == "block"
    assert _charges(domain, "S-2026-103") == []


def test_a_dp_model_the_budget_cannot_pay_for_fails_and_charges_nothing(domain: Domain) -> None:
    from egress.ledger import charge_model

    _dp_scenario(domain, "S-2026-104", total=1.0, per_job=1.0)
    scenario = domain.scenarios.get("S-2026-104").scenario
    ledger = Ledger(domain.audit, domain.keys)
    with domain.engine.begin() as conn:  # an earlier model spent 0.6 of 1.0
        charge_model(
            ledger,
            conn,
            scenario_id="S-2026-104",
            job_id="J-earlier",
            model_sha256="0" * 64,
            epsilon=0.6,
            budget=Budget.of(scenario.privacy_budget),
        )
    view = _submit_to(domain, "S-2026-104", _dp_job(0.8))
    assert view["state"] == "failed", _why(domain, view)
    assert view["error_code"] == "egress.budget_exhausted"
    assert _charges(domain, "S-2026-104") == [("J-earlier", 0.6)]
    with domain.engine.connect() as conn:  # the gate's transaction rolled back whole
        assert domain.gate.stored_report(conn, view["id"]) is None
        assert domain.gate.load_outputs(conn, view["id"]) == []
    with domain.engine.connect() as conn:
        denied = [
            e.details
            for e in AuditLog.entries(conn)
            if e.action == "dp.charge" and e.result == "denied"
        ]
    assert any((d or {}).get("job") == view["id"] for d in denied)


def test_the_checks_run_in_a_sandbox_and_the_worker_never_reads_the_rows(
    domain: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model checks run as a check job in a second sandbox: the worker sends the model and
    the split's statements, gets a report back, and never opens the dataset itself."""

    def no_trusted_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the worker read the dataset")

    monkeypatch.setattr(domain.store, "open_dataset_for_trusted_read", no_trusted_read)
    sent: list[Any] = []
    real_run = domain.sandboxes.run

    def run(spec: Any, **kwargs: Any) -> Any:
        sent.append(spec)
        out = real_run(spec, **kwargs)
        sent.append(out)
        return out

    monkeypatch.setattr(domain.sandboxes, "run", run)
    view = _submit(domain, TRAIN_SCRIPT.read_text(encoding="utf-8"))
    assert view["state"] == "pending_review", _why(domain, view)
    train, _, check, checked = sent
    assert (train.kind, check.kind) == ("python", "check")
    assert check.code == "" and check.tables == train.tables  # no operator code, same grant
    assert set(checked.reports) == {"report"} and not checked.tables and not checked.models
    found = _findings(domain, view["id"])
    assert found["model.refit"].severity == "info"  # the sandbox rebuilt the very rows
    # what came out of the check sandbox is a report: no value of an identifying column
    report = checked.reports["report"].decode()
    assert "model.membership_inference" in report
    ids = _sample_identifiers(domain, check)
    assert ids and not any(str(v) in report for v in ids if len(str(v)) >= 6)
    with domain.engine.connect() as conn:
        checked = [
            e
            for e in AuditLog.entries(conn)
            if e.action == "model.checked" and e.target == view["id"]
        ]
    assert len(checked) == 1 and checked[0].details["verdict"] == "review"
    assert checked[0].details["image_id"] == domain.sandboxes.image_id


def _sample_identifiers(domain: Domain, check: Any) -> list[object]:
    """The identifying values the check job saw, made again by running its job line's
    datasets and prelude through the agent's own code in this process (trusted test code,
    with the job's keys)."""
    from sandbox.agent.crypto import KeyRing, decode_keys
    from sandbox.agent.data import TableCache, parse_datasets
    from sandbox.agent.prelude import parse_prelude, run_prelude
    from sandbox.limits import SandboxLimits

    body = json.loads(bytes(check.job_line(SandboxLimits())))
    ring = KeyRing(decode_keys(body["keys"]))
    tables = TableCache(domain.settings.store_dir).load(parse_datasets(body["datasets"]), ring)
    prelude = parse_prelude(body["prelude"])
    assert prelude is not None
    made = run_prelude(prelude, tables)
    request = body["check"]
    values: list[object] = []
    for side in (request["train"], request["holdout"]):
        for column in request["identifiers"]:
            if column in made[side].column_names:
                values += made[side].column(column).to_pylist()[:200]
    return values
