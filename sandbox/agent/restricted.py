"""Run an operator's Python under RestrictedPython 9 — a second line, never the boundary.

The container (no network, read-only root, no capabilities, limits) is what holds a job
in. RestrictedPython narrows what a job can even try, so escapes have to beat two layers:

* compile time (``compile_restricted``): no names or attributes starting with ``_``
  (so no ``__class__``, ``__subclasses__``, ``__globals__``), no frame, code, generator or
  traceback attributes (``gi_frame``, ``f_back``, ``tb_frame`` …), no ``exec``/``eval``,
  no ``try/except*``;
* run time, through the guards wired into the restricted globals below:
  ``_getattr_`` refuses underscore names, the I/O and code-evaluation attributes of
  numpy/pandas (:data:`DENIED_ATTRIBUTES`), any module not on the allow-list, and
  ``str.format``/``format_map`` (the ``'{0.__class__}'.format(x)`` trick, via
  ``safer_getattr``); ``_getitem_``, ``_getiter_``, ``_write_`` and the unpack guards
  are RestrictedPython's; ``__import__`` allows only :data:`ALLOWED_MODULES`.

What the job may use is the ``shuyu`` object (:mod:`.api`) plus those modules.
"""

from __future__ import annotations

import builtins
import math
import operator
import statistics
import types
from collections.abc import Callable, Mapping
from typing import Any

from RestrictedPython import compile_restricted, safe_builtins  # type: ignore[attr-defined]
from RestrictedPython.Eval import default_guarded_getitem, default_guarded_getiter
from RestrictedPython.Guards import (  # type: ignore[attr-defined]
    INSPECT_ATTRIBUTES,
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr_raise,
)
from RestrictedPython.PrintCollector import PrintCollector

from .errors import AgentError

__all__ = ["ALLOWED_MODULES", "DENIED_ATTRIBUTES", "Refused", "run_python"]

ALLOWED_MODULES: frozenset[str] = frozenset(
    {
        "math",
        "statistics",
        # DP estimators, for scenarios that require DP training (docs/models.md)
        "diffprivlib",
        "diffprivlib.models",
        "numpy",
        "numpy.linalg",
        "numpy.random",
        "pandas",
        "sklearn",
        "sklearn.cluster",
        "sklearn.compose",
        "sklearn.decomposition",
        "sklearn.ensemble",
        "sklearn.impute",
        "sklearn.linear_model",
        "sklearn.metrics",
        "sklearn.model_selection",
        "sklearn.naive_bayes",
        "sklearn.neighbors",
        "sklearn.pipeline",
        "sklearn.preprocessing",
        "sklearn.svm",
        "sklearn.tree",
    }
)

# Attributes that read or write files, evaluate strings as code, or reach native code.
# The container would contain them; refusing them keeps a job from even trying.
DENIED_ATTRIBUTES: frozenset[str] = frozenset(
    {
        # pandas / numpy file I/O
        "to_pickle", "read_pickle", "to_csv", "to_parquet", "to_feather", "to_hdf", "to_sql",
        "to_excel", "to_json", "to_stata", "to_orc", "to_html", "to_latex", "to_xml",
        "to_clipboard", "to_markdown", "to_string", "tofile", "fromfile", "load", "loads",
        "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt", "fromregex",
        "memmap", "DataSource", "open_memmap", "ctypes", "ctypeslib", "dump", "dumps",
        # evaluating strings, reaching interpreter internals
        "eval", "query", "pipe", "f2py", "distutils", "testing", "lib", "core", "io", "api",
        "compat", "errors", "plotting", "options", "set_option", "get_option", "config",
        "show_config", "get_include", "frompyfunc", "vectorize", "info", "source",
        "format",  # format strings can reach attributes ('{0.__class__}')
        "format_map",
        "mro", "gi_frame", "gi_code", "f_back", "f_globals", "f_locals", "f_builtins",
        "tb_frame", "cr_frame", "ag_frame",
        # numpy's global generator: a fixed seed lets a job know the noise of a DP model
        # that draws from it (diffprivlib does); estimators take random_state= instead
        "seed", "set_state", "get_state",
    }
)  # fmt: skip


class Refused(Exception):
    """A guard refused an operation (reported as ``python.not_allowed``)."""


