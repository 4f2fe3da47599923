"""The model card: what a reviewer reads before approving a model, as JSON and Markdown.

Everything on it comes from the model itself or from aggregate checks (counts, scores over
hundreds of rows), never from a training row. It travels with the released model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import sklearn

from .findings import ModelFinding

__all__ = ["ModelCard", "describe_params"]


def _plain(value: Any) -> Any:
    """A JSON-safe, short description of a hyper-parameter value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value[:20]]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in list(value.items())[:20]}
    if isinstance(value, np.ndarray):
        return f"array{list(value.shape)}"
    if hasattr(value, "get_params"):
        return type(value).__name__
    return type(value).__name__


def describe_params(model: Any) -> dict[str, Any]:
    """Hyper-parameters of the model and of every step, flattened as scikit-learn names them."""
    try:
        params = model.get_params(deep=True)
    except Exception:
        return {}
    return {k: _plain(v) for k, v in sorted(params.items())}


def model_structure(model: Any) -> list[str]:
    """Class names of the model and its steps, outermost first."""
    names = [f"{type(model).__module__}.{type(model).__qualname__}"]
    for step in getattr(model, "steps", []) or []:
        names.append(f"{type(step[1]).__module__}.{type(step[1]).__qualname__}")
    return names


@dataclass(frozen=True)
class ModelCard:
    """A human-readable summary of a released model (R1.3, R5.4)."""

    model_class: str
    structure: list[str]
    hyperparameters: dict[str, Any]
    parameters: int
    training_rows: int
    holdout_rows: int
    features: int
    metrics: dict[str, float]
    checks: list[dict[str, Any]]
    verdict: str
    dp_epsilon: float | None
    dp_classes: list[str]
    format: dict[str, Any] = field(default_factory=dict)
    #: what the scenario's privacy ledger is charged for this model (DP models only):
    #: ``scenario``, ``epsilon``, ``delta``, ``rho`` (zCDP) and ``pure``. The charge commits
    #: with the held model, so a card that exists was paid for.
    dp_charge: dict[str, Any] | None = None

    @staticmethod
    def build(
        model: Any,
        *,
        blob_sha256: str,
        blob_bytes: int,
        parameters: int,
        training_rows: int,
        holdout_rows: int,
        features: int,
        metrics: dict[str, float],
        findings: list[ModelFinding],
        verdict: str,
        dp_epsilon: float | None,
        dp_classes: list[str],
    ) -> ModelCard:
        return ModelCard(
            model_class=f"{type(model).__module__}.{type(model).__qualname__}",
            structure=model_structure(model),
            hyperparameters=describe_params(model),
            parameters=parameters,
            training_rows=training_rows,
            holdout_rows=holdout_rows,
            features=features,
            metrics=metrics,
            checks=[
                {"check": f.check, "severity": f.severity, "evidence": f.evidence} for f in findings
            ],
            verdict=verdict,
            dp_epsilon=dp_epsilon,
            dp_classes=dp_classes,
            format={
                "format": "skops",
                "sha256": blob_sha256,
                "bytes": blob_bytes,
                "sklearn_version": sklearn.__version__,
            },
        )

    @staticmethod
    def unexamined(
        *, blob_sha256: str, blob_bytes: int, findings: list[ModelFinding], rows: tuple[int, int]
    ) -> ModelCard:
        """A card for a model the checks could not examine: what is known, and why not."""
        return ModelCard(
            model_class="unknown",
            structure=[],
            hyperparameters={},
            parameters=0,
            training_rows=rows[0],
            holdout_rows=rows[1],
            features=0,
            metrics={},
            checks=[
                {"check": f.check, "severity": f.severity, "evidence": f.evidence} for f in findings
            ],
            verdict="block",
            dp_epsilon=None,
            dp_classes=[],
            format={"format": "skops", "sha256": blob_sha256, "bytes": blob_bytes},
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelCard:
        """The card :meth:`to_dict` wrote (a check job's report, read by the host)."""
        names = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or not set(raw) <= names:
            raise ValueError("not a model card")
        return cls(**raw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2, sort_keys=True)

    def to_markdown(self) -> str:
        lines = [
            f"# Model card: {self.model_class.rsplit('.', 1)[-1]}",
            "",
            f"- **Class**: `{self.model_class}`",
        ]
        if len(self.structure) > 1:
            lines.append("- **Steps**: " + " → ".join(f"`{s}`" for s in self.structure[1:]))
        lines += [
            f"- **Learned parameters**: {self.parameters}",
            f"- **Training rows**: {self.training_rows}; **holdout rows**: {self.holdout_rows};"
            f" **features**: {self.features}",
            "- **Differential privacy**: "
            + (
                f"ε = {self.dp_epsilon:g} ({', '.join(self.dp_classes)})"
                if self.dp_epsilon is not None
                else "none"
            ),
            *(
                [
                    "- **Privacy budget charged**: "
                    f"ε = {self.dp_charge.get('epsilon', 0):g}, "
                    f"δ = {self.dp_charge.get('delta', 0):g} "
                    f"(ρ = {self.dp_charge.get('rho', 0):.4g} zCDP) "
                    f"to scenario {self.dp_charge.get('scenario', '?')}"
                ]
                if self.dp_charge
                else []
            ),
            f"- **Verdict of the checks**: {self.verdict} (every model needs a reviewer)",
            f"- **Format**: skops, {self.format.get('bytes')} bytes, sha256 "
            f"`{self.format.get('sha256')}`, scikit-learn {self.format.get('sklearn_version')}",
            "",
            "## Metrics (holdout unless named)",
            "",
            "| metric | value |",
            "|---|---|",
            *[f"| {k} | {v:.4g} |" for k, v in sorted(self.metrics.items())],
            "",
            "## Checks",
            "",
            "| check | severity | evidence |",
            "|---|---|---|",
            *[
                f"| {c['check']} | {c['severity']} | {str(c['evidence']).replace('|', '/')} |"
                for c in self.checks
            ],
            "",
            "## Hyper-parameters",
            "",
            "| name | value |",
            "|---|---|",
            *[
                f"| {k} | `{json.dumps(v, ensure_ascii=False)}` |"
                for k, v in self.hyperparameters.items()
            ],
            "",
        ]
        return "\n".join(lines)
