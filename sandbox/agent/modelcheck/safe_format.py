"""The one format a model may leave in: skops, loaded against an explicit type allow-list.

Why skops and never pickle: unpickling runs whatever callables the file names, so loading a
pickle *is* running the operator's code on the host. A skops file is a zip of ``.npy``
arrays (read with ``allow_pickle=False``) and a JSON ``schema.json`` that names every type;
loading only instantiates types we allow, and a reviewer can read the schema as text.

Allowed types are skops' own defaults (builtins, numpy, scipy, scikit-learn estimators)
plus :data:`EXTRA_TRUSTED_TYPES` below, each listed on purpose. Anything else is refused with
:class:`.errors.FormatRefused` (``egress.model_format`` on the host) and the list of type
names (type names are code, not data).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

import skops.io as sio

from .errors import FormatRefused

__all__ = [
    "DP_TRUSTED_TYPES",
    "EXTRA_TRUSTED_TYPES",
    "dump_model",
    "is_pickle",
    "load_model_safely",
    "model_sha256",
    "schema_types",
]

#: Types beyond skops' defaults that a released model may contain. Each is a plain data
#: holder whose loading runs no operator code.
EXTRA_TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        # the node arrays of every scikit-learn tree (trees, forests, boosting)
        "sklearn.tree._tree.Tree",
        # the nodes of histogram gradient boosting
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        # neighbour indexes: loadable so that the structure check can say *why* such a
        # model is blocked (it stores training rows), rather than a format error
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.ChebyshevDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        # OpenDP's differentially private PCA (a subclass of sklearn's PCA that adds ε)
        "opendp.extras.sklearn.decomposition.PCA",
    }
)

#: diffprivlib's DP estimators (subclasses of scikit-learn's, adding ε and bounds) and the
#: accountant each one carries (plain numbers: the (ε, δ) of every DP fit). Loading them
#: runs diffprivlib's own code, never the operator's. Part of :data:`EXTRA_TRUSTED_TYPES`.
DP_TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "diffprivlib.accountant.BudgetAccountant",
        "diffprivlib.models.logistic_regression.LogisticRegression",
        "diffprivlib.models.linear_regression.LinearRegression",
        "diffprivlib.models.naive_bayes.GaussianNB",
        "diffprivlib.models.forest.RandomForestClassifier",
        "diffprivlib.models.forest.DecisionTreeClassifier",
        "diffprivlib.models.standard_scaler.StandardScaler",
        "diffprivlib.models.pca.PCA",
        "diffprivlib.models.k_means.KMeans",
    }
)
EXTRA_TRUSTED_TYPES = EXTRA_TRUSTED_TYPES | DP_TRUSTED_TYPES

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


def is_pickle(blob: bytes) -> bool:
    """True when the bytes look like a pickle (any protocol) or a joblib dump.

    Protocols 2-5 start with ``0x80 <proto>``; protocols 0-1 start with an opcode such as
    ``(``, ``c``, ``}``, ``]`` and end with ``.`` (STOP); joblib's default dumps are pickles,
    its compressed ones are zlib/gzip/xz/lzma streams wrapping a pickle.
    """
    head = blob[:2]
    if head[:1] == _PICKLE_PROTO and len(head) == 2 and 2 <= head[1] <= 5:
        return True
    if blob[:1] in (b"(", b"c", b"}", b"]", b"K", b"N", b"I", b"X", b"V") and blob.endswith(b"."):
        return True
    if len(blob) >= 2 and blob[0] == 0x78 and (blob[0] * 256 + blob[1]) % 31 == 0:
        return True  # a zlib stream (CMF 0x78, valid FCHECK): joblib compress=N
    return blob[:2] == b"\x1f\x8b" or blob[:5] == b"\xfd7zXZ" or blob[:3] == b"]\x00\x00"


def model_sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _open_zip(blob: bytes, max_model_bytes: int) -> zipfile.ZipFile:
    if is_pickle(blob):
        raise FormatRefused(
            "the model is a pickle; pickles run code when loaded and are never accepted",
            hint="save the model with skops: skops.io.dump(model, 'model.skops')",
            details={"format": "pickle"},
        )
    if not blob.startswith(_ZIP_MAGIC):
        raise FormatRefused(
            "the model is not a skops file",
            hint="save the model with skops: skops.io.dump(model, 'model.skops')",
            details={"format": "unknown"},
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
    except zipfile.BadZipFile as exc:
        raise FormatRefused(
            "the model file is a damaged zip archive",
            hint="save the model again with skops.io.dump",
            details={"format": "zip"},
        ) from exc
    unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > max_model_bytes:
        raise FormatRefused(
            f"the model unpacks to {unpacked} bytes, above the {max_model_bytes} byte limit",
            hint="release a smaller model (fewer trees, fewer features)",
            kind="too_large",
            details={"unpacked_bytes": unpacked, "max_model_bytes": max_model_bytes},
        )
    if "schema.json" not in archive.namelist():
        raise FormatRefused(
            "the zip archive has no skops schema.json",
            hint="save the model with skops.io.dump, not by zipping files yourself",
            details={"format": "zip"},
        )
    return archive


def _types_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "__module__" in node and "__class__" in node:
            yield f"{node['__module__']}.{node['__class__']}"
        for value in node.values():
            yield from _types_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _types_in(value)


def model_schema(blob: bytes, *, max_model_bytes: int = 2 * 1024**3) -> Any:
    """The skops file's ``schema.json``, parsed: plain JSON, read without loading the model."""
    archive = _open_zip(blob, max_model_bytes)
    try:
        return json.loads(archive.read("schema.json"))
    except ValueError as exc:
        raise FormatRefused(
            "the skops schema is not JSON",
            hint="save the model again with skops.io.dump",
            details={"format": "zip"},
        ) from exc


