"""Membership inference: near zero for a regularised model, clearly above for an overfitted one."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.tree import DecisionTreeRegressor

from egress.models import ModelData, ModelThresholds
from sandbox.agent.modelcheck.membership import check_membership, row_losses, run_attacks


def _split(n: int = 4000, flip: float = 0.2) -> tuple[ModelData, ModelData]:
    x, y = make_classification(
        n_samples=n, n_features=10, n_informative=5, flip_y=flip, random_state=1
    )
    half = n // 2
    return ModelData(x[:half], y[:half]), ModelData(x[half:], y[half:])


def test_a_well_regularised_model_has_an_advantage_near_zero() -> None:
    train, holdout = _split()
    model = LogisticRegression(C=0.1).fit(train.features, train.target)
    results = run_attacks(model, train, holdout, ModelThresholds())
    for r in results:
        assert r.advantage < 0.06, r
        assert abs(r.auc - 0.5) < 0.04, r
        assert r.advantage <= r.noise_floor + 0.01  # indistinguishable from chance
    findings, _ = check_membership(model, train, holdout, ModelThresholds())
    assert findings[0].severity == "info"


def test_an_overfitted_model_has_a_clear_advantage_and_is_blocked() -> None:
    train, holdout = _split()
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(
        train.features, train.target
    )
    results = {r.attack: r for r in run_attacks(model, train, holdout, ModelThresholds())}
    assert results["loss_threshold"].advantage > 0.3
    assert results["loss_threshold"].auc > 0.7
    assert results["shadow_model"].advantage > 0.2
    findings, _ = check_membership(model, train, holdout, ModelThresholds())
    assert findings[0].severity == "block"
    assert findings[0].metrics["advantage"] > 0.3


def test_an_advantage_near_the_limit_asks_for_review() -> None:
    train, holdout = _split()
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(
        train.features, train.target
    )
    advantage = max(r.advantage for r in run_attacks(model, train, holdout, ModelThresholds()))
    near = ModelThresholds(max_membership_advantage=advantage / 0.8)
    findings, _ = check_membership(model, train, holdout, near)
    assert findings[0].severity == "review" and "near the limit" in findings[0].evidence


def test_above_the_limit_but_within_noise_is_review_not_block() -> None:
    train, holdout = _split(n=4000)
    small = holdout.take(np.arange(60))
    model = LogisticRegression(C=0.1).fit(train.features, train.target)
    findings, results = check_membership(
        model, train, small, ModelThresholds(max_membership_advantage=0.01)
    )
    assert results and results[0].noise_floor > 0.1
    assert findings[0].severity == "review"


def test_too_small_a_holdout_is_review_with_a_fix() -> None:
    train, holdout = _split()
    findings, results = check_membership(
        LogisticRegression().fit(train.features, train.target),
        train,
        holdout.take(np.arange(10)),
        ModelThresholds(),
    )
    assert results == [] and findings[0].severity == "review" and findings[0].fix


def test_regressors_are_attacked_on_squared_error() -> None:
    x, y = make_regression(n_samples=3000, n_features=6, noise=20.0, random_state=2)
    train, holdout = ModelData(x[:1500], y[:1500]), ModelData(x[1500:], y[1500:])
    ridge = Ridge(alpha=1.0).fit(train.features, train.target)
    tree = DecisionTreeRegressor(random_state=0).fit(train.features, train.target)
    assert np.allclose(row_losses(tree, train), 0.0)  # an unpruned tree recalls every row
    fine = max(r.advantage for r in run_attacks(ridge, train, holdout, ModelThresholds()))
    overfit = max(r.advantage for r in run_attacks(tree, train, holdout, ModelThresholds()))
    assert fine < 0.08 < 0.5 < overfit
