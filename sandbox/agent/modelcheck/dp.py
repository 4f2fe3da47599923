"""Differentially private models: which classes count, and the ε read from the model.

A DP model is one whose training algorithm bounds what any one person's rows change in
the output; the bound is ε, and it is charged to the scenario's privacy ledger like a DP
query. The class is what makes the guarantee, so the check looks at the class of every
estimator in the model, not at a flag the training code could set, and reads ε from the
estimator itself, never from what the job says.

Recognised:

* ``diffprivlib.models.*`` (IBM diffprivlib 0.6, pure ε-DP, ε in ``epsilon``): logistic
  and linear regression, Gaussian naive Bayes, random forests and trees, the standard
  scaler, PCA and k-means. A DP estimator nested inside another (the trees of a DP forest)
  is accounted by the outer one, which splits its ε over them.
* ``opendp.extras.sklearn.decomposition.PCA`` (OpenDP's DP PCA, ε in ``epsilon`` for
  ``n_changes`` changed rows). OpenDP's DP ``LinearRegression`` returns a plain
  scikit-learn ``LinearRegression`` with no ε on it, so it cannot be recognised from the
  model and is not accepted as DP.

What else a DP model must satisfy, because the guarantee breaks otherwise:

* **No fixed seed** on a diffprivlib estimator (``model.dp_seeded``): whoever knows the
  seed knows the noise and can take it out again.
* **Its accountant spent exactly the model's ε** (``model.dp_accountant``). diffprivlib
  records every DP fit in the estimator's ``BudgetAccountant``, which travels in the file.
  In the sandbox's fresh process the shared default accountant therefore lists every DP
  fit the job made. More entries than the model's own estimators mean the job fit DP
  models it did not release (a tuning loop), whose choice also depends on the data; other
  numbers would be values the training did not produce.
* **Bounds set by hand** (``model.dp_bounds_from_data``). Without ``data_norm`` /
  ``bounds`` diffprivlib computes them from the training rows (a ``PrivacyLeakWarning``
  in the sandbox), which releases the rows' extremes and voids ε. The check recomputes
  what diffprivlib would have computed from the trusted training rows; a model whose
  bounds equal it is blocked, or sent to a reviewer when the extremes are whole numbers
  that an honest choice could equal (one-hot columns: bounds 0 and 1, norm √k).

What the ε is worth: it is read from the model, i.e. it is what the training code said.
The trusted refit retrains with the same ε and checks the structure; a model whose noise
is smaller than its stated ε implies cannot be told apart from one value alone.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .findings import ModelFinding, Severity
from .state import iter_objects, safe_path
from .thresholds import ModelThresholds

__all__ = [
    "DP_ALTERNATIVES",
    "DP_CLASSES",
    "DpModel",
    "check_dp",
    "check_dp_bounds",
    "find_dp_model",
]

#: Fully qualified DP estimator classes (module prefix + class) and the attribute holding ε.
DP_CLASSES: dict[str, str] = {
    "opendp.extras.sklearn.decomposition.PCA": "epsilon",
}
_DP_MODULE_PREFIXES: dict[str, str] = {"diffprivlib.models.": "epsilon"}

#: What to train instead of a scikit-learn class under a scenario that requires DP.
DP_ALTERNATIVES: dict[str, str] = {
    "LogisticRegression": "diffprivlib.models.LogisticRegression(epsilon=..., data_norm=...)",
    "LinearRegression": "diffprivlib.models.LinearRegression(epsilon=..., bounds_X=..., "
    "bounds_y=...)",
    "GaussianNB": "diffprivlib.models.GaussianNB(epsilon=..., bounds=...)",
    "RandomForestClassifier": "diffprivlib.models.RandomForestClassifier(epsilon=..., "
    "bounds=..., classes=...)",
    "DecisionTreeClassifier": "diffprivlib.models.DecisionTreeClassifier(epsilon=..., "
    "bounds=..., classes=...)",
    "StandardScaler": "diffprivlib.models.StandardScaler(epsilon=..., bounds=...)",
    "PCA": "diffprivlib.models.PCA(epsilon=..., bounds=..., data_norm=...)",
    "KMeans": "diffprivlib.models.KMeans(epsilon=..., bounds=...)",
}
_DEFAULT_ALTERNATIVE = (
    "a diffprivlib.models estimator (LogisticRegression, LinearRegression, GaussianNB, "
    "RandomForestClassifier)"
)

#: Encoders learn only the categories they see; given the categories, they learn nothing.
_FIXED_WHEN_CATEGORIES_GIVEN = ("OneHotEncoder", "OrdinalEncoder")
#: Steps that hold no learned values: containers, and FunctionTransformer (a ColumnTransformer's
#: ``remainder="passthrough"``; its fit records only the column count and names).
_CONTAINERS = ("Pipeline", "ColumnTransformer", "FeatureUnion", "FunctionTransformer")


@dataclass(frozen=True)
class DpModel:
    """The DP estimators found in a model and the ε they spend in total."""

    classes: tuple[str, ...]
    epsilon: float
    #: the estimators themselves (outermost DP objects, in model order)
    estimators: tuple[Any, ...] = field(default=(), compare=False, repr=False)
    #: their paths in the model
    paths: tuple[str, ...] = field(default=(), compare=False)


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _epsilon_attr(obj: Any) -> str | None:
    kind = _class_name(obj)
    if kind in DP_CLASSES:
        return DP_CLASSES[kind]
    for prefix, attr in _DP_MODULE_PREFIXES.items():
        if kind.startswith(prefix):
            return attr
    return None


def _is_diffprivlib(obj: Any) -> bool:
    return (type(obj).__module__ or "").startswith("diffprivlib.models.")


def _within(path: str, outer: str) -> bool:
    return path.startswith((outer + ".", outer + "["))


def find_dp_model(model: Any) -> DpModel | None:
    """DP estimators in the model (pipelines included); ε adds up (sequential composition).

    Only the outermost DP objects count: a DP forest's trees are accounted by the forest.
    """
    found: list[tuple[str, Any, float]] = []
    for path, obj in iter_objects(model):
        attr = _epsilon_attr(obj)
        if attr is None or any(_within(path, outer) for outer, _, _ in found):
            continue
        value = getattr(obj, attr, None)
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            continue
        found.append((path, obj, float(value)))
    if not found:
        return None
    return DpModel(
        classes=tuple(_class_name(obj) for _, obj, _ in found),
        epsilon=math.fsum(eps for _, _, eps in found),
        estimators=tuple(obj for _, obj, _ in found),
        paths=tuple(path for path, _, _ in found),
    )


def _learns_nothing(obj: Any) -> bool:
    name = type(obj).__name__
    if name in _CONTAINERS:
        return True
    return name in _FIXED_WHEN_CATEGORIES_GIVEN and getattr(obj, "categories", "auto") != "auto"


def _non_dp_learners(model: Any) -> list[tuple[str, str]]:
    """(class name, path) of fitted scikit-learn estimators that learn from rows without DP."""
    found: list[tuple[str, str]] = []
    for path, obj in iter_objects(model):
        module = type(obj).__module__ or ""
        if not module.startswith("sklearn.") or not hasattr(obj, "fit"):
            continue
        if _learns_nothing(obj) or _epsilon_attr(obj) is not None:
            continue
        found.append((type(obj).__name__, safe_path(path)))
    return found


def _dp_required(model: Any, dp: DpModel | None) -> ModelFinding | None:
    others = _non_dp_learners(model)
    if dp is not None and not others:
        return None
    named = ", ".join(f"{name} at {where}" for name, where in others[:3])
    if dp is None and not others:
        what = f"{type(model).__name__} is not a DP estimator"
    elif dp is None:
        what = f"no DP estimator is in the model; {named} learn(s) from rows without DP"
    else:
        what = f"{len(others)} step(s) learn from rows without DP: {named}"
    instead = sorted({DP_ALTERNATIVES.get(name, _DEFAULT_ALTERNATIVE) for name, _ in others})
    return ModelFinding(
        check="model.dp_required",
        severity="block",
        evidence="the scenario requires differentially private training, but " + what,
        fix="train with "
        + ("; ".join(instead) if instead else _DEFAULT_ALTERNATIVE)
        + " (or opendp.extras.sklearn.decomposition.PCA); give encoders their categories; "
        "every step that learns from rows must be DP",
        metrics={
            "dp_classes": len(dp.classes) if dp else 0,
            "non_dp_classes": ", ".join(sorted({n for n, _ in others})),
        },
    )


def _seeded(dp: DpModel) -> ModelFinding | None:
    seeded = [
        f"{type(est).__name__} at {safe_path(path)}"
        for path, est in zip(dp.paths, dp.estimators, strict=True)
        if _is_diffprivlib(est) and getattr(est, "random_state", None) is not None
    ]
    if not seeded:
        return None
    return ModelFinding(
        check="model.dp_seeded",
        severity="block",
        evidence=f"{', '.join(seeded)} has a fixed random_state: whoever knows the seed knows "
        "the noise and can remove it, so the model is not private",
        fix="leave random_state unset on DP estimators (random_state=None)",
        metrics={"seeded": len(seeded)},
    )


def _accountant_state(acc: Any) -> tuple[list[tuple[float, float]], bool] | None:
    """(spends, defaults) of a diffprivlib BudgetAccountant, or None if it is not one."""
    if _class_name(acc) != "diffprivlib.accountant.BudgetAccountant":
        return None
    try:
        spent = [(float(e), float(d)) for e, d in acc.spent_budget]
        defaults = (
            math.isinf(float(acc.epsilon))
            and float(acc.delta) == 1.0
            and float(acc.slack) == 0.0
            and float(getattr(acc, "_BudgetAccountant__min_epsilon", 0.0)) == 0.0
        )
    except (TypeError, ValueError, AttributeError):
        return None
    return spent, defaults


def _accountant(dp: DpModel) -> ModelFinding | None:
    ests = [e for e in dp.estimators if _is_diffprivlib(e)]
    if not ests:
        return None
    accountants: dict[int, Any] = {}
    for est in ests:
        acc = getattr(est, "accountant", None)
        accountants[id(acc)] = acc
    problems: list[str] = []
    spends: list[tuple[float, float]] = []
    for acc in accountants.values():
        state = _accountant_state(acc)
        if state is None:
            problems.append("an estimator's accountant is not a diffprivlib BudgetAccountant")
            continue
        spent, defaults = state
        spends += spent
        if not defaults:
            problems.append("an accountant has limits other than diffprivlib's defaults")
    declared = Counter(round(float(e.epsilon), 12) for e in ests)
    recorded = Counter(round(e, 12) for e, _ in spends)
    if any(d != 0.0 for _, d in spends):
        problems.append("the accountant records a spend with δ > 0")
    if recorded != declared:
        problems.append(
            f"the accountant records {len(spends)} DP fit(s) totalling ε = "
            f"{math.fsum(e for e, _ in spends):g}; the model's {len(ests)} DP estimator(s) "
            f"account for ε = {math.fsum(float(e.epsilon) for e in ests):g}"
        )
    if not problems:
        return None
    return ModelFinding(
        check="model.dp_accountant",
        severity="block",
        evidence="; ".join(problems),
        fix="fit each DP estimator once, with diffprivlib's default accountant; DP fits that "
        "are not released (tuning loops) still spend privacy and are not allowed",
        metrics={"recorded_fits": len(spends), "dp_estimators": len(ests)},
    )


def check_dp(model: Any, thresholds: ModelThresholds) -> tuple[list[ModelFinding], DpModel | None]:
    """Block a non-DP model where DP is required; block a DP model above the ε limit, with a
    fixed seed, or whose accountant spent more than the model declares."""
    dp = find_dp_model(model)
    findings: list[ModelFinding] = []
    if thresholds.dp_required:
        required = _dp_required(model, dp)
        if required is not None:
            findings.append(required)
    if dp is not None:
        for extra in (_seeded(dp), _accountant(dp)):
            if extra is not None:
                findings.append(extra)
        over = thresholds.max_dp_epsilon is not None and dp.epsilon > thresholds.max_dp_epsilon
        findings.append(
            ModelFinding(
                check="model.dp_epsilon",
                severity="block" if over else "info",
                evidence=f"trained with {', '.join(dp.classes)} at ε = {dp.epsilon:g}"
                + (f", above the limit {thresholds.max_dp_epsilon:g} per job" if over else ""),
                fix="train with a smaller epsilon" if over else "",
                metrics={"epsilon": dp.epsilon, "max_epsilon": thresholds.max_dp_epsilon},
            )
        )
    return findings, dp


# --- bounds computed from the data --------------------------------------------------------

#: diffprivlib bound parameters, and how diffprivlib computes each when it is left unset.
_BOUND_PARAMS: tuple[str, ...] = ("data_norm", "bounds", "bounds_X", "bounds_y")


def _as_float_array(x: Any) -> np.ndarray[Any, np.dtype[np.float64]] | None:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    return arr if arr.ndim == 2 else None


def _from_data(
    param: str, xt: np.ndarray[Any, Any] | None, y: np.ndarray[Any, Any] | None
) -> list[np.ndarray[Any, Any]] | None:
    if param == "data_norm" and xt is not None:
        return [np.asarray([np.linalg.norm(xt, axis=1).max()])]
    if param in ("bounds", "bounds_X") and xt is not None:
        return [xt.min(axis=0), xt.max(axis=0)]
    if param == "bounds_y" and y is not None:
        return [np.asarray([y.min()]), np.asarray([y.max()])]
    return None


def _whole(values: Sequence[np.ndarray[Any, Any]], param: str) -> bool:
    """True when every data extreme is a whole number (or, for a norm, √ of one)."""
    flat = np.concatenate([np.ravel(v) for v in values])
    if param == "data_norm":
        flat = flat**2
    return bool(np.all(np.isclose(flat, np.round(flat), rtol=0, atol=1e-9)))


def check_dp_bounds(
    model: Any, dp: DpModel | None, features: Any, target: Any | None
) -> list[ModelFinding]:
    """Flag diffprivlib estimators whose bounds equal what diffprivlib computes from the
    training rows when none are given (that computation is not DP: it releases extremes).

    ``features``/``target`` are the trusted training rows. The rows the estimator saw are
    rebuilt by running the steps before it when it is the last step of a ``Pipeline``, or
    the features themselves when it is the whole model; elsewhere the check cannot tell.
    """
    if dp is None:
        return []
    findings: list[ModelFinding] = []
    y = None if target is None else _as_float_array(target)
    for path, est in zip(dp.paths, dp.estimators, strict=True):
        if not _is_diffprivlib(est):
            continue
        raw: Any
        if est is model:
            raw = features
        elif type(model).__name__ == "Pipeline" and model.steps[-1][1] is est:
            try:
                raw = model[:-1].transform(features)
            except Exception:  # noqa: S112 - cannot rebuild what it saw: say nothing
                continue
        else:
            continue
        if hasattr(raw, "toarray"):
            raw = raw.toarray()
        xt = _as_float_array(raw)
        hits: list[tuple[str, bool]] = []
        for param in _BOUND_PARAMS:
            if param not in getattr(est, "__dict__", {}):
                continue
            value = getattr(est, param)
            expected = _from_data(param, xt, y)
            if value is None or expected is None:
                continue
            got = (
                [np.asarray([value], dtype=np.float64)]
                if param == "data_norm"
                else [np.ravel(np.asarray(v, dtype=np.float64)) for v in value]
            )
            if len(got) != len(expected) or any(
                g.shape != np.ravel(e).shape for g, e in zip(got, expected, strict=True)
            ):
                continue
            if all(
                np.allclose(g, np.ravel(e), rtol=1e-12, atol=0)
                for g, e in zip(got, expected, strict=True)
            ):
                hits.append((param, _whole(expected, param)))
        if not hits:
            continue
        severity: Severity = "review" if all(whole for _, whole in hits) else "block"
        names = ", ".join(p for p, _ in hits)
        findings.append(
            ModelFinding(
                check="model.dp_bounds_from_data",
                severity=severity,
                evidence=f"{type(est).__name__} at {safe_path(path)}: {names} equal(s) the "
                "training rows' own extremes, which is what diffprivlib computes when no "
                "bound is given; such bounds release the extremes and void ε"
                + (
                    " (the extremes are whole numbers, which a bound chosen without the "
                    "data could equal: a reviewer decides)"
                    if severity == "review"
                    else ""
                ),
                fix=f"set {names} at initialisation from what the columns can hold, not "
                "from the data",
                metrics={"params": names},
            )
        )
    return findings


def _schema_epsilon_attr(node: dict[str, Any]) -> str | None:
    kind = f"{node.get('__module__')}.{node.get('__class__')}"
    if kind in DP_CLASSES:
        return DP_CLASSES[kind]
    return next((a for p, a in _DP_MODULE_PREFIXES.items() if kind.startswith(p)), None)


def _schema_number(node: object) -> float | None:
    """A number as skops writes it in ``schema.json`` (a JSON node whose content is text)."""
    if not isinstance(node, dict) or node.get("__class__") not in ("float", "int", "str"):
        return None
    try:
        value = float(json.loads(node["content"]) if node.get("is_json") else node["content"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def schema_epsilon(schema: object) -> float | None:
    """The model's ε read from the skops schema alone, without loading the model: the sum
    over the outermost DP objects, as :func:`find_dp_model` counts it on the loaded model.

    The host uses it to check the ε a check job reports before charging it: the charge must
    not rest on a number a container that loaded an operator's file wrote.
    """
    found: list[float] = []

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        attr = _schema_epsilon_attr(node)
        content = node.get("content")
        if isinstance(content, dict) and isinstance(content.get("content"), dict):
            content = content["content"]  # an object's attributes are a DictNode
        if attr is not None and isinstance(content, dict):
            value = _schema_number(content.get(attr))
            if value is not None:
                found.append(value)
                return  # its trees or steps are accounted by it
        for value in node.values():
            walk(value)

    walk(schema)
    return math.fsum(found) if found else None
