"""Memorization: parameters that reproduce identifiers, canaries or training rows.

Three complementary checks, because a model can hide data in any number it holds:

* **Identifier scan** - every string (values, dict keys, attribute names) and every number
  in the model is compared with the identifier columns and canaries the orchestrator
  passes. Strings match whole, or as a substring for identifiers of 6+ characters (2+ for
  CJK names); numbers match exactly, for identifiers at least as large as
  ``min_numeric_identifier`` and the training row count (smaller numbers are what counts and
  indices in any model look like).
* **Training-row scan** - every floating-point array, flattened row-wise and column-wise, is
  searched for a training row as a contiguous vector, compared at float32 precision (so a
  row stored as float32 still matches). Rows of fewer than 3 values or only -1/0/1 are too
  common to be evidence and are skipped.
* **Refit** - the model is retrained in trusted code from its declared hyper-parameters on
  the same rows, and its parameters compared with the refit's. Deterministic training with
  the same data and seed gives the same numbers up to solver tolerance and rounding
  (``refit_review_rtol``, default 1e-3 relative); anything further carries something the
  declared training did not produce. The refit catches what the scans cannot: transformed
  rows, data spread over several arrays, values hidden in integer structure.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from .data import ModelData
from .findings import ModelFinding, Severity
from .state import Leaf, iter_leaves, safe_path
from .thresholds import ModelThresholds

__all__ = [
    "check_identifiers",
    "check_refit",
    "check_training_rows",
    "fit_like_training",
    "has_unseeded_randomness",
]

_CJK = re.compile(r"[\u3400-\u9fff]")
_CJK_RE2 = r"[\x{3400}-\x{9fff}]"  # the same class for Arrow's regular expressions (RE2)
_MIN_SUBSTRING_CHARS = 6
_MIN_ROW_VALUES = 3
_MAX_EVIDENCE_PATHS = 5


def _mixed_identifier_set(
    values: Iterable[object], min_number: float
) -> tuple[set[str], list[float]]:
    """The slow path, value by value, for columns that mix strings and numbers."""
    strings: set[str] = set()
    numbers: list[float] = []
    for value in values:
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int | float | np.integer | np.floating):
            if not np.isfinite(value):
                continue
            if float(value).is_integer():
                strings.add(str(int(value)))
            if abs(float(value)) >= min_number:
                numbers.append(float(value))
            continue
        text = str(value)
        if text:
            strings.add(text)
        if text.isdigit() and float(text) >= min_number:
            numbers.append(float(text))
    return strings, numbers


@dataclass(frozen=True)
class _IdentifierSet:
    """One identifier column, in the forms the scan needs, kept as Arrow arrays: an
    identifier column is as long as the training set, and the model's strings are few."""

    strings: pa.Array  # distinct non-empty values as text
    numbers: np.ndarray[Any, np.dtype[np.float64]]  # sorted numbers worth searching
    lengths: tuple[int, ...]  # lengths of the values a substring of a model string may be


