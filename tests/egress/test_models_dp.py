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

    pca = PCA(epsilon=epsilon, row_norm=6.0, n_samples=len(train), n_features=4, n_components=2)
    return pca.fit(train.features)  # type: ignore[no-untyped-call]


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


# --- diffprivlib ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_accountant() -> Iterator[None]:
    """diffprivlib records every DP fit in one default accountant per process; the sandbox
    starts a fresh process per model job, so each test starts a fresh default here."""
    from diffprivlib.accountant import BudgetAccountant

    BudgetAccountant().set_default()
    yield
    BudgetAccountant().set_default()


def _frame(n: int = 1600, seed: int = 5) -> tuple[ModelData, ModelData]:
    """Two numeric columns in [-2, 2] and a category; the label follows the first column."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = np.clip(rng.normal(size=(n, 2)), -2, 2)
    frame = pd.DataFrame(
        {"a": x[:, 0], "b": x[:, 1], "c": rng.choice(["north", "south", "east"], size=n)}
    )
    y = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)
    half = n // 2
    train = ModelData(frame.iloc[:half].reset_index(drop=True), y[:half])
    holdout = ModelData(frame.iloc[half:].reset_index(drop=True), y[half:])
    return train, holdout


def _dp_logreg(train: ModelData, epsilon: float = 1.0, **params: object) -> object:
    from diffprivlib.models import LogisticRegression as DpLogisticRegression

    model = DpLogisticRegression(epsilon=epsilon, data_norm=3.0, **params)
    return model.fit(train.features[["a", "b"]], train.target)


def _check(model: object, train: ModelData, holdout: ModelData, **limits: object) -> object:
    cols = list(getattr(model, "feature_names_in_", ["a", "b"]))
    return check_model(
        dump_model(model),
        ModelData(train.features[cols], train.target),
        ModelData(holdout.features[cols], holdout.target),
        {},
        ModelThresholds(dp_required=True, **limits),  # type: ignore[arg-type]
    )


def _by_check(report: object) -> dict[str, object]:
    return {f.check: f for f in report.findings}  # type: ignore[attr-defined]


def test_a_diffprivlib_logistic_regression_passes_to_review_with_its_epsilon_on_the_card() -> None:
    train, holdout = _frame()
    report = _check(_dp_logreg(train, epsilon=0.8), train, holdout, max_dp_epsilon=1.0)
    found = _by_check(report)
    assert report.verdict == "review", [  # type: ignore[attr-defined]
        (f.check, f.severity, f.evidence)
        for f in report.findings  # type: ignore[attr-defined]
        if f.severity == "block"
    ]
    assert "model.dp_required" not in found
    assert report.dp_epsilon == 0.8  # type: ignore[attr-defined]
    card = report.card  # type: ignore[attr-defined]
    assert card.dp_epsilon == 0.8
    assert card.dp_classes == ["diffprivlib.models.logistic_regression.LogisticRegression"]
    assert found["model.dp_epsilon"].severity == "info"  # type: ignore[attr-defined]
    assert found["model.refit"].severity != "block"  # type: ignore[attr-defined]


def test_epsilon_is_read_from_the_model_and_a_dp_forest_counts_once() -> None:
    from diffprivlib.models import RandomForestClassifier as DpForest

    train, _ = _frame()
    forest = DpForest(n_estimators=5, epsilon=0.7, bounds=(-2.0, 2.0), classes=[0, 1])
    forest.fit(train.features[["a", "b"]], train.target)
    found = find_dp_model(forest)
    assert found is not None
    assert found.epsilon == pytest.approx(0.7)  # its five trees are the forest's own ε
    assert found.classes == ("diffprivlib.models.forest.RandomForestClassifier",)


def test_a_plain_scikit_learn_model_is_blocked_and_told_which_dp_class_to_use() -> None:
    train, holdout = _frame()
    model = LogisticRegression().fit(train.features[["a", "b"]], train.target)
    finding = _by_check(_check(model, train, holdout))["model.dp_required"]
    assert finding.severity == "block"  # type: ignore[attr-defined]
    evidence = finding.evidence  # type: ignore[attr-defined]
    assert "LogisticRegression at model learn(s) from rows without DP" in evidence
    assert "diffprivlib.models.LogisticRegression(epsilon=" in finding.fix  # type: ignore[attr-defined]


def test_an_encoder_with_given_categories_learns_nothing_one_that_learns_them_is_blocked() -> None:
    from diffprivlib.models import LogisticRegression as DpLogisticRegression
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    train, holdout = _frame()

    def pipeline(categories: object) -> Pipeline:
        encode = ColumnTransformer(
            [("onehot", OneHotEncoder(categories=categories), ["c"])], remainder="passthrough"
        )
        model = Pipeline(
            [("encode", encode), ("dp", DpLogisticRegression(epsilon=0.5, data_norm=3.5))]
        )
        return model.fit(train.features, train.target)

    given = _check(pipeline([["east", "north", "south"]]), train, holdout)
    assert "model.dp_required" not in _by_check(given)
    assert given.dp_epsilon == 0.5  # type: ignore[attr-defined]
    learned = _by_check(_check(pipeline("auto"), train, holdout))["model.dp_required"]
    assert "OneHotEncoder" in learned.evidence  # type: ignore[attr-defined]


def test_a_dp_model_above_the_per_job_epsilon_is_blocked() -> None:
    train, holdout = _frame()
    found = _by_check(_check(_dp_logreg(train, epsilon=3.0), train, holdout, max_dp_epsilon=1.0))
    eps = found["model.dp_epsilon"]
    assert eps.severity == "block" and eps.metrics["epsilon"] == 3.0  # type: ignore[attr-defined]


def test_a_seeded_dp_model_is_blocked_because_the_seed_gives_away_the_noise() -> None:
    train, holdout = _frame()
    found = _by_check(_check(_dp_logreg(train, random_state=0), train, holdout))
    assert found["model.dp_seeded"].severity == "block"  # type: ignore[attr-defined]


def test_dp_fits_that_were_not_released_are_blocked_by_the_accountant() -> None:
    train, holdout = _frame()
    for epsilon in (0.5, 1.0, 2.0):  # a tuning loop: three DP fits, one released
        model = _dp_logreg(train, epsilon=epsilon)
    found = _by_check(_check(model, train, holdout))
    assert found["model.dp_accountant"].severity == "block"  # type: ignore[attr-defined]
    assert "3 DP fit(s)" in found["model.dp_accountant"].evidence  # type: ignore[attr-defined]


def test_bounds_computed_from_the_training_rows_are_blocked() -> None:
    from diffprivlib.models import GaussianNB as DpGaussianNB
    from diffprivlib.models import LogisticRegression as DpLogisticRegression
    from diffprivlib.utils import PrivacyLeakWarning

    train, holdout = _frame()
    x = train.features[["a", "b"]] * 1.01  # extremes that are not whole numbers
    shifted = ModelData(x, train.target)
    with pytest.warns(PrivacyLeakWarning):
        logreg = DpLogisticRegression(epsilon=1.0).fit(x, train.target)
    found = _by_check(_check(logreg, shifted, holdout))
    assert found["model.dp_bounds_from_data"].severity == "block"  # type: ignore[attr-defined]
    assert "data_norm" in found["model.dp_bounds_from_data"].evidence  # type: ignore[attr-defined]
    with pytest.warns(PrivacyLeakWarning):
        bayes = DpGaussianNB(epsilon=1.0).fit(x, train.target)
    found = _by_check(_check(bayes, shifted, holdout))
    assert "bounds" in found["model.dp_bounds_from_data"].evidence  # type: ignore[attr-defined]
    # bounds chosen without the data do not trip it
    honest = DpGaussianNB(epsilon=1.0, bounds=(-3.0, 3.0)).fit(x, train.target)
    assert "model.dp_bounds_from_data" not in _by_check(_check(honest, shifted, holdout))


@pytest.mark.parametrize(
    "name",
    [
        "LogisticRegression",
        "LinearRegression",
        "GaussianNB",
        "RandomForestClassifier",
        "StandardScaler",
        "PCA",
        "KMeans",
    ],
)
def test_every_diffprivlib_model_saves_and_loads_with_skops_and_the_listed_types(
    name: str,
) -> None:
    import diffprivlib.models as dpm
    import skops.io as sio

    from egress.models import DP_TRUSTED_TYPES, EXTRA_TRUSTED_TYPES, load_model_safely

    rng = np.random.default_rng(1)
    x = np.clip(rng.normal(size=(400, 3)), -2, 2)
    y = (x[:, 0] > 0).astype(int)
    bounds = (-2.0, 2.0)
    models = {
        "LogisticRegression": lambda: dpm.LogisticRegression(epsilon=1.0, data_norm=4.0),
        "LinearRegression": lambda: dpm.LinearRegression(
            epsilon=1.0, bounds_X=bounds, bounds_y=(0.0, 1.0)
        ),
        "GaussianNB": lambda: dpm.GaussianNB(epsilon=1.0, bounds=bounds),
        "RandomForestClassifier": lambda: dpm.RandomForestClassifier(
            n_estimators=3, epsilon=1.0, bounds=bounds, classes=[0, 1]
        ),
        "StandardScaler": lambda: dpm.StandardScaler(epsilon=1.0, bounds=bounds),
        "PCA": lambda: dpm.PCA(n_components=2, epsilon=1.0, bounds=bounds, data_norm=4.0),
        "KMeans": lambda: dpm.KMeans(n_clusters=2, epsilon=1.0, bounds=bounds),
    }
    model = models[name]().fit(x, y)
    blob = dump_model(model)
    untrusted = sio.get_untrusted_types(data=blob)
    assert untrusted and set(untrusted) <= EXTRA_TRUSTED_TYPES
    assert {t for t in untrusted if t.startswith("diffprivlib.")} <= DP_TRUSTED_TYPES
    loaded = sio.loads(blob, trusted=untrusted)  # plain skops, with the listed types only
    assert type(loaded) is type(model) and loaded.epsilon == 1.0
    assert find_dp_model(load_model_safely(blob)) is not None
