"""Membership inference: can someone with the model tell who was in the training data?

Two attacks, both scored on the same evaluation rows - up to ``attack_max_rows`` training
rows (members) and as many holdout rows (non-members), drawn with a fixed seed:

* **Loss threshold** (Yeom et al., 2018): a member tends to have lower loss. The score is
  minus the per-row loss (log loss for classifiers, squared error for regressors, minus
  ``score_samples`` or reconstruction error for unsupervised models).
* **Shadow model** (Shokri et al., 2017): the holdout is split in two; a copy of the model
  (same class and hyper-parameters) is trained on one half, and an attack classifier (a
  logistic regression) learns to tell that half (in) from the other (out) from the shadow's
  outputs. The attack classifier then scores the real model's outputs on the evaluation rows.

How to read the numbers: **AUC** is the probability that the attack ranks a random member
above a random non-member (0.5 = no better than chance). **Advantage** is the largest
TPR - FPR over all thresholds - the two-sample Kolmogorov-Smirnov statistic between member
and non-member scores - i.e. how much more often the attack flags members than
non-members at its best setting (0 = none). Even with no leak the best threshold on a
finite sample finds some gap: the **noise floor** is that statistic's 95% critical value,
1.36·sqrt(1/m + 1/n); an advantage at or below it is indistinguishable from chance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .data import ModelData
from .findings import ModelFinding
from .memorization import fit_like_training
from .thresholds import ModelThresholds

__all__ = ["AttackResult", "check_membership", "row_losses", "run_attacks"]

_EPS = 1e-12
_MIN_ROWS_PER_SIDE = 30


@dataclass(frozen=True)
class AttackResult:
    """One attack's result on the evaluation rows."""

    attack: str
    auc: float
    advantage: float
    noise_floor: float
    members: int
    non_members: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AttackResult:
        return cls(
            attack=str(raw["attack"]),
            auc=float(raw["auc"]),
            advantage=float(raw["advantage"]),
            noise_floor=float(raw["noise_floor"]),
            members=int(raw["members"]),
            non_members=int(raw["non_members"]),
        )


def _class_index(model: Any, y: Any) -> np.ndarray[Any, np.dtype[np.intp]]:
    classes = np.asarray(model.classes_)
    order = np.argsort(classes)
    pos = np.searchsorted(classes[order], np.asarray(y))
    pos = np.clip(pos, 0, len(classes) - 1)
    found = classes[order][pos] == np.asarray(y)
    index = order[pos]
    return np.where(found, index, -1)


def _probabilities(model: Any, x: Any) -> np.ndarray[Any, Any] | None:
    if hasattr(model, "predict_proba"):
        try:
            return np.asarray(model.predict_proba(x), dtype=np.float64)
        except (AttributeError, NotImplementedError):
            pass
    if hasattr(model, "decision_function"):
        d = np.asarray(model.decision_function(x), dtype=np.float64)
        if d.ndim == 1:
            p1 = 1.0 / (1.0 + np.exp(-d))
            return np.column_stack([1.0 - p1, p1])
        e = np.exp(d - d.max(axis=1, keepdims=True))
        softmax: np.ndarray[Any, Any] = e / e.sum(axis=1, keepdims=True)
        return softmax
    return None


