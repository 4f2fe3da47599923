"""The data the checks run on: training rows and holdout rows, as numpy, pandas or Arrow.

The checks run as trusted code in a sandbox of their own, next to the decrypted sample (the
host never reads the rows), so they take the rows themselves. ``ModelData`` keeps the
features in the form the model was trained on (a DataFrame keeps its column names, which
scikit-learn checks at predict time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import CheckInputRefused

__all__ = ["ModelData"]


def _as_frame_or_array(features: Any) -> Any:
    if isinstance(features, pa.Table | pa.RecordBatch):
        return features.to_pandas()
    if isinstance(features, pd.DataFrame):
        return features
    array = np.asarray(features)
    if array.ndim != 2:
        raise CheckInputRefused(
            f"features must be a 2-D table, got {array.ndim} dimension(s)",
            hint="pass a pandas DataFrame, a pyarrow Table or a 2-D numpy array",
        )
    return array


def _as_vector(target: Any) -> Any:
    if target is None:
        return None
    if isinstance(target, pa.ChunkedArray | pa.Array):
        return target.to_numpy(zero_copy_only=False)
    return np.asarray(target)


@dataclass(frozen=True, init=False)
class ModelData:
    """Features (and a target for supervised models) for one side: training or holdout."""

    features: Any
    target: Any

    def __init__(self, features: Any, target: Any = None) -> None:
        frame = _as_frame_or_array(features)
        vector = _as_vector(target)
        if vector is not None and len(vector) != len(frame):
            raise CheckInputRefused(
                f"target has {len(vector)} rows but features have {len(frame)}",
                hint="pass the target column of the same rows",
            )
        object.__setattr__(self, "features", frame)
        object.__setattr__(self, "target", vector)

    @classmethod
    def from_table(
        cls, table: Any, *, target: str | None, features: Sequence[str] | None = None
    ) -> ModelData:
        """Split a DataFrame or Arrow table into features and the named target column."""
        frame = table.to_pandas() if isinstance(table, pa.Table | pa.RecordBatch) else table
        if not isinstance(frame, pd.DataFrame):
            raise CheckInputRefused(
                "from_table needs a pandas DataFrame or a pyarrow Table",
                hint="build ModelData(features, target) from arrays instead",
            )
        names = list(features) if features is not None else [c for c in frame if c != target]
        missing = [n for n in [*names, *([target] if target else [])] if n not in frame]
        if missing:
            raise CheckInputRefused(
                f"column(s) not in the table: {', '.join(map(str, missing))}",
                hint="name columns that the training table has",
            )
        return cls(frame[names], frame[target] if target is not None else None)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    def numeric_matrix(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The numeric feature columns as float64, in column order (for the row scan)."""
        if isinstance(self.features, pd.DataFrame):
            numeric = self.features.select_dtypes(include=["number", "bool"])
            matrix: np.ndarray[Any, np.dtype[np.float64]] = numeric.to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            return matrix
        if np.issubdtype(self.features.dtype, np.number) or self.features.dtype == bool:
            return np.asarray(self.features, dtype=np.float64)
        return np.empty((len(self.features), 0), dtype=np.float64)

    def take(self, rows: np.ndarray[Any, np.dtype[np.intp]]) -> ModelData:
        """The given rows (by position), same form as this data."""
        if isinstance(self.features, pd.DataFrame):
            feats: Any = self.features.iloc[rows]
        else:
            feats = self.features[rows]
        return ModelData(feats, None if self.target is None else self.target[rows])
