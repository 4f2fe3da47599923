"""A model through the gate: its checks in the report, held sealed, released as skops + card."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from egress import review
from egress.checks import Finding, Thresholds, run_checks
from egress.errors import EgressError
from egress.models import (
    ModelCard,
    ModelData,
    ModelThresholds,
    check_model,
    dump_model,
    egress_findings,
)
from egress.models.output import model_output, model_parts
from egress.release import verify_release
from egress.report import EgressReport, build_report
from egress.review import approve
from shuyu.context import Domain
from tests.egress.gate_factories import REVIEWER_A, computed_job
from tests.egress.test_review import NO_RISK, World, make_world


@pytest.fixture
def world(domain: Domain) -> World:
    return make_world(domain)


def _checked(world: World, estimator: object) -> tuple[bytes, list[Finding], ModelCard]:
    data = world.data.to_pandas()
    x, y = data[["age", "income"]], data["income"] > data["income"].median()
    train, holdout = slice(0, 900), slice(900, None)
    blob = dump_model(estimator.fit(x[train], y[train]))  # type: ignore[attr-defined]
    report = check_model(
        blob,
        ModelData(x[train], y[train]),
        ModelData(x[holdout], y[holdout]),
        {"person_id": world.data.column("person_id").to_pylist()},
        ModelThresholds(),
    )
    return blob, egress_findings(report), report.card


def _gate(world: World, blob: bytes, findings: list[Finding], card: ModelCard) -> str:
    job = computed_job(world.domain, output_mode="model")
    output = model_output("risk", blob, card, ["people"])
    world.domain.gate.process(
        job,
        [output],
        precomputed={"risk": {"row_level": [], "identifiers": [], "model": findings}},
    )
    return job


def test_precomputed_checks_the_table_checks_do_not_know_count_in_the_report() -> None:
    output = model_output("m", b"PK", _card(), ["people"])
    found = [Finding("model.stores_training_rows", "block", "a k-NN model keeps its rows")]
    outcomes = run_checks(output, Thresholds(), precomputed={"model": found})
    assert [o.name for o in outcomes][-1] == "model"
    pre = {"m": {"row_level": [], "identifiers": [], "model": found}}
    report = build_report("J-1", [output], Thresholds(), precomputed=pre)
    assert report.verdict == "blocked"
    again = EgressReport.from_dict(json.loads(report.to_json()))
    assert again.to_json() == report.to_json()  # the model outcome keeps its finding count


def _card() -> ModelCard:
    return ModelCard("x.Y", [], {}, 0, 0, 0, 0, {}, [], "review", None, [])


def test_a_model_passes_the_gate_to_review_and_releases_as_skops_and_card(
    world: World,
) -> None:
    blob, findings, card = _checked(world, LogisticRegression(max_iter=500))
    job = _gate(world, blob, findings, card)
    assert world.state(job) == "pending_review"
    with world.domain.engine.connect() as conn:
        report, _ = world.domain.gate.stored_report(conn, job)  # type: ignore[misc]
    checks = {f.check for f in report.findings}
    assert {"model.review_required", "model.membership_inference", "model.refit"} <= checks
    outcome = approve(world.domain.gate, job, REVIEWER_A, NO_RISK)
    assert outcome.release is not None
    folder: Path = outcome.release.path
    names = sorted(p.relative_to(folder).as_posix() for p in (folder / "data").iterdir())
    assert names == ["data/risk.card.json", "data/risk.card.md", "data/risk.skops"]
    assert verify_release(folder).ok
    path = folder / "data" / "risk.skops"
    assert path.read_bytes() == blob
    model = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    assert type(model).__name__ == "LogisticRegression"
    card_json = json.loads((folder / "data" / "risk.card.json").read_text(encoding="utf-8"))
    assert card_json["format"]["bytes"] == len(blob) and card_json["verdict"] == "review"
    assert "# Model card" in (folder / "data" / "risk.card.md").read_text(encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert {f["format"] for f in manifest["files"]} == {"skops", "json", "markdown"}


def test_a_blocked_model_is_refused_and_never_held(world: World) -> None:
    blob, findings, card = _checked(world, KNeighborsClassifier())
    assert any(f.check == "model.stores_training_rows" and f.severity == "block" for f in findings)
    job = _gate(world, blob, findings, card)
    assert world.state(job) == "refused"
    with world.domain.engine.connect() as conn:
        assert world.domain.gate.load_outputs(conn, job) == []


def test_a_held_model_output_has_one_fixed_shape() -> None:
    output = model_output("m", b"PK-bytes", _card(), ["people"])
    assert model_parts(output.table)[0] == b"PK-bytes"
    with pytest.raises(EgressError):
        model_parts(pa.table({"model": [b"x"], "card_json": ["{}"]}))


def test_a_reviewer_sees_the_card_facts_never_the_model_bytes(world: World) -> None:
    blob, findings, card = _checked(world, LogisticRegression(max_iter=500))
    job = _gate(world, blob, findings, card)
    shown = review.show(world.domain.gate, job, REVIEWER_A)
    table = shown["outputs"][0]["table"]
    assert table.column_names == ["item", "value"]
    facts = dict(
        zip(table.column("item").to_pylist(), table.column("value").to_pylist(), strict=True)
    )
    assert facts["skops bytes"] == str(len(blob)) and "metric roc_auc" in facts
    json.dumps(table.to_pylist())  # what the API and the console render: plain text