def _features(model: Any, data: ModelData) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Per-row (loss, attack features) of ``model`` on ``data``; lower loss = more member-like."""
    x, y = data.features, data.target
    if y is not None and is_classifier(model):
        proba = _probabilities(model, x)
        if proba is None:
            wrong = (np.asarray(model.predict(x)) != np.asarray(y)).astype(np.float64)
            return wrong, wrong[:, None]
        index = _class_index(model, y)
        p_true = np.where(index >= 0, proba[np.arange(len(proba)), np.maximum(index, 0)], 0.0)
        loss = -np.log(np.clip(p_true, _EPS, 1.0))
        top = -np.sort(-proba, axis=1)[:, : min(3, proba.shape[1])]
        entropy = -(proba * np.log(np.clip(proba, _EPS, 1.0))).sum(axis=1)
        return loss, np.column_stack([loss, top, entropy])
    if y is not None and (is_regressor(model) or hasattr(model, "predict")):
        pred = np.asarray(model.predict(x), dtype=np.float64).reshape(len(y), -1)
        err = ((pred - np.asarray(y, dtype=np.float64).reshape(len(y), -1)) ** 2).sum(axis=1)
        return err, np.column_stack([err, np.log1p(err)])
    if hasattr(model, "score_samples"):
        loss = -np.asarray(model.score_samples(x), dtype=np.float64)
        return loss, loss[:, None]
    if hasattr(model, "transform") and hasattr(model, "inverse_transform"):
        xm = np.asarray(x, dtype=np.float64)
        err = ((model.inverse_transform(model.transform(x)) - xm) ** 2).sum(axis=1)
        return err, err[:, None]
    if hasattr(model, "transform"):
        dist = np.asarray(model.transform(x), dtype=np.float64).min(axis=1)
        return dist, dist[:, None]
    raise TypeError("no per-row loss for this model")


def row_losses(model: Any, data: ModelData) -> np.ndarray[Any, Any]:
    """The per-row loss the loss-threshold attack uses (public for tests and notebooks)."""
    return _features(model, data)[0]


def _score(name: str, member: np.ndarray[Any, Any], other: np.ndarray[Any, Any]) -> AttackResult:
    labels = np.concatenate([np.ones(member.size), np.zeros(other.size)])
    scores = np.nan_to_num(np.concatenate([member, other]), nan=0.0, posinf=1e300, neginf=-1e300)
    fpr, tpr, _ = roc_curve(labels, scores)
    return AttackResult(
        attack=name,
        auc=round(float(roc_auc_score(labels, scores)), 4),
        advantage=round(float(np.max(tpr - fpr)), 4),
        noise_floor=round(1.36 * math.sqrt(1 / member.size + 1 / other.size), 4),
        members=int(member.size),
        non_members=int(other.size),
    )


def _sample(n: int, k: int, rng: np.random.Generator) -> np.ndarray[Any, np.dtype[np.intp]]:
    return np.sort(rng.choice(n, size=min(n, k), replace=False)).astype(np.intp)


Units = np.ndarray[Any, Any]


def _first_rows(n: int, units: Units | None) -> np.ndarray[Any, np.dtype[np.intp]]:
    """One row per unit (its first), or every row when rows are not grouped."""
    if units is None:
        return np.arange(n, dtype=np.intp)
    _, first = np.unique(np.asarray(units), return_index=True)
    return np.sort(first).astype(np.intp)


def _unit_count(n: int, units: Units | None) -> int:
    return n if units is None else len(np.unique(np.asarray(units)))


def _rows_of(units: Units | None, chosen: np.ndarray[Any, np.dtype[np.intp]], n: int) -> Any:
    """Every row of the units whose first rows are ``chosen`` (the rows themselves if none)."""
    if units is None:
        return np.sort(chosen)
    keep = np.isin(np.asarray(units), np.asarray(units)[chosen])
    return np.flatnonzero(keep).astype(np.intp)


def run_attacks(
    model: Any,
    train: ModelData,
    holdout: ModelData,
    thresholds: ModelThresholds,
    *,
    train_units: Units | None = None,
    holdout_units: Units | None = None,
) -> list[AttackResult]:
    """Run both attacks; the shadow attack only when the holdout can be split in two.

    With ``train_units`` / ``holdout_units`` (the privacy unit of each row), members and
    non-members are *persons*: one row each. A person's rows are copies of one another for
    a model of person-level columns, and counting them as independent draws would make the
    noise floor (which assumes independent samples) too low. The shadow model trains on
    every row of half the held-out persons, as the real model trained on every row of its
    persons.
    """
    rng = np.random.default_rng(thresholds.seed)
    member_rows = _first_rows(len(train), train_units)
    other_rows = _first_rows(len(holdout), holdout_units)
    members = train.take(member_rows[_sample(len(member_rows), thresholds.attack_max_rows, rng)])
    others = holdout.take(other_rows[_sample(len(other_rows), thresholds.attack_max_rows, rng)])
    loss_in, feats_in = _features(model, members)
    loss_out, feats_out = _features(model, others)
    results = [_score("loss_threshold", -loss_in, -loss_out)]
    if len(other_rows) >= 4 * _MIN_ROWS_PER_SIDE:
        order = other_rows[rng.permutation(len(other_rows))]
        half = len(order) // 2
        in_first, out_first = np.sort(order[:half]), np.sort(order[half:])
        shadow_in = holdout.take(_rows_of(holdout_units, in_first, len(holdout)))
        shadow = fit_like_training(clone(model), shadow_in)
        _, s_in = _features(shadow, holdout.take(in_first))
        _, s_out = _features(shadow, holdout.take(out_first))
        # A linear attack on (loss, top probabilities, entropy): these features already
        # separate members by confidence; a deeper attack model adds cost, not insight.
        attack = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        attack.fit(
            np.vstack([s_in, s_out]), np.concatenate([np.ones(len(s_in)), np.zeros(len(s_out))])
        )
        p_in = attack.predict_proba(feats_in)[:, 1]
        p_out = attack.predict_proba(feats_out)[:, 1]
        results.append(_score("shadow_model", p_in, p_out))
    return results


def check_membership(
    model: Any,
    train: ModelData,
    holdout: ModelData,
    thresholds: ModelThresholds,
    *,
    train_units: Units | None = None,
    holdout_units: Units | None = None,
) -> tuple[list[ModelFinding], list[AttackResult]]:
    """Block above the limit (when above the noise floor), review near it or when unsure.

    ``train_units`` / ``holdout_units``: the privacy unit of each row; see :func:`run_attacks`.
    """
    limit = thresholds.max_membership_advantage
    n_train, n_holdout = (
        _unit_count(len(train), train_units),
        _unit_count(len(holdout), holdout_units),
    )
    if min(n_train, n_holdout) < _MIN_ROWS_PER_SIDE:
        return [
            ModelFinding(
                check="model.membership_inference",
                severity="review",
                evidence=f"too few rows to attack (training {n_train}, holdout "
                f"{n_holdout}; need {_MIN_ROWS_PER_SIDE} each)",
                fix="provide a holdout of at least a few hundred rows the model never saw",
            )
        ], []
    try:
        results = run_attacks(
            model,
            train,
            holdout,
            thresholds,
            train_units=train_units,
            holdout_units=holdout_units,
        )
    except Exception as exc:  # the message may quote data: keep only the type
        return [
            ModelFinding(
                check="model.membership_inference",
                severity="review",
                evidence=f"the membership attack could not run on this model "
                f"({type(exc).__name__}); its privacy risk is unmeasured",
                fix="release a scikit-learn estimator with predict_proba, predict or score_samples",
            )
        ], []
    worst = max(results, key=lambda r: r.advantage)
    metrics: dict[str, float | int | str | bool | None] = {
        "attack": worst.attack,
        "auc": worst.auc,
        "advantage": worst.advantage,
        "noise_floor": worst.noise_floor,
        "limit": limit,
        "members": worst.members,
        "non_members": worst.non_members,
    }
    for r in results:
        metrics[f"{r.attack}_auc"] = r.auc
        metrics[f"{r.attack}_advantage"] = r.advantage
    summary = (
        f"best attack ({worst.attack}): advantage {worst.advantage:.3f}, AUC {worst.auc:.3f} "
        f"on {worst.members} members / {worst.non_members} non-members "
        f"(limit {limit}, noise floor {worst.noise_floor:.3f})"
    )
    fix = (
        "regularise more (smaller C, larger min_samples_leaf, fewer trees or features), "
        "train on more rows, or train with differential privacy"
    )
    if worst.advantage > limit and worst.advantage > worst.noise_floor:
        return [ModelFinding("model.membership_inference", "block", summary, fix, metrics)], results
    if worst.advantage > limit:
        return [
            ModelFinding(
                "model.membership_inference",
                "review",
                summary + "; above the limit but within sampling noise",
                "provide a larger holdout so the attack can measure at the limit",
                metrics,
            )
        ], results
    if worst.advantage >= thresholds.membership_review_fraction * limit:
        return [
            ModelFinding(
                "model.membership_inference", "review", summary + "; near the limit", fix, metrics
            )
        ], results
    return [ModelFinding("model.membership_inference", "info", summary, "", metrics)], results
