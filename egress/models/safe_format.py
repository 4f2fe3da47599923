"""The skops loader with the host's errors: ``egress.model_format`` for a pickle, a file
that is not skops, types outside the allow-list or an archive too big.

The loader and its allow-list are :mod:`sandbox.agent.modelcheck.safe_format` (the check job
and the operator's sandbox use the same one); the host loads a model only to show or save a
released one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from egress.errors import ModelFormatError
from policies.errors import KINDS, ErrorKind
from sandbox.agent.modelcheck import dp
from sandbox.agent.modelcheck import safe_format as core
from sandbox.agent.modelcheck.errors import FormatRefused

__all__ = ["dump_model", "load_model_safely", "schema_epsilon", "schema_types"]

T = TypeVar("T")


def _as_egress_error(call: Callable[[], T]) -> T:
    try:
        return call()
    except FormatRefused as exc:
        kind = cast(ErrorKind, exc.kind) if exc.kind in KINDS else "invalid"
        raise ModelFormatError(exc.message, hint=exc.hint, kind=kind, details=exc.details) from None


def load_model_safely(
    blob: bytes, *, extra_trusted: Iterable[str] = (), max_model_bytes: int = 2 * 1024**3
) -> Any:
    """Load a released model; refuse pickles, non-skops files and types outside the list."""
    return _as_egress_error(
        lambda: core.load_model_safely(
            blob, extra_trusted=extra_trusted, max_model_bytes=max_model_bytes
        )
    )


def schema_types(blob: bytes, *, max_model_bytes: int = 2 * 1024**3) -> list[str]:
    """Every type the skops file names, sorted: what a reviewer reads to know what loads."""
    return _as_egress_error(lambda: core.schema_types(blob, max_model_bytes=max_model_bytes))


def schema_epsilon(blob: bytes) -> float | None:
    """The model's ε from its skops schema alone (no loading): what the host charges."""
    return _as_egress_error(lambda: dp.schema_epsilon(core.model_schema(blob)))


def dump_model(estimator: Any) -> bytes:
    """Serialise a model to skops bytes, and prove it loads back under the allow-list."""
    return _as_egress_error(lambda: core.dump_model(estimator))