def _identifier_sets(
    identifiers: Mapping[str, Iterable[object]], min_number: float
) -> dict[str, _IdentifierSet]:
    """Per column: the identifier strings, and the numbers worth searching.

    A column of one type (all strings, or all numbers) goes through Arrow's vectorised
    kernels; a column that mixes them, value by value.
    """
    out: dict[str, _IdentifierSet] = {}
    for column, values in identifiers.items():
        try:
            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            array = values if isinstance(values, pa.Array) else pa.array(list(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            mixed, numbers = _mixed_identifier_set(values, min_number)
            found = np.asarray(numbers, dtype=np.float64)
            text = pa.array(sorted(mixed), pa.string())
        else:
            array = array.drop_null()
            if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
                text = pc.unique(array.cast(pa.string()))
                digits = text.filter(pc.match_substring_regex(text, r"^[0-9]+$"))
                # Arrow parses the digit strings (the nearest double, as float() gives)
                # without a Python object per value
                found = pc.cast(digits, pa.float64()).to_numpy(zero_copy_only=False)
            elif pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
                found = array.to_numpy(zero_copy_only=False).astype(np.float64)
                found = found[np.isfinite(found)]
                whole = found[(found % 1 == 0) & (np.abs(found) < 2.0**63)]
                text = pc.unique(pa.array(whole.astype(np.int64)).cast(pa.string()))
            else:  # booleans, dates, binary: compare as text
                text = pc.unique(pa.array([str(v) for v in array.to_pylist()], pa.string()))
                found = np.empty(0, dtype=np.float64)
            text = text.filter(pc.not_equal(text, ""))
        sizes = pc.utf8_length(text)
        searchable = pc.or_(
            pc.greater_equal(sizes, _MIN_SUBSTRING_CHARS),
            pc.match_substring_regex(text, _CJK_RE2),
        )
        lengths = tuple(sorted(pc.unique(sizes.filter(searchable)).to_pylist()))
        out[column] = _IdentifierSet(text, np.unique(found[np.abs(found) >= min_number]), lengths)
    return out


def _string_hits(texts: Sequence[str], ids: _IdentifierSet) -> list[bool]:
    """Per model string: is it an identifier, or does it hold one (a piece of a length some
    identifier has, six characters or more, or with CJK characters)? One Arrow lookup for
    every candidate piece of every string."""
    pieces: list[str] = []
    owner: list[int] = []
    for k, text in enumerate(texts):
        pieces.append(text)
        owner.append(k)
        for length in ids.lengths:
            for i in range(len(text) - length + 1):
                piece = text[i : i + length]
                if length >= _MIN_SUBSTRING_CHARS or _CJK.search(piece):
                    pieces.append(piece)
                    owner.append(k)
    hit = [False] * len(texts)
    if not pieces or not len(ids.strings):
        return hit
    found = pc.is_in(pa.array(pieces, pa.string()), value_set=ids.strings)
    for k, yes in zip(owner, found.to_pylist(), strict=True):
        if yes:
            hit[k] = True
    return hit


def _members(
    values: np.ndarray[Any, Any], sorted_set: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """``np.isin(values, sorted_set)`` for a set sorted once: isin would re-sort it per call,
    and a forest has thousands of arrays."""
    if sorted_set.size == 0 or values.size == 0:
        return np.zeros(values.shape, dtype=bool)
    index = np.searchsorted(sorted_set, values)
    index[index == sorted_set.size] = 0
    hit: np.ndarray[Any, Any] = sorted_set[index] == values
    return hit


def check_identifiers(
    model: Any,
    identifiers: Mapping[str, Iterable[object]],
    *,
    n_train: int,
    thresholds: ModelThresholds,
    leaves: list[Leaf] | None = None,
) -> list[ModelFinding]:
    """Block when any identifier or canary value appears among the model's values."""
    min_number = max(thresholds.min_numeric_identifier, float(n_train))
    sets = _identifier_sets(identifiers, min_number)
    all_leaves = leaves if leaves is not None else list(iter_leaves(model))
    texts = [(n, leaf.value) for n, leaf in enumerate(all_leaves) if isinstance(leaf.value, str)]
    findings: list[ModelFinding] = []
    forbidden: frozenset[str] | None = None
    for column, ids in sets.items():
        string_hits = dict(
            zip([n for n, _ in texts], _string_hits([t for _, t in texts], ids), strict=True)
        )
        hits = 0
        paths: list[str] = []
        for n, leaf in enumerate(all_leaves):
            if isinstance(leaf.value, str):
                found = int(string_hits[n])
            elif ids.numbers.size:
                flat = leaf.value.astype(np.float64, copy=False).ravel()
                found = int(np.count_nonzero(_members(flat, ids.numbers)))
            else:
                found = 0
            if found:
                hits += found
                if forbidden is None:  # only now: every identifier, to keep out of paths
                    forbidden = frozenset(v for s in sets.values() for v in s.strings.to_pylist())
                where = safe_path(leaf.path, forbidden)
                if where not in paths:
                    paths.append(where)
        if hits:
            findings.append(
                ModelFinding(
                    check="model.identifier_in_parameters",
                    severity="block",
                    evidence=f"{hits} value(s) of `{column}` appear in the model "
                    f"(at {', '.join(paths[:_MAX_EVIDENCE_PATHS])})",
                    fix="do not put identifiers in features, labels, names or attributes; "
                    "retrain without them",
                    metrics={"column": column, "matches": hits, "places": len(paths)},
                )
            )
    return findings


_HASH_WEIGHTS = np.random.default_rng(20260101).integers(
    1, 2**63 - 1, size=4096, dtype=np.uint64
) | np.uint64(1)


def _window_hashes(
    bits: np.ndarray[Any, np.dtype[np.uint32]], width: int
) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """A linear hash of every window of ``width`` consecutive values (mod 2**64)."""
    n = bits.size - width + 1
    acc = np.zeros(n, dtype=np.uint64)
    wide = bits.astype(np.uint64)
    for j in range(width):
        acc += wide[j : j + n] * _HASH_WEIGHTS[j]
    return acc


def _distinctive_rows(rows: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, Any]:
    """float32 rows worth searching: finite, and not only -1/0/1."""
    rows32 = rows.astype(np.float32)
    finite = np.isfinite(rows32).all(axis=1)
    trivial = np.isin(rows32, np.asarray([-1.0, 0.0, 1.0], dtype=np.float32)).all(axis=1)
    return np.ascontiguousarray(rows32[finite & ~trivial])  # duplicates collapse in the hash map


def check_training_rows(
    model: Any,
    train: ModelData,
    *,
    leaves: list[Leaf] | None = None,
) -> list[ModelFinding]:
    """Block when a training row appears as a contiguous vector in a parameter array."""
    rows = train.numeric_matrix()
    width = rows.shape[1]
    if width < _MIN_ROW_VALUES:
        return [
            ModelFinding(
                check="model.training_row_in_parameters",
                severity="info",
                evidence=f"training rows have {width} numeric value(s), too few to search "
                "for; the refit comparison covers this model",
            )
        ]
    if width > _HASH_WEIGHTS.size:
        rows = rows[:, : _HASH_WEIGHTS.size]
        width = _HASH_WEIGHTS.size
    wanted = _distinctive_rows(rows)
    if wanted.size == 0:
        return []
    wanted_bits = np.ascontiguousarray(wanted).view(np.uint32)
    wanted_hash = (wanted_bits.astype(np.uint64) * _HASH_WEIGHTS[:width]).sum(axis=1)
    by_hash = dict(zip(wanted_hash.tolist(), range(len(wanted)), strict=True))
    sorted_hashes = np.unique(wanted_hash)
    all_leaves = leaves if leaves is not None else list(iter_leaves(model))
    hits = 0
    paths: list[str] = []
    for leaf in all_leaves:
        if isinstance(leaf.value, str) or leaf.value.dtype.kind != "f":
            continue
        value = leaf.value
        layouts = [value.ravel()]
        if value.ndim == 2 and min(value.shape) > 1:
            layouts.append(value.T.ravel())
        for flat in layouts:
            if flat.size < width:
                continue
            flat32 = np.ascontiguousarray(flat, dtype=np.float32)
            hashes = _window_hashes(flat32.view(np.uint32), width)
            candidates = np.flatnonzero(_members(hashes, sorted_hashes))
            found = 0
            for start in candidates.tolist():
                row = wanted[by_hash[int(hashes[start])]]
                if np.array_equal(flat32[start : start + width], row):
                    found += 1
            if found:
                hits += found
                where = safe_path(leaf.path)
                if where not in paths:
                    paths.append(where)
    if not hits:
        return []
    return [
        ModelFinding(
            check="model.training_row_in_parameters",
            severity="block",
            evidence=f"{hits} training row(s) appear whole in the model's parameters "
            f"(at {', '.join(paths[:_MAX_EVIDENCE_PATHS])})",
            fix="release only what the estimator learns; do not attach data to the model",
            metrics={"matches": hits, "places": len(paths)},
        )
    ]


def has_unseeded_randomness(model: Any) -> bool:
    """True when a ``random_state`` hyper-parameter is unset (the refit cannot reproduce it)."""
    try:
        params = model.get_params(deep=True)
    except Exception:
        return False
    return any(k.endswith("random_state") and v is None for k, v in params.items())


def _relative_distance(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":
        return 0.0 if np.array_equal(a, b) else float("inf")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not np.array_equal(np.isnan(a64), np.isnan(b64)):
        return float("inf")
    a64, b64 = np.nan_to_num(a64), np.nan_to_num(b64)
    scale = max(float(np.linalg.norm(b64)), 1e-12)
    return float(np.linalg.norm(a64 - b64)) / scale


def _values(model: Any) -> dict[str, Leaf]:
    return {leaf.path: leaf for leaf in iter_leaves(model) if not leaf.is_key}


def _compare(
    mine: dict[str, Leaf],
    theirs: dict[str, Leaf],
    thresholds: ModelThresholds,
    shape_only: bool,
) -> tuple[float, str, int]:
    """Largest relative distance over shared paths, where it is, and how many differ."""
    worst, worst_path, differing = 0.0, "", 0
    for path, leaf in mine.items():
        other = theirs.get(path)
        if other is None or path.endswith("._sklearn_version"):
            continue
        if isinstance(leaf.value, str) or isinstance(other.value, str):
            distance = 0.0 if leaf.value == other.value else float("inf")
        elif shape_only and leaf.value.dtype.kind in "fc":
            distance = 0.0 if leaf.value.shape == other.value.shape else float("inf")
        else:
            distance = _relative_distance(leaf.value, other.value)
        if distance > thresholds.refit_review_rtol:
            differing += 1
        if distance > worst:
            worst, worst_path = distance, path
    return worst, worst_path, differing


def fit_like_training(estimator: Any, data: ModelData) -> Any:
    """Fit as the sandbox did; its convergence warnings were the operator's to see, not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if data.target is None:
            return estimator.fit(data.features)
        return estimator.fit(data.features, data.target)


def check_refit(
    model: Any,
    train: ModelData,
    thresholds: ModelThresholds,
    *,
    randomised_by_design: bool = False,
) -> tuple[list[ModelFinding], float]:
    """Refit from the declared hyper-parameters and compare; returns findings and seconds.

    ``randomised_by_design`` (DP models): noise makes values differ, so only the structure
    (which attributes, which shapes) is compared, and value differences are not findings.
    """
    start = time.perf_counter()
    try:
        refit = fit_like_training(clone(model), train)
    except Exception as exc:  # the message may quote data: keep only the type
        return [
            ModelFinding(
                check="model.refit",
                severity="review",
                evidence=f"the gate could not retrain the model from its hyper-parameters "
                f"({type(exc).__name__}); a reviewer must judge it without the comparison",
                fix="make the model a plain scikit-learn estimator or pipeline trainable with "
                "fit(features, target) on the training table",
            )
        ], time.perf_counter() - start
    seconds = time.perf_counter() - start
    mine = _values(model)
    theirs = _values(refit)
    findings: list[ModelFinding] = []
    # Column names depend on whether the rows came as a DataFrame or an array; they are
    # covered by the identifier scan, so their presence alone is not extra state.
    extra = [p for p in mine if p not in theirs and ".feature_names_in_" not in p + "."]
    if extra:
        findings.append(
            ModelFinding(
                check="model.refit_extra_state",
                severity="block",
                evidence=f"the model holds {len(extra)} value(s) the declared training does "
                f"not produce (at {', '.join(safe_path(p) for p in extra[:_MAX_EVIDENCE_PATHS])})",
                fix="release the estimator as fit() left it; do not add attributes",
                metrics={"extra_values": len(extra)},
            )
        )
    worst, worst_path, differing = _compare(mine, theirs, thresholds, randomised_by_design)
    metrics: dict[str, float | int | str | bool | None] = {
        "max_relative_distance": worst if np.isfinite(worst) else "inf",
        "differing_values": differing,
        "review_rtol": thresholds.refit_review_rtol,
        "block_rtol": thresholds.refit_block_rtol,
        "refit_seconds": round(seconds, 3),
    }
    where = safe_path(worst_path)
    if worst <= thresholds.refit_review_rtol:
        findings.append(
            ModelFinding(
                check="model.refit",
                severity="info",
                evidence="the model equals a trusted refit from its hyper-parameters "
                f"(largest relative difference {worst:.2g} ≤ {thresholds.refit_review_rtol})",
                metrics=metrics,
            )
        )
        return findings, seconds
    unseeded = has_unseeded_randomness(model)
    if unseeded and not randomised_by_design:
        # An unset random_state matters only if training is actually random: a second
        # refit tells (lbfgs logistic regression ignores its random_state, a forest does not).
        again = _values(fit_like_training(clone(model), train))
        unseeded = _compare(theirs, again, thresholds, False)[0] > thresholds.refit_review_rtol
    severity: Severity = "review"
    if worst > thresholds.refit_block_rtol and not unseeded and not randomised_by_design:
        severity = "block"
    if unseeded:
        reason = "training is random and unseeded, so the refit cannot reproduce it"
        fix = "set random_state=<an integer> on every estimator so the gate can reproduce it"
    elif severity == "review":
        reason = "small differences: solver tolerance, thread count or library version"
        fix = "train with the platform's scikit-learn version and default threads"
    else:
        reason = "the model carries numbers the declared training does not produce"
        fix = "release the estimator exactly as fit() on the training table left it"
    findings.append(
        ModelFinding(
            check="model.refit",
            severity=severity,
            evidence=f"{differing} parameter array(s) differ from a trusted refit; largest "
            f"relative difference {worst:.3g} at {where}: {reason}",
            fix=fix,
            metrics=metrics,
            fix_params={"random_state": thresholds.seed} if unseeded else {},
        )
    )
    return findings, seconds
