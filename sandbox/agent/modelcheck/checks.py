"""``check_model``: every model check on one released model, and the report they make.

A check job (:mod:`.job`) calls this as trusted code in a sandbox next to the decrypted
sample, after the operator's sandbox has returned a skops blob and before a reviewer sees
the job. Order matters only for cost:
cheap structural checks first; the refit and the attacks (which retrain) last.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import is_classifier, is_regressor
from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score, roc_auc_score

from .capacity import check_capacity, count_parameters
from .card import ModelCard
from .data import ModelData
from .dp import check_dp, check_dp_bounds
from .findings import SEVERITY_ORDER, ModelFinding, Verdict, verdict_of
from .membership import AttackResult, check_membership
from .memorization import check_identifiers, check_refit, check_training_rows
from .safe_format import model_sha256
from .state import iter_leaves
from .structure import check_leaf_sizes, check_per_row, check_row_storing_classes
from .thresholds import ModelThresholds

__all__ = ["ModelCheckReport", "check_loaded_model", "model_metrics"]

_REVIEW = ModelFinding(
    check="model.review_required",
    severity="review",
    evidence="models are released only after a security reviewer approves them "
    "(R1.3(c), 000 §14; 004 §4(4))",
    fix="",
)


@dataclass(frozen=True)
class ModelCheckReport:
    """The verdict (``block`` or ``review``), findings worst first, attack results, card."""

    verdict: Verdict
    findings: tuple[ModelFinding, ...]
    membership: tuple[AttackResult, ...]
    dp_epsilon: float | None
    card: ModelCard
    timings_s: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def unexamined(
        cls, blob: bytes, findings: Iterable[ModelFinding], rows: tuple[int, int]
    ) -> ModelCheckReport:
        """The report on a model the checks could not examine: blocked, and saying why."""
        found = list(findings)
        card = ModelCard.unexamined(
            blob_sha256=model_sha256(blob), blob_bytes=len(blob), findings=found, rows=rows
        )
        return cls("block", tuple(found), (), None, card)

    @property
    def blocking(self) -> tuple[ModelFinding, ...]:
        return tuple(f for f in self.findings if f.severity == "block")

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "findings": [f.to_dict() for f in self.findings],
            "membership": [r.to_dict() for r in self.membership],
            "dp_epsilon": self.dp_epsilon,
            "card": self.card.to_dict(),
            "timings_s": dict(self.timings_s),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelCheckReport:
        """The report :meth:`to_dict` wrote; raises ValueError/KeyError/TypeError on
        anything else (the host reads it from a sandbox, so it checks the shape)."""
        verdict = raw["verdict"]
        if verdict not in ("block", "review"):
            raise ValueError("unknown verdict")
        eps = raw["dp_epsilon"]
        findings = tuple(ModelFinding.from_dict(f) for f in raw["findings"])
        if verdict != verdict_of(findings):
            raise ValueError("the verdict does not follow from the findings")
        return cls(
            verdict=verdict,
            findings=findings,
            membership=tuple(AttackResult.from_dict(a) for a in raw["membership"]),
            dp_epsilon=None if eps is None else float(eps),
            card=ModelCard.from_dict(raw["card"]),
            timings_s={str(k): float(v) for k, v in dict(raw.get("timings_s", {})).items()},
        )


def model_metrics(
    model: Any, train: ModelData, holdout: ModelData, *, max_rows: int = 20_000, seed: int = 0
) -> dict[str, float]:
    """Aggregate quality numbers for the card, over up to ``max_rows`` rows of each side
    (a seeded sample: predicting a big forest on every training row costs more than it tells).
    """
    out: dict[str, float] = {}
    if train.target is None or not len(holdout):
        return out
    rng = np.random.default_rng(seed)
    if len(train) > max_rows:
        train = train.take(np.sort(rng.choice(len(train), max_rows, replace=False)))
    if len(holdout) > max_rows:
        holdout = holdout.take(np.sort(rng.choice(len(holdout), max_rows, replace=False)))
    try:
        if is_classifier(model):
            out["accuracy"] = float(accuracy_score(holdout.target, model.predict(holdout.features)))
            out["train_accuracy"] = float(
                accuracy_score(train.target, model.predict(train.features))
            )
            classes = getattr(model, "classes_", None)
            if classes is not None and len(classes) == 2 and hasattr(model, "predict_proba"):
                p = model.predict_proba(holdout.features)[:, 1]
                if len(np.unique(holdout.target)) == 2:
                    out["roc_auc"] = float(roc_auc_score(holdout.target == classes[1], p))
        elif is_regressor(model):
            pred = model.predict(holdout.features)
            out["r2"] = float(r2_score(holdout.target, pred))
            out["mae"] = float(mean_absolute_error(holdout.target, pred))
            out["train_r2"] = float(r2_score(train.target, model.predict(train.features)))
    except Exception:  # metrics are a courtesy; a model that cannot predict fails elsewhere
        return {}
    return out


def check_loaded_model(
    model: Any,
    train: ModelData,
    holdout: ModelData,
    identifiers: Mapping[str, Iterable[object]],
    thresholds: ModelThresholds,
    *,
    blob: bytes = b"",
    train_units: Any | None = None,
    holdout_units: Any | None = None,
) -> ModelCheckReport:
    """All checks on a model already loaded through :func:`load_model_safely`.

    ``train_units`` / ``holdout_units`` (arrays, one privacy unit per row) make the
    membership attacks compare persons rather than rows.
    """
    timings: dict[str, float] = {}
    findings: list[ModelFinding] = []

    def timed(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 4)

    n_train = len(train)
    t = time.perf_counter()
    findings += check_row_storing_classes(model)
    findings += check_leaf_sizes(model, thresholds.min_cell_size)
    findings += check_per_row(model, n_train)
    timed("structure", t)

    t = time.perf_counter()
    findings += check_capacity(model, n_train, thresholds.max_params_per_row)
    timed("capacity", t)

    t = time.perf_counter()
    dp_findings, dp = check_dp(model, thresholds)
    findings += dp_findings
    findings += check_dp_bounds(model, dp, train.features, train.target)
    timed("dp", t)

    t = time.perf_counter()
    leaves = list(iter_leaves(model))
    findings += check_identifiers(
        model, identifiers, n_train=n_train, thresholds=thresholds, leaves=leaves
    )
    timed("identifiers", t)
    t = time.perf_counter()
    findings += check_training_rows(model, train, leaves=leaves)
    timed("training_rows", t)

    t = time.perf_counter()
    refit_findings, _ = check_refit(model, train, thresholds, randomised_by_design=dp is not None)
    findings += refit_findings
    timed("refit", t)

    t = time.perf_counter()
    membership_findings, attacks = check_membership(
        model, train, holdout, thresholds, train_units=train_units, holdout_units=holdout_units
    )
    findings += membership_findings
    timed("membership", t)

    findings.append(_REVIEW)
    findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    verdict = verdict_of(findings)
    t = time.perf_counter()
    card = ModelCard.build(
        model,
        blob_sha256=model_sha256(blob) if blob else "",
        blob_bytes=len(blob),
        parameters=count_parameters(model),
        training_rows=n_train,
        holdout_rows=len(holdout),
        features=train.n_features,
        metrics=model_metrics(model, train, holdout, seed=thresholds.seed),
        findings=findings,
        verdict=verdict,
        dp_epsilon=dp.epsilon if dp else None,
        dp_classes=list(dp.classes) if dp else [],
    )
    timed("card", t)
    return ModelCheckReport(
        verdict=verdict,
        findings=tuple(findings),
        membership=tuple(attacks),
        dp_epsilon=dp.epsilon if dp else None,
        card=card,
        timings_s=timings,
    )