def _guarded_getattr(obj: Any, name: str) -> Any:
    if (
        not isinstance(name, str)
        or name.startswith("_")
        or name in DENIED_ATTRIBUTES
        or name in INSPECT_ATTRIBUTES
    ):
        raise Refused
    if isinstance(obj, types.ModuleType) and name.startswith(("read_", "from_", "to_")):
        raise Refused  # module-level readers/writers: pandas.read_*, numpy.from*
    try:
        value = safer_getattr_raise(obj, name)  # type: ignore[no-untyped-call]
    except NotImplementedError:  # str.format / string.Formatter
        raise Refused from None
    if isinstance(value, types.ModuleType) and value.__name__ not in ALLOWED_MODULES:
        raise Refused
    return value


def _getattr_builtin(obj: Any, name: str, *default: Any) -> Any:
    """``getattr`` for jobs: the same guard as attribute syntax."""
    try:
        return _guarded_getattr(obj, name)
    except AttributeError:
        if default:
            return default[0]
        raise


def _import(
    name: str,
    globals_: Mapping[str, Any] | None = None,
    locals_: Mapping[str, Any] | None = None,
    fromlist: tuple[str, ...] | list[str] | None = (),
    level: int = 0,
) -> types.ModuleType:
    if level != 0 or name not in ALLOWED_MODULES:
        raise Refused
    module = builtins.__import__(name, None, None, fromlist or (), 0)
    for item in fromlist or ():
        if item.startswith("_") or item in DENIED_ATTRIBUTES:
            raise Refused
        value = getattr(module, item, None)
        if isinstance(value, types.ModuleType) and value.__name__ not in ALLOWED_MODULES:
            raise Refused
    return module


def _write(obj: Any) -> Any:
    """Item and attribute writes: allowed on data containers and estimators only."""
    import numpy as np
    import pandas as pd

    if isinstance(obj, dict | list | pd.DataFrame | pd.Series | np.ndarray):
        return obj
    if type(obj).__module__.startswith("sklearn."):
        return obj
    return full_write_guard(obj)


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow,
    "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor,
    "<<=": operator.ilshift, ">>=": operator.irshift, "@=": operator.imatmul,
}  # fmt: skip


def _inplacevar(op: str, x: Any, y: Any) -> Any:
    try:
        return _INPLACE[op](x, y)
    except KeyError:
        raise Refused from None


def _apply(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return f(*args, **kwargs)


def restricted_globals(api: object) -> dict[str, Any]:
    safe = dict(safe_builtins)
    for name in ("setattr", "delattr"):  # no attribute writes by function either
        safe.pop(name, None)
    safe.update(
        {
            "__import__": _import,
            "getattr": _getattr_builtin,
            "list": list, "dict": dict, "set": set, "frozenset": frozenset, "tuple": tuple,
            "min": min, "max": max, "sum": sum, "any": any, "all": all, "map": map,
            "filter": filter, "enumerate": enumerate, "reversed": reversed, "sorted": sorted,
            "zip": zip, "range": range, "abs": abs, "round": round, "len": len,
            "math": math, "statistics": statistics,
        }
    )  # fmt: skip
    return {
        "__builtins__": safe,
        "__name__": "job",
        "__metaclass__": type,
        "_getattr_": _guarded_getattr,
        "_getitem_": default_guarded_getitem,
        "_getiter_": default_guarded_getiter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": _write,
        "_inplacevar_": _inplacevar,
        "_apply_": _apply,
        "_print_": PrintCollector,  # printed text is collected and dropped, never returned
        "shuyu": api,
    }


def run_python(source: str, api: object) -> None:
    """Compile under RestrictedPython and run; every failure becomes an AgentError code."""
    try:
        code = compile_restricted(source, filename="<job>", mode="exec")
    except SyntaxError:
        raise AgentError("python.compile") from None
    try:
        exec(code, restricted_globals(api))  # noqa: S102 - restricted code, guarded globals
    except AgentError:
        raise
    except (Refused, ImportError, NameError):
        raise AgentError("python.not_allowed") from None
    except MemoryError:
        raise AgentError("limit.memory") from None
    except RuntimeError as exc:
        if "thread" in str(exc):
            raise AgentError("limit.pids") from None
        raise AgentError("python.error") from None
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC: the tmpfs scratch is full
            raise AgentError("limit.scratch") from None
        raise AgentError("python.error") from None
    except Exception:
        raise AgentError("python.error") from None
