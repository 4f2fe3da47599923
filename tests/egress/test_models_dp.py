"""DP models: recognised by class, ε read from the model, non-DP refused where DP is required."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import opendp.prelude as dp
import pytest
from sklearn.linear_model import LogisticRegression

from egress.models import ModelData, ModelThresholds, check_model, dump_model, find_dp_model

_FEATURES = ("contrib", "honest-but-curious", "idealized-numerics")


@pytest.fixture
def opendp_features() -> Iterator[None]:
    """OpenDP's DP PCA needs these features; switch the extra ones off again afterwards.

    ``contrib`` stays on: the DP SQL gate (egress.dp.mechanisms) enables it at import and
    relies on it for the life of the process.
    """
    dp.enable_features(*_FEATURES)
    yield
    dp.disable_features(*(f for f in _FEATURES if f != "contrib"))


def _data(n: int = 1200) -> tuple[ModelData, ModelData]:
    rng = np.random.default_rng(4)
    x = np.clip(rng.normal(size=(n, 4)) @ np.diag([2.0, 1.0, 0.5, 0.2]), -3, 3)
    y = (x[:, 0] > 0).astype(int)
    half = n // 2
    return ModelData(x[:half], y[:half]), ModelData(x[half:], y[half:])


def _dp_pca(train: ModelData, epsilon: float) -> object:
    from opendp.extras.sklearn.decomposition import PCA

    return PCA(
        epsilon=epsilon, row_norm=6.0, n_samples=len(train), n_features=4, n_components=2
    ).fit(train.features)


def test_a_dp_pca_reports_its_epsilon_for_the_ledger_and_the_card(opendp_features: None) -> None:
    train, holdout = _data()
    model = _dp_pca(train, epsilon=1.0)
    assert find_dp_model(model) is not None
    report = check_model(
        dump_model(model),
        ModelData(train.features),
        ModelData(holdout.features),
        {},
        ModelThresholds(dp_required=True),
    )
    assert report.dp_epsilon == 1.0
    assert report.card.dp_epsilon == 1.0
    assert "ε = 1" in report.card.to_markdown()
    assert not [f for f in report.findings if f.check == "model.dp_required"]
    refit = next(f for f in report.findings if f.check == "model.refit")
    assert refit.severity != "block"  # DP noise differs by design; structure still compared


def test_epsilon_above_the_limit_is_blocked(opendp_features: None) -> None:
    train, holdout = _data()
    report = check_model(
        dump_model(_dp_pca(train, epsilon=4.0)),
        ModelData(train.features),
        ModelData(holdout.features),
        {},
        ModelThresholds(dp_required=True, max_dp_epsilon=2.0),
    )
    eps = next(f for f in report.findings if f.check == "model.dp_epsilon")
    assert eps.severity == "block" and eps.metrics["epsilon"] == 4.0


def test_a_non_dp_model_is_blocked_where_the_scenario_requires_dp() -> None:
    train, holdout = _data()
    model = LogisticRegression().fit(train.features, train.target)
    report = check_model(dump_model(model), train, holdout, {}, ModelThresholds(dp_required=True))
    finding = next(f for f in report.findings if f.check == "model.dp_required")
    assert finding.severity == "block" and "opendp" in finding.fix
    assert report.dp_epsilon is None


def test_diffprivlib_classes_would_count_by_module() -> None:
    # diffprivlib does not import under scikit-learn 1.9; its classes are recognised by module
    # so that the check works the day it does.
    fake = type("LogisticRegression", (), {"__module__": "diffprivlib.models.logistic_regression"})
    instance = fake()
    instance.epsilon = 0.5
    found = find_dp_model([instance])
    assert found is not None and found.epsilon == 0.5
