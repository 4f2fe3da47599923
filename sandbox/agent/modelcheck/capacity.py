"""Capacity: how many free numbers the model learned, per training row.

A model with as many free parameters as it has rows can hold every row; well below one
parameter per ten rows, it cannot hold much of any one row. The count is deliberately
simple so a reviewer can redo it: every learned floating-point number, where a tree counts
one threshold per split and one value per class per leaf. Integer arrays (indices, tree
structure, counts) are not counted: they index, they do not fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .findings import ModelFinding
from .state import iter_objects

__all__ = ["check_capacity", "count_parameters"]

_TREE = "sklearn.tree._tree.Tree"
_HGB_TREE = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


def _tree_parameters(obj: Any) -> int:
    state = obj.__getstate__()
    nodes, values = state["nodes"], state["values"]
    leaves = int(np.count_nonzero(nodes["left_child"] == -1))
    splits = int(nodes.shape[0]) - leaves
    width = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1
    return splits + leaves * width


def count_parameters(model: Any) -> int:
    """The learned floating-point numbers the model holds (see the module docstring)."""
    total = 0
    handled: list[str] = []
    for path, obj in iter_objects(model):
        if any(path.startswith(prefix) for prefix in handled):
            continue
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if kind == _TREE:
            total += _tree_parameters(obj)
            handled.append(path + ".")
        elif kind == _HGB_TREE:
            total += int(obj.nodes.shape[0])
            handled.append(path + ".")
        elif isinstance(obj, np.ndarray) and obj.dtype.kind in "fc" and not obj.dtype.names:
            last = path.rsplit(".", 1)[-1]
            if obj.size > 1 or last.endswith("_"):
                total += int(obj.size)
        elif isinstance(obj, float | np.floating) and path.rsplit(".", 1)[-1].endswith("_"):
            total += 1
    return total


def check_capacity(model: Any, n_train: int, max_params_per_row: float) -> list[ModelFinding]:
    """Review when learned parameters per training row exceed ``max_params_per_row``."""
    n_params = count_parameters(model)
    ratio = n_params / max(n_train, 1)
    metrics: dict[str, float | int | str | bool | None] = {
        "parameters": n_params,
        "training_rows": n_train,
        "parameters_per_row": round(ratio, 6),
        "max_parameters_per_row": max_params_per_row,
    }
    if ratio <= max_params_per_row:
        return [
            ModelFinding(
                check="model.capacity",
                severity="info",
                evidence=f"{n_params} learned parameters for {n_train} training rows "
                f"({ratio:.4g} per row, limit {max_params_per_row})",
                metrics=metrics,
            )
        ]
    return [
        ModelFinding(
            check="model.capacity",
            severity="review",
            evidence=f"{n_params} learned parameters for {n_train} training rows "
            f"({ratio:.4g} per row, above {max_params_per_row}): enough capacity to memorise",
            fix="use fewer parameters (stronger regularisation, fewer or shallower trees, "
            "larger min_samples_leaf) or train on more rows",
            metrics=metrics,
        )
    ]
