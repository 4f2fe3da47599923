"""The ``shuyu`` object a Python job sees: read its tables, emit its products.

    df = shuyu.table("people")                 # pandas DataFrame of the granted columns
    shuyu.emit_table("by_region", summary)     # DataFrame or pyarrow Table
    shuyu.emit_metric("auc", 0.83)             # a finite number
    shuyu.emit_model("risk", estimator)        # a scikit-learn estimator, saved with skops
    shuyu.emit_model("risk", est, target="income >= 30000")   # what it predicts (model jobs)
    train, test = shuyu.split(df, test_fraction=0.25, seed=1)   # the operator's own split

Holdout: when the platform declares a holdout for a table (``holdout`` in the job line),
``shuyu.table`` returns only the training rows; the holdout rows never reach the job's
code. Which rows are held out is :func:`holdout_mask` of the row count, fraction and the
platform's seed, so the platform can rebuild the same split to test a model on rows it
never saw (e.g. for membership-inference checks at the gate).

Everything the job must not reach is an attribute starting with ``_``, which
RestrictedPython refuses.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import AgentError
from .protocol import NAME_RE, encode_frame

__all__ = ["Artifacts", "HoldoutSpec", "JobApi", "holdout_mask", "ipc_bytes"]


@dataclass(frozen=True)
class HoldoutSpec:
    fraction: float
    seed: int


def holdout_mask(num_rows: int, fraction: float, seed: int) -> np.ndarray:
    """True for held-out rows: the same rows for the same (count, fraction, seed)."""
    return np.random.default_rng(seed).random(num_rows) < fraction


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


class Artifacts:
    """The frames a job has produced so far, in order."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self._names: set[tuple[bytes, str]] = set()

    def add(self, type_: bytes, name: str, payload: bytes) -> None:
        if not isinstance(name, str) or not NAME_RE.match(name) or (type_, name) in self._names:
            raise AgentError("python.bad_artifact")
        self._names.add((type_, name))
        self.frames.append(encode_frame(type_, name, payload))


class JobApi:
    """What a Python job may do; all state is private (underscore) and so unreachable."""

    def __init__(
        self,
        tables: dict[str, pa.Table],
        holdout: dict[str, HoldoutSpec],
        artifacts: Artifacts,
    ) -> None:
        self._tables = tables
        self._holdout = holdout
        self._artifacts = artifacts

    def tables(self) -> list[str]:
        """The names of the tables this job was granted."""
        return sorted(self._tables)

    def table(self, name: str) -> pd.DataFrame:
        """A granted table as a pandas DataFrame (training rows only under a holdout)."""
        try:
            table = self._tables[name]
        except (KeyError, TypeError):
            raise AgentError("data.unknown_table") from None
        spec = self._holdout.get(name)
        if spec is not None:
            keep = ~holdout_mask(table.num_rows, spec.fraction, spec.seed)
            table = table.filter(pa.array(keep))
        return table.to_pandas()

    def split(
        self, df: pd.DataFrame, test_fraction: float = 0.25, seed: int = 0
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Split the job's own rows into (train, test) for its own validation."""
        if not isinstance(df, pd.DataFrame) or not 0 < float(test_fraction) < 1:
            raise AgentError("python.error")
        mask = holdout_mask(len(df), float(test_fraction), int(seed))
        return df[~mask], df[mask]

    def emit_table(self, name: str, table: Any) -> None:
        if isinstance(table, pd.DataFrame):
            try:
                table = pa.Table.from_pandas(table, preserve_index=False)
            except (pa.ArrowException, ValueError, TypeError):
                raise AgentError("python.bad_artifact") from None
        if not isinstance(table, pa.Table):
            raise AgentError("python.bad_artifact")
        self._artifacts.add(b"T", name, ipc_bytes(table))

    def emit_metric(self, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise AgentError("python.bad_artifact")
        number = float(value)
        if not math.isfinite(number):
            raise AgentError("python.bad_artifact")
        self._artifacts.add(b"M", name, json.dumps(number).encode())

    def emit_model(
        self, name: str, estimator: Any, target: str | None = None, table: str | None = None
    ) -> None:
        """Save a scikit-learn or diffprivlib estimator with skops (JSON and arrays, never pickle).

        ``target`` (the column, or a SQL expression over the table's columns, the model
        predicts) and ``table`` (the table it was fit on) are read by the platform from the
        job's source, as literals, to rebuild the training and holdout rows for its checks.
        """
        if not all(v is None or isinstance(v, str) for v in (target, table)):
            raise AgentError("python.bad_artifact")
        if not type(estimator).__module__.startswith(("sklearn.", "diffprivlib.models.")):
            raise AgentError("python.bad_artifact")
        import skops.io

        try:
            payload = skops.io.dumps(estimator)
        except Exception:
            raise AgentError("python.bad_artifact") from None
        self._artifacts.add(b"K", name, payload)
