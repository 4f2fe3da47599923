"""Acceptance tests of the model checks (issue 7): what gets blocked, what goes to review.

Data: the demo resident table (``shuyu.synthetic``), one row per benefit record, with a
target that depends on income and age plus noise, so models have something to learn and
something to overfit. Everything is seeded; each test takes well under a few seconds.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from egress.models import (
    ModelCheckReport,
    ModelData,
    ModelThresholds,
    check_model,
    dump_model,
    egress_findings,
    thresholds_for,
)
from policies.scenario import ModelPolicy
from shuyu.synthetic import demo_batches

FEATURES = ["age", "income_10k", "benefit_amount_1k", "visits", "male"]


@cache
def residents(rows: int = 6000, seed: int = 7) -> pd.DataFrame:
    """Demo residents with a learnable, noisy target ``needs_help``."""
    table = pa.Table.from_batches(list(demo_batches(rows, seed=seed)))
    frame = table.to_pandas()
    rng = np.random.default_rng(seed)
    frame["male"] = (frame["sex"] == "男").astype(np.int64)
    frame["income_10k"] = frame["income"] / 10_000
    frame["benefit_amount_1k"] = frame["benefit_amount"] / 1_000
    score = -frame["income"] / 20_000 + frame["age"] / 40 + rng.normal(0, 1.0, len(frame))
    frame["needs_help"] = (score > np.median(score)).astype(np.int64)
    return frame


def split(rows: int = 6000) -> tuple[ModelData, ModelData, dict[str, list[Any]]]:
    """Training rows (2/3), holdout rows (1/3), and the identifier columns of the training rows."""
    frame = residents(rows)
    cut = rows * 2 // 3
    train, holdout = frame.iloc[:cut], frame.iloc[cut:]
    identifiers = {
        "id_number": train["id_number"].tolist(),
        "name": train["name"].tolist(),
    }
    return (
        ModelData.from_table(train, target="needs_help", features=FEATURES),
        ModelData.from_table(holdout, target="needs_help", features=FEATURES),
        identifiers,
    )


def run(model: Any, thresholds: ModelThresholds | None = None) -> ModelCheckReport:
    train, holdout, identifiers = split()
    if not hasattr(model, "n_features_in_"):
        model.fit(train.features, train.target)
    return check_model(dump_model(model), train, holdout, identifiers, thresholds)


def checks(report: ModelCheckReport, severity: str) -> set[str]:
    return {f.check for f in report.findings if f.severity == severity}


def fitted(model: Any) -> Any:
    train, _, _ = split()
    return model.fit(train.features, train.target)


def test_a_knn_model_is_blocked_for_storing_training_rows() -> None:
    report = run(KNeighborsClassifier(n_neighbors=15))
    assert report.verdict == "block"
    assert "model.stores_training_rows" in checks(report, "block")
    finding = next(f for f in report.findings if f.check == "model.stores_training_rows")
    assert "KNeighborsClassifier" in finding.evidence and finding.fix


def test_svm_support_vectors_are_blocked_inside_a_pipeline() -> None:
    report = run(make_pipeline(StandardScaler(), SVC(random_state=0)))
    assert "model.stores_training_rows" in checks(report, "block")
    assert any("SVC" in f.evidence for f in report.findings)


def test_an_unpruned_tree_is_blocked_and_told_the_min_samples_leaf_fix() -> None:
    report = run(DecisionTreeClassifier(random_state=0))
    assert report.verdict == "block"
    leaf = next(f for f in report.findings if f.check == "model.small_leaves")
    assert leaf.severity == "block"
    assert leaf.metrics["smallest_leaf_rows"] == 1
    assert "min_samples_leaf=10" in leaf.fix


def test_the_fix_uses_the_scenarios_minimum_cell_size() -> None:
    limits = thresholds_for(ModelPolicy(dp_training=False), min_cell_size=25)
    report = run(DecisionTreeClassifier(random_state=0, min_samples_leaf=10), limits)
    leaf = next(f for f in report.findings if f.check == "model.small_leaves")
    assert leaf.severity == "block" and "min_samples_leaf=25" in leaf.fix
    report = run(DecisionTreeClassifier(random_state=0, min_samples_leaf=25), limits)
    assert "model.small_leaves" not in checks(report, "block")


def test_a_training_row_hidden_in_an_attribute_is_blocked_without_showing_it() -> None:
    train, _, _ = split()
    model = fitted(LogisticRegression())
    row = train.numeric_matrix()[123]
    model.calibration_ = row.copy()
    report = run(model)
    assert report.verdict == "block"
    assert {"model.training_row_in_parameters", "model.refit_extra_state"} <= checks(
        report, "block"
    )
    text = json.dumps(report.to_dict(), ensure_ascii=False)
    fractional = [v for v in row if not float(v).is_integer()]
    assert fractional  # income and benefit amounts: the values that identify this row
    for value in fractional:
        assert repr(float(value)) not in text and f"{value:.4f}" not in text


def test_a_training_row_appended_to_the_intercept_is_blocked() -> None:
    train, _, _ = split()
    model = fitted(LogisticRegression())
    model.intercept_ = np.append(model.intercept_, train.numeric_matrix()[5].astype(np.float32))
    report = run(model)
    assert "model.training_row_in_parameters" in checks(report, "block")
    assert "model.refit" in checks(report, "block")


def test_an_identifier_hidden_in_a_string_is_blocked_and_redacted() -> None:
    _, _, identifiers = split()
    model = fitted(LogisticRegression())
    secret = identifiers["id_number"][42]
    model.note_ = f"trained for {secret} ok"
    setattr(model, f"x{secret}_", 1.0)  # also as an attribute name
    report = run(model)
    hit = next(f for f in report.findings if f.check == "model.identifier_in_parameters")
    assert hit.severity == "block" and "`id_number`" in hit.evidence
    text = json.dumps(report.to_dict(), ensure_ascii=False)
    assert secret not in text
    assert secret[:12] not in text


def test_a_resident_name_and_a_numeric_canary_are_found() -> None:
    _, _, identifiers = split()
    model = fitted(LogisticRegression())
    model.classes_ = np.array([identifiers["name"][7], "other"], dtype=object)
    model.coef_ = np.append(model.coef_, [[987654321.0]], axis=1)
    report = check_model(
        dump_model(model), *split()[:2], {**identifiers, "canary": [987654321]}, None
    )
    blocked = [f for f in report.findings if f.check == "model.identifier_in_parameters"]
    assert {str(f.metrics["column"]) for f in blocked} == {"name", "canary"}


def test_scaled_weights_are_caught_by_the_refit() -> None:
    model = fitted(LogisticRegression())
    model.coef_ = model.coef_ * 1.5
    report = run(model)
    refit = next(f for f in report.findings if f.check == "model.refit")
    assert refit.severity == "block"
    assert float(refit.metrics["max_relative_distance"]) > 0.05


def test_an_unseeded_random_forest_goes_to_review_with_the_seed_fix() -> None:
    model = RandomForestClassifier(n_estimators=5, min_samples_leaf=20, random_state=None)
    report = run(model)
    refit = next(f for f in report.findings if f.check == "model.refit")
    assert refit.severity == "review" and "random_state" in refit.fix


def test_a_seeded_forest_equals_its_refit() -> None:
    model = RandomForestClassifier(n_estimators=5, min_samples_leaf=20, random_state=3)
    report = run(model)
    refit = next(f for f in report.findings if f.check == "model.refit")
    assert refit.severity == "info" and refit.metrics["max_relative_distance"] == 0.0


def test_per_row_outputs_are_blocked_until_deleted() -> None:
    train, _, _ = split()
    km = KMeans(n_clusters=4, n_init=2, random_state=0).fit(train.features)
    report = check_model(dump_model(km), train, split()[1], {}, None)
    assert "model.per_row_attribute" in checks(report, "block")
    del km.labels_
    report = check_model(dump_model(km), train, split()[1], {}, None)
    assert "model.per_row_attribute" not in checks(report, "block")


def test_a_fine_logistic_regression_goes_to_review_with_a_low_advantage() -> None:
    report = run(make_pipeline(StandardScaler(), LogisticRegression(C=0.5)))
    assert report.verdict == "review"
    assert not checks(report, "block")
    assert "model.review_required" in checks(report, "review")
    assert all(r.advantage < 0.05 for r in report.membership)
    assert {r.attack for r in report.membership} == {"loss_threshold", "shadow_model"}
    assert report.card.metrics["accuracy"] > 0.6


def test_capacity_above_the_threshold_asks_for_review() -> None:
    report = run(RandomForestClassifier(n_estimators=10, min_samples_leaf=10, random_state=0))
    capacity = next(f for f in report.findings if f.check == "model.capacity")
    assert capacity.severity == "review"
    assert float(capacity.metrics["parameters_per_row"]) > 0.1


def test_the_card_says_what_the_reviewer_needs_in_json_and_markdown() -> None:
    report = run(LogisticRegression(C=0.5))
    card = json.loads(report.card.to_json())
    assert card["model_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert card["hyperparameters"]["C"] == 0.5
    assert card["parameters"] == 6  # five weights and an intercept
    assert card["training_rows"] == 4000 and card["features"] == 5
    assert card["verdict"] == "review" and card["dp_epsilon"] is None
    assert {c["check"] for c in card["checks"]} >= {"model.refit", "model.membership_inference"}
    assert len(card["format"]["sha256"]) == 64
    markdown = report.card.to_markdown()
    assert markdown.startswith("# Model card: LogisticRegression")
    assert "| model.membership_inference |" in markdown


def test_thresholds_follow_the_scenario_policy() -> None:
    limits = thresholds_for(
        ModelPolicy(dp_training=True, membership_inference_max_advantage=0.03),
        min_cell_size=15,
        seed=9,
    )
    assert (limits.dp_required, limits.max_membership_advantage) == (True, 0.03)
    assert (limits.min_cell_size, limits.seed) == (15, 9)


def test_data_arrives_as_numpy_or_arrow_too() -> None:
    frame = residents()
    table = pa.Table.from_pandas(frame[[*FEATURES, "needs_help"]].iloc[:4000])
    from_arrow = ModelData.from_table(table, target="needs_help")
    from_numpy = ModelData(frame[FEATURES].to_numpy()[4000:], frame["needs_help"].to_numpy()[4000:])
    model = LogisticRegression().fit(from_arrow.features, from_arrow.target)
    report = check_model(dump_model(model), from_arrow, from_numpy, {}, None)
    assert report.verdict == "review"


def test_bad_inputs_get_a_clear_error() -> None:
    from sandbox.agent.modelcheck.errors import CheckInputRefused

    with pytest.raises(CheckInputRefused) as err:
        ModelData(np.zeros((5, 2)), np.zeros(4))
    assert "5" in err.value.message and err.value.hint
    with pytest.raises(CheckInputRefused, match="no_such_column"):
        ModelData.from_table(residents(), target="no_such_column")


def test_findings_convert_to_the_egress_reports_shape() -> None:
    report = run(DecisionTreeClassifier(random_state=0))
    converted = {f.check: f for f in egress_findings(report)}
    leaf = converted["model.small_leaves"]
    assert leaf.severity == "block" and "fewer than 10" in leaf.message
    assert leaf.fix is not None and leaf.fix.params == {"min_samples_leaf": 10}
    assert leaf.evidence["smallest_leaf_rows"] == 1
    assert json.dumps([f.to_dict() for f in converted.values()])  # JSON-safe as the report needs