def schema_types(blob: bytes, *, max_model_bytes: int = 2 * 1024**3) -> list[str]:
    """Every type the skops file names, sorted: what a reviewer reads to know what loads."""
    return sorted(set(_types_in(model_schema(blob, max_model_bytes=max_model_bytes))))


def load_model_safely(
    blob: bytes,
    *,
    extra_trusted: Iterable[str] = (),
    max_model_bytes: int = 2 * 1024**3,
) -> Any:
    """Load a released model; refuse pickles, non-skops files and types outside the list.

    ``extra_trusted`` widens :data:`EXTRA_TRUSTED_TYPES` for one call (a scenario may allow
    a further estimator); it never turns pickle on.
    """
    _open_zip(blob, max_model_bytes)
    allowed = EXTRA_TRUSTED_TYPES | frozenset(extra_trusted)
    try:
        untrusted = sio.get_untrusted_types(data=blob)
    except Exception as exc:  # skops raises several kinds on a malformed schema
        raise FormatRefused(
            "the skops schema cannot be read",
            hint="save the model again with skops.io.dump",
            details={"error": type(exc).__name__},
        ) from exc
    refused = sorted(t for t in untrusted if t not in allowed)
    if refused:
        raise FormatRefused(
            f"the model contains types outside the allow-list: {', '.join(refused)}",
            hint="build the model from scikit-learn estimators only; custom classes and "
            "functions cannot be released",
            details={"untrusted_types": refused},
        )
    try:
        return sio.loads(blob, trusted=list(untrusted))
    except Exception as exc:
        raise FormatRefused(
            "the skops file does not load",
            hint="save the model again with skops.io.dump from the same scikit-learn version",
            details={"error": type(exc).__name__},
        ) from exc


def dump_model(estimator: Any) -> bytes:
    """Serialise a model to skops bytes, and prove it loads back under the allow-list."""
    try:
        blob: bytes = sio.dumps(estimator)
    except Exception as exc:
        raise FormatRefused(
            "the model cannot be saved with skops",
            hint="use scikit-learn estimators; lambdas and custom classes cannot be saved",
            details={"error": type(exc).__name__},
        ) from exc
    load_model_safely(blob)
    return blob
