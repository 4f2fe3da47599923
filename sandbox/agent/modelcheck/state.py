"""Walk everything a model holds: every object, array, number and string, with its path.

A model can hide data anywhere it can hold a value: a fitted array, a custom attribute, a
dict key, a string hyper-parameter, a node array of a tree. The walk visits all of it, the
same way for every estimator: an object's ``__getstate__`` (what skops saves) or its
``__dict__``; dicts (keys too), lists and tuples; object arrays element by element;
structured arrays field by field. Random generators are skipped: their state is noise.

Paths name attributes (``steps[1][1].coef_``). Attribute names are chosen by the training
code, so a path is evidence only after :func:`safe_path` has redacted anything in it that
could carry a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Leaf", "iter_leaves", "iter_objects", "safe_path"]

_MAX_DEPTH = 64
_SAFE_SEGMENT = re.compile(r"^_{0,2}[A-Za-z][A-Za-z_]*[0-9]?[A-Za-z_]*$")


@dataclass(frozen=True)
class Leaf:
    """A value in the model: a numeric array (scalars become 1-element arrays) or a string."""

    path: str
    value: np.ndarray[Any, Any] | str
    #: True for numbers that scikit-learn learned or was given; False for attribute names
    #: and dict keys (strings only).
    is_key: bool = False


def _state_of(obj: Any) -> Any:
    getstate = getattr(obj, "__getstate__", None)
    if getstate is not None:
        try:
            state = getstate()
        except TypeError:
            state = None
        if state is not None:
            return state
    return getattr(obj, "__dict__", None)


def _is_rng(obj: Any) -> bool:
    return isinstance(obj, np.random.RandomState | np.random.Generator | np.random.BitGenerator)


def _walk(obj: Any, path: str, seen: dict[int, Any], depth: int) -> Iterator[tuple[str, Any]]:
    """Yield ``(path, value)`` for every value reachable from ``obj`` (pre-order)."""
    yield path, obj
    if depth > _MAX_DEPTH or obj is None or isinstance(obj, bool | int | float | complex):
        return
    if isinstance(obj, str | bytes | np.generic) or _is_rng(obj) or isinstance(obj, type):
        return
    if id(obj) in seen:
        return
    seen[id(obj)] = obj  # holding the object keeps its id from being reused by a temporary
    if isinstance(obj, np.ndarray):
        if obj.dtype.names:
            for name in obj.dtype.names:
                yield from _walk(obj[name], f"{path}.{name}", seen, depth + 1)
        elif obj.dtype == object:
            for i, item in enumerate(obj.ravel()):
                yield from _walk(item, f"{path}[{i}]", seen, depth + 1)
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"{path}.<key>", key
            yield from _walk(value, f"{path}[{key}]", seen, depth + 1)
        return
    if isinstance(obj, list | tuple | set | frozenset):
        for i, item in enumerate(obj):
            yield from _walk(item, f"{path}[{i}]", seen, depth + 1)
        return
    if callable(obj) and not hasattr(obj, "__dict__"):
        return  # builtin functions and ufuncs: a name, nothing learned
    state = _state_of(obj)
    if isinstance(state, dict):
        for key, value in state.items():
            yield f"{path}.<key>", key
            yield from _walk(value, f"{path}.{key}", seen, depth + 1)
    elif isinstance(state, tuple | list):
        for i, item in enumerate(state):
            yield from _walk(item, f"{path}.<state>[{i}]", seen, depth + 1)


def iter_objects(model: Any) -> Iterator[tuple[str, Any]]:
    """Every object in the model (estimators, trees, containers, values) with its path."""
    yield from _walk(model, "model", {}, 0)


def iter_leaves(model: Any) -> Iterator[Leaf]:
    """Every number (as an array) and every string the model holds, keys and names included."""
    for path, value in iter_objects(model):
        is_key = path.endswith(".<key>")
        if isinstance(value, str):
            yield Leaf(path, value, is_key)
        elif isinstance(value, bytes):
            yield Leaf(path, value.decode("latin-1"), is_key)
        elif isinstance(value, bool | int | float | np.number | np.bool_):
            if not is_key:
                yield Leaf(path, np.asarray([value]))
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and not value.dtype.names:
            yield Leaf(path, value)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "US":
            for item in value.ravel():
                yield Leaf(path, str(item))


def safe_path(path: str, forbidden_tokens: frozenset[str] = frozenset()) -> str:
    """The path with every segment that could carry a value replaced by ``<name>``.

    Kept: segments shaped like Python attribute names with at most one digit (``coef_``,
    ``l1_ratio``), and list positions. Anything else - long digit runs, non-ASCII text, and
    any segment that is itself a searched identifier - is redacted.
    """
    out: list[str] = []
    for segment in re.split(r"(\.|\[|\])", path):
        keep = (
            segment in ("", ".", "[", "]", "<key>", "<state>")
            or (segment.isdigit() and len(segment) <= 6)
            or (bool(_SAFE_SEGMENT.match(segment)) and segment not in forbidden_tokens)
        )
        if keep:
            out.append(segment)
        else:
            out.append("<name>")
    return "".join(out)
