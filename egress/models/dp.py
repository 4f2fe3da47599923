"""Differentially private models: which classes count, and the ε read from the model.

A DP model is one whose training algorithm bounds what any one person's rows change in
the output; the bound is ε, and it is charged to the scenario's privacy ledger like a DP
query. The class is what makes the guarantee, so the check looks at the class of every
estimator in the model, not at a flag the training code could set.

Recognised today:

* ``opendp.extras.sklearn.decomposition.PCA`` (OpenDP's DP PCA, ε in ``epsilon`` for
  ``n_changes`` changed rows). OpenDP's DP ``LinearRegression`` returns a plain
  scikit-learn ``LinearRegression`` with no ε on it, so it cannot be recognised from the
  model and is not accepted as DP.
* ``diffprivlib.models.*`` (IBM diffprivlib, ε in ``epsilon``) - when diffprivlib imports.
  diffprivlib 0.6.6 does not import under scikit-learn 1.9 (it needs
  ``sklearn.tree._tree.DOUBLE``, removed), so on this platform its models cannot be
  trained or loaded, and a scenario that requires DP models must use OpenDP's classes.

What the ε is worth: it is read from the model, i.e. it is what the training code said.
The trusted refit retrains with the same ε and checks the structure; a model whose noise
is smaller than its stated ε implies cannot be told apart from one value alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from egress.models.findings import ModelFinding
from egress.models.state import iter_objects, safe_path
from egress.models.thresholds import ModelThresholds

__all__ = ["DP_CLASSES", "DpModel", "check_dp", "find_dp_model"]

#: Fully qualified DP estimator classes (module prefix + class) and the attribute holding ε.
DP_CLASSES: dict[str, str] = {
    "opendp.extras.sklearn.decomposition.PCA": "epsilon",
}
_DP_MODULE_PREFIXES: dict[str, str] = {"diffprivlib.models.": "epsilon"}


@dataclass(frozen=True)
class DpModel:
    """The DP estimators found in a model and the ε they spend in total."""

    classes: tuple[str, ...]
    epsilon: float


def _epsilon_attr(obj: Any) -> str | None:
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if kind in DP_CLASSES:
        return DP_CLASSES[kind]
    for prefix, attr in _DP_MODULE_PREFIXES.items():
        if kind.startswith(prefix):
            return attr
    return None


def find_dp_model(model: Any) -> DpModel | None:
    """DP estimators in the model (pipelines included); ε adds up (sequential composition)."""
    classes: list[str] = []
    epsilon = 0.0
    for _path, obj in iter_objects(model):
        attr = _epsilon_attr(obj)
        if attr is None:
            continue
        value = getattr(obj, attr, None)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            continue
        classes.append(f"{type(obj).__module__}.{type(obj).__qualname__}")
        epsilon += float(value)
    if not classes:
        return None
    return DpModel(tuple(classes), epsilon)


def _non_dp_learners(model: Any) -> list[str]:
    """Paths of fitted scikit-learn estimators that are not DP classes and learn from rows."""
    paths: list[str] = []
    for path, obj in iter_objects(model):
        module = type(obj).__module__ or ""
        if not module.startswith("sklearn.") or not hasattr(obj, "fit"):
            continue
        if type(obj).__name__ in ("Pipeline", "ColumnTransformer", "FeatureUnion"):
            continue
        if _epsilon_attr(obj) is None:
            paths.append(f"{type(obj).__name__} at {safe_path(path)}")
    return paths


def check_dp(model: Any, thresholds: ModelThresholds) -> tuple[list[ModelFinding], DpModel | None]:
    """Block a non-DP model where DP is required, or a DP model above the ε limit."""
    dp = find_dp_model(model)
    findings: list[ModelFinding] = []
    if thresholds.dp_required:
        others = _non_dp_learners(model)
        if dp is None or others:
            findings.append(
                ModelFinding(
                    check="model.dp_required",
                    severity="block",
                    evidence="the scenario requires differentially private training, but "
                    + (
                        "no DP estimator is in the model"
                        if dp is None
                        else f"{len(others)} step(s) learn without DP ({', '.join(others[:3])})"
                    ),
                    fix="train with a DP estimator (opendp.extras.sklearn.decomposition.PCA; "
                    "diffprivlib does not run on scikit-learn 1.9); every step that learns "
                    "from rows must be DP",
                    metrics={"dp_classes": len(dp.classes) if dp else 0},
                )
            )
    if dp is not None:
        over = thresholds.max_dp_epsilon is not None and dp.epsilon > thresholds.max_dp_epsilon
        findings.append(
            ModelFinding(
                check="model.dp_epsilon",
                severity="block" if over else "info",
                evidence=f"trained with {', '.join(dp.classes)} at ε = {dp.epsilon:g}"
                + (f", above the limit {thresholds.max_dp_epsilon:g}" if over else ""),
                fix="train with a smaller epsilon" if over else "",
                metrics={"epsilon": dp.epsilon, "max_epsilon": thresholds.max_dp_epsilon},
            )
        )
    return findings, dp
