"""Class and structure: models that keep training rows, and trees with leaves too small.

Some estimators keep training rows by construction (a k-NN model *is* its training set; an
SVM keeps its support vectors). No threshold makes them safe to release: they are blocked
by class. Trees are released cells: each leaf value is an aggregate of the rows that reach
it, so a leaf resting on fewer rows than the scenario's minimum cell size discloses those
rows the way a small cell in a table would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .findings import ModelFinding
from .state import iter_objects, safe_path

__all__ = ["ROW_STORING_CLASSES", "check_leaf_sizes", "check_per_row", "check_row_storing_classes"]

_NEIGHBOURS = "keeps every training row and answers from the nearest ones"
_SVM = "keeps support vectors, which are training rows"
_EMBED = "keeps the training rows or one output per training row"

#: scikit-learn classes that keep training rows (or one value per row) as parameters.
ROW_STORING_CLASSES: Mapping[str, str] = {
    "KNeighborsClassifier": _NEIGHBOURS,
    "KNeighborsRegressor": _NEIGHBOURS,
    "RadiusNeighborsClassifier": _NEIGHBOURS,
    "RadiusNeighborsRegressor": _NEIGHBOURS,
    "NearestNeighbors": _NEIGHBOURS,
    "KNeighborsTransformer": _NEIGHBOURS,
    "RadiusNeighborsTransformer": _NEIGHBOURS,
    "LocalOutlierFactor": _NEIGHBOURS,
    "KernelDensity": "keeps every training row as a kernel centre",
    "KDTree": "is an index over training rows",
    "BallTree": "is an index over training rows",
    "SVC": _SVM,
    "SVR": _SVM,
    "NuSVC": _SVM,
    "NuSVR": _SVM,
    "OneClassSVM": _SVM,
    "GaussianProcessClassifier": "keeps the training rows (X_train_) to predict",
    "GaussianProcessRegressor": "keeps the training rows (X_train_) to predict",
    "KernelRidge": "keeps the training rows (X_fit_) to predict",
    "KernelPCA": "keeps the training rows (X_fit_) to transform",
    "Nystroem": "keeps sampled training rows as its components",
    "IsolationForest": "isolates single training rows in its leaves by design",
    "LabelPropagation": "keeps the training rows (X_)",
    "LabelSpreading": "keeps the training rows (X_)",
    "AffinityPropagation": "uses training rows themselves as cluster centres",
    "DBSCAN": "keeps core samples, which are training rows",
    "OPTICS": _EMBED,
    "HDBSCAN": _EMBED,
    "Isomap": _EMBED,
    "LocallyLinearEmbedding": _EMBED,
    "SpectralEmbedding": _EMBED,
    "TSNE": _EMBED,
    "MDS": _EMBED,
    "SpectralClustering": _EMBED,
    "Birch": "keeps subcluster centres that can be single training rows",
}


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def check_row_storing_classes(model: Any) -> list[ModelFinding]:
    """Block every scikit-learn object in the model whose class keeps training rows."""
    hits: dict[str, list[str]] = {}
    for path, obj in iter_objects(model):
        name = type(obj).__name__
        module = type(obj).__module__ or ""
        if name in ROW_STORING_CLASSES and module.startswith("sklearn."):
            hits.setdefault(name, []).append(safe_path(path))
    return [
        ModelFinding(
            check="model.stores_training_rows",
            severity="block",
            evidence=f"{name} {ROW_STORING_CLASSES[name]} (at {', '.join(paths[:3])})",
            fix="use a model that summarises the data instead of keeping it: a regularised "
            "linear model, or trees with min_samples_leaf at the scenario's minimum cell size",
            metrics={"class": name, "occurrences": len(paths)},
        )
        for name, paths in hits.items()  # walk order: the outermost estimator first
    ]


def _leaf_counts(obj: Any) -> np.ndarray[Any, Any] | None:
    """Rows per leaf for a scikit-learn tree or a histogram-boosting predictor, else None."""
    kind = _class_name(obj)
    if kind == "sklearn.tree._tree.Tree":
        nodes = obj.__getstate__()["nodes"]
        return np.asarray(nodes["n_node_samples"][nodes["left_child"] == -1])
    if kind == "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor":
        nodes = obj.nodes
        return np.asarray(nodes["count"][nodes["is_leaf"] == 1])
    return None


def check_leaf_sizes(model: Any, min_cell_size: int) -> list[ModelFinding]:
    """Block trees with a leaf on fewer than ``min_cell_size`` training rows.

    Counts are distinct training rows reaching the leaf (bootstrap duplicates count once,
    which is what matters: it is how many people the leaf value rests on). When one person
    has several rows, rows over-count people; the scenario's sample view (R1.5) keeps one
    row per privacy unit.
    """
    trees = small_trees = leaves = small_leaves = 0
    smallest: int | None = None
    for _path, obj in iter_objects(model):
        counts = _leaf_counts(obj)
        if counts is None or counts.size == 0:
            continue
        trees += 1
        leaves += int(counts.size)
        small = int(np.count_nonzero(counts < min_cell_size))
        small_leaves += small
        small_trees += small > 0
        low = int(counts.min())
        smallest = low if smallest is None else min(smallest, low)
    if not trees:
        return []
    metrics: dict[str, float | int | str | bool | None] = {
        "trees": trees,
        "leaves": leaves,
        "small_leaves": small_leaves,
        "smallest_leaf_rows": smallest,
        "min_cell_size": min_cell_size,
    }
    if not small_leaves:
        return [
            ModelFinding(
                check="model.small_leaves",
                severity="info",
                evidence=f"all {leaves} leaves of {trees} tree(s) rest on at least "
                f"{min_cell_size} training rows (smallest: {smallest})",
                metrics=metrics,
            )
        ]
    return [
        ModelFinding(
            check="model.small_leaves",
            severity="block",
            evidence=f"{small_leaves} of {leaves} leaves in {small_trees} of {trees} tree(s) "
            f"rest on fewer than {min_cell_size} training rows (smallest: {smallest})",
            fix=f"train with min_samples_leaf={min_cell_size} (the scenario's minimum cell size)",
            metrics=metrics,
            fix_params={"min_samples_leaf": min_cell_size},
        )
    ]


def check_per_row(model: Any, n_train: int) -> list[ModelFinding]:
    """Block arrays with one entry per training row (``labels_``, ``embedding_``...).

    Such an array is row-level output about the training set (which cluster each person is
    in, where each person lies in an embedding), whatever the class that made it.
    """
    if n_train < 20:
        return []
    paths: list[str] = []
    tree_prefixes: list[str] = []  # node arrays of trees are sized by nodes, not rows
    for path, obj in iter_objects(model):
        if _leaf_counts(obj) is not None:
            tree_prefixes.append(path + ".")
        elif (
            isinstance(obj, np.ndarray)
            and obj.ndim >= 1
            and obj.shape[0] == n_train
            and not any(path.startswith(p) for p in tree_prefixes)
        ):
            paths.append(safe_path(path))
    if not paths:
        return []
    return [
        ModelFinding(
            check="model.per_row_attribute",
            severity="block",
            evidence=f"{len(paths)} array(s) have one entry per training row "
            f"({', '.join(paths[:3])})",
            fix="delete these attributes before saving (e.g. `del model.labels_`) or use an "
            "estimator that does not keep them",
            metrics={"arrays": len(paths), "training_rows": n_train},
        )
    ]
