"""A check job: every model check on one emitted model, run by the agent as trusted code in a
sandbox of its own, next to the decrypted sample. Only the report leaves: findings (counts,
ratios, AUCs and the names of what matched, never a value), the model card and the model's
own ε. The rows, the identifiers and the privacy units stay in the container.

Why a sandbox and not the host's worker: the checks need the rows, and they load a file the
operator made. In the sandbox, a flaw in a loader (skops, scikit-learn, numpy) reaches a
container with no network, no keys but this job's, and nothing on disk; the host never
decrypts the sample at all.

The job line carries, besides the datasets, keys and the trusted prelude (the sample view
split into training and held-out rows, and the target over each side)::

    "check": {"model": "<base64 skops>",
              "train": "<table>", "holdout": "<table>",
              "target": {"train": "<table with column y>", "holdout": "<table>"} | null,
              "unit_column": "<column of the unit digest>" | null,
              "identifiers": ["<column>", ...],
              "thresholds": {...}}             # ModelThresholds.to_json()

and the answer is one ``R`` frame named ``report``: :meth:`ModelCheckReport.to_dict` as JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .checks import ModelCheckReport, check_loaded_model
from .data import ModelData
from .errors import FormatRefused
from .findings import ModelFinding
from .safe_format import load_model_safely
from .thresholds import ModelThresholds

__all__ = ["CheckRequest", "parse_request", "report_bytes", "run_check"]


@dataclass(frozen=True)
class CheckRequest:
    """What a check job is asked to examine (see the module doc)."""

    model: bytes = field(repr=False)
    train: str
    holdout: str
    target: tuple[str, str] | None
    unit_column: str | None
    identifiers: tuple[str, ...]
    thresholds: ModelThresholds

    def to_json(self) -> dict[str, object]:
        return {
            "model": base64.b64encode(self.model).decode(),
            "train": self.train,
            "holdout": self.holdout,
            "target": (
                None
                if self.target is None
                else {"train": self.target[0], "holdout": self.target[1]}
            ),
            "unit_column": self.unit_column,
            "identifiers": list(self.identifiers),
            "thresholds": self.thresholds.to_json(),
        }

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables the prelude must make for this request."""
        return (self.train, self.holdout, *(self.target or ()))


def parse_request(raw: object) -> CheckRequest:
    """The job line's ``check``; ValueError on anything malformed."""
    if not isinstance(raw, dict):
        raise ValueError("check must be an object")
    try:
        model = base64.b64decode(raw["model"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise ValueError("check.model must be base64") from None
    target = raw.get("target")
    if target is not None:
        if not isinstance(target, dict):
            raise ValueError("check.target must be an object")
        target = (_name(target.get("train")), _name(target.get("holdout")))
    unit = raw.get("unit_column")
    identifiers = raw.get("identifiers", [])
    if not isinstance(identifiers, list):
        raise ValueError("check.identifiers must be a list")
    return CheckRequest(
        model=model,
        train=_name(raw.get("train")),
        holdout=_name(raw.get("holdout")),
        target=target,
        unit_column=None if unit is None else _name(unit),
        identifiers=tuple(_name(i) for i in identifiers),
        thresholds=ModelThresholds.from_json(raw.get("thresholds", {})),
    )


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a table or column name must be a non-empty string")
    return value


def _block(check: str, message: str, fix: str) -> ModelFinding:
    return ModelFinding(check, "block", message, fix)


def _identifier_values(sample: pa.Table, names: Sequence[str]) -> dict[str, pa.Array]:
    """What the job saw of identifying columns (pseudonyms, in the sample): the values a
    model could have memorised (Arrow arrays: the scan stays vectorised)."""
    return {
        n: pc.unique(sample.column(n)).drop_null()
        for n in sorted(set(names))
        if n in sample.column_names
    }


def _vector(table: pa.Table) -> np.ndarray[Any, Any]:
    vector: np.ndarray[Any, Any] = table.column("y").to_numpy(zero_copy_only=False)
    return vector


def run_check(request: CheckRequest, tables: Mapping[str, pa.Table]) -> ModelCheckReport:
    """Every model check on the requested model, over the tables the prelude made.

    A model the checks cannot examine (not a safe skops file, inputs it does not name, a
    supervised model without a target, a check that fails on it) is blocked, never waved
    through: the report then carries a blocking finding that says why.
    """
    blob = request.model
    train_t, hold_t = tables[request.train], tables[request.holdout]
    rows = (train_t.num_rows, hold_t.num_rows)
    limits = request.thresholds
    try:
        model = load_model_safely(blob, max_model_bytes=limits.max_model_bytes)
    except FormatRefused as exc:
        return ModelCheckReport.unexamined(
            blob, [_block("model.format", exc.message, exc.hint)], rows
        )
    from sklearn.base import is_classifier, is_regressor

    unit = request.unit_column
    columns = [c for c in train_t.column_names if c != unit]
    features = [str(f) for f in getattr(model, "feature_names_in_", [])]
    problems: list[ModelFinding] = []
    if not features or not set(features) <= set(columns):
        problems.append(
            _block(
                "model.features_unknown",
                "the model does not name its input columns, or names columns the sample "
                "view does not have, so the checks cannot rebuild its training rows",
                "fit the model (a Pipeline with its transformations) on a DataFrame of the "
                "table's own columns",
            )
        )
    supervised = bool(is_classifier(model) or is_regressor(model))
    if supervised and request.target is None:
        problems.append(
            _block(
                "model.target_unknown",
                "the model is supervised but the job does not declare what it predicts",
                'declare it: shuyu.emit_model("name", model, target="<column or expression>")',
            )
        )
    if problems:
        return ModelCheckReport.unexamined(blob, problems, rows)
    y_train = y_hold = None
    if request.target is not None:
        y_train, y_hold = (_vector(tables[t]) for t in request.target)
    train = ModelData(train_t.select(features).to_pandas(), y_train)
    holdout = ModelData(hold_t.select(features).to_pandas(), y_hold)
    units: tuple[Any, Any] = (None, None)
    if unit is not None and unit in train_t.column_names:
        units = (
            train_t.column(unit).to_numpy(zero_copy_only=False),
            hold_t.column(unit).to_numpy(zero_copy_only=False),
        )
    sample = pa.concat_tables([train_t.select(columns), hold_t.select(columns)])
    try:
        return check_loaded_model(
            model,
            train,
            holdout,
            _identifier_values(sample, request.identifiers),
            limits,
            blob=blob,
            train_units=units[0],
            holdout_units=units[1],
        )
    except Exception as exc:  # a check that cannot run on this model must not wave it through
        return ModelCheckReport.unexamined(
            blob,
            [
                _block(
                    "model.checks_failed",
                    f"the model checks could not run on this model ({type(exc).__name__})",
                    "use a scikit-learn estimator fit on the table's columns with the declared "
                    "target",
                )
            ],
            rows,
        )


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a number becomes null (the host's reader is strict)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def report_bytes(report: ModelCheckReport) -> bytes:
    """The report as the agent sends it: strict JSON (no NaN), UTF-8."""
    return json.dumps(_finite(report.to_dict()), allow_nan=False, default=_plain).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
