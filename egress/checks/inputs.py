"""Everything the checks read: the output, its per-cell statistics, the catalog, thresholds.

These are plain, frozen structures so the checks stay pure functions — data and limits in,
findings out — and can be tested without a database, a sandbox or a domain.

Per-cell statistics come from the sandbox's *trusted* query, which computes them next to
the data alongside the operator's aggregates (the operator never sees them). The contract
for one output of ``R`` rows is :class:`OutputStats`:

* ``n_units[r]``: how many distinct privacy units contribute to row ``r``;
* ``contributions[measure]``: for each ``sum``/``mean`` column, per row the total of the
  units' absolute contributions and the largest few, descending (``top[r, 0]`` is the
  largest) — what the dominance rules need;
* ``units[r]``: the row's contributing units as *keyed* 64-bit hashes, sorted ascending
  (see :mod:`egress.checks.sketch`) — what differencing needs. Never the unit ids.

Over the wire (Arrow, from the sandbox) the same thing is one table with ``R`` rows:
``n_units`` (int64), ``<measure>__total`` (float64), ``<measure>__top`` (list<float64>,
descending) and ``units`` (list<uint64>, ascending) — see :meth:`OutputStats.from_arrow`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from egress.errors import EgressError
from policies.disclosure import EffectiveDisclosure, effective_disclosure
from policies.grades import GradePolicy
from policies.scenario import Disclosure

__all__ = [
    "ROLES",
    "CellStats",
    "ColumnInfo",
    "ColumnRole",
    "Contributions",
    "DatasetInfo",
    "MeasureKind",
    "OutputMode",
    "OutputSpec",
    "OutputStats",
    "Thresholds",
]

MeasureKind = Literal["count", "sum", "mean"]
OutputMode = Literal["sdc_aggregate", "dp_aggregate", "model"]
ColumnRole = Literal["identifier", "quasi_identifier", "sensitive", "attribute"]
ROLES: tuple[str, ...] = ("identifier", "quasi_identifier", "sensitive", "attribute")

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def _bad(message: str, hint: str) -> EgressError:
    return EgressError(message, code="egress.check_input", kind="invalid", hint=hint)


# --- the catalog, as the checks need it ----------------------------------------------------


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # int | float | string | date | timestamp | bool
    role: ColumnRole
    grade: str  # L1 .. L4


@dataclass(frozen=True)
class DatasetInfo:
    """One input dataset: its privacy unit and its columns' roles and grades."""

    name: str
    privacy_unit: str | None
    columns: tuple[ColumnInfo, ...]
    version: int | None = None

    def columns_with_role(self, *roles: str) -> list[str]:
        return [c.name for c in self.columns if c.role in roles]

    @property
    def identifying_columns(self) -> list[str]:
        """Identifier columns plus the privacy unit: each value points at one person."""
        names = self.columns_with_role("identifier")
        if self.privacy_unit and self.privacy_unit not in names:
            names.append(self.privacy_unit)
        return names

    @property
    def grades(self) -> list[str]:
        return sorted({c.grade for c in self.columns})

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], version: int | None = None) -> DatasetInfo:
        """From a catalog entry as stored (``datasets.meta``: the validated META.yaml)."""
        default_grade = str(meta.get("grade") or "L4")
        cols = tuple(
            ColumnInfo(
                name=str(c["name"]),
                type=str(c.get("type", "string")),
                role=c.get("role", "attribute"),
                grade=str(c.get("grade") or default_grade),
            )
            for c in meta.get("columns", [])
        )
        unit = meta.get("privacy_unit")
        return cls(str(meta["name"]), None if unit is None else str(unit), cols, version)


# --- thresholds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Every limit the table checks apply; defaults are the conservative L3/L4 ones."""

    min_cell_units: int = 10  # threshold rule: fewest units a released cell may rest on
    dominance_n: int = 2  # (n, k) rule: the n largest contributors ...
    dominance_k_percent: float = 90.0  # ... may hold at most k % of the cell total
    p_percent: float = 10.0  # p% rule: no contributor estimable to within p %
    rounding_base: int | None = None  # released counts must be multiples of this
    identifier_min_chars: int = 6  # shorter identifier values are matched by column only
    row_match_fraction: float = 0.5  # share of rows found in a source that makes it row-level

    def __post_init__(self) -> None:
        if self.min_cell_units < 1 or self.dominance_n < 1:
            raise _bad("thresholds must be at least 1", "check the scenario's disclosure block")
        if not 0 < self.dominance_k_percent <= 100 or not 0 < self.p_percent <= 100:
            raise _bad("percentages must lie in (0, 100]", "check the scenario's disclosure block")
        if self.rounding_base is not None and self.rounding_base < 1:
            raise _bad("rounding base must be at least 1", "check the scenario's disclosure block")

    @classmethod
    def from_disclosure(cls, effective: EffectiveDisclosure) -> Thresholds:
        """The scenario's effective thresholds (``policies.disclosure``).

        A scenario that leaves the p% rule unset still gets it at the default 10 %: the
        gate applies the rule to every SDC sum, the scenario may only make it stricter.
        """
        return cls(
            min_cell_units=effective.min_cell_size,
            dominance_n=effective.dominance_n,
            dominance_k_percent=effective.dominance_k_percent,
            p_percent=max(cls.p_percent, effective.p_percent or 0.0),
            rounding_base=effective.rounding_base,
        )

    @classmethod
    def from_policy(
        cls,
        grades: GradePolicy,
        dataset_grades: Iterable[str],
        disclosure: Disclosure | None = None,
    ) -> Thresholds:
        """The grades' rules for the most sensitive input, tightened by the scenario's."""
        return cls.from_disclosure(
            effective_disclosure(disclosure or Disclosure(), list(dataset_grades), grades)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_cell_units": self.min_cell_units,
            "dominance_n": self.dominance_n,
            "dominance_k_percent": self.dominance_k_percent,
            "p_percent": self.p_percent,
            "rounding_base": self.rounding_base,
            "identifier_min_chars": self.identifier_min_chars,
            "row_match_fraction": self.row_match_fraction,
        }


# --- per-cell statistics -------------------------------------------------------------------


@dataclass(frozen=True)
class CellStats:
    """The statistics of one output row, for building :class:`OutputStats` by hand.

    ``top`` holds the largest absolute contributions of single units, descending; give at
    least ``max(dominance_n, 2)`` of them (fewer means the cell has fewer units).
    ``units`` holds the keyed hashes of the contributing units (any order).
    """

    n_units: int
    total: float = 0.0
    top: tuple[float, ...] = ()
    units: tuple[int, ...] | None = None

    @property
    def top1(self) -> float:
        return self.top[0] if self.top else 0.0

    @property
    def top2(self) -> float:
        return self.top[1] if len(self.top) > 1 else 0.0


@dataclass(frozen=True)
class Contributions:
    """One measure's dominance inputs: per row the total and the top contributions."""

    total: F64  # shape (rows,)
    top: F64  # shape (rows, t), descending along axis 1, zero-padded

    def top_sum(self, n: int) -> F64:
        t = min(n, self.top.shape[1])
        return np.asarray(self.top[:, :t].sum(axis=1), dtype=np.float64)


@dataclass(frozen=True)
class OutputStats:
    """Per-row statistics of one output, aligned with its rows (see the module docstring)."""

    n_units: I64
    contributions: Mapping[str, Contributions] = field(default_factory=dict)
    units: pa.ListArray | None = None  # list<uint64> per row, each list sorted ascending

    def __len__(self) -> int:
        return int(self.n_units.shape[0])

    @classmethod
    def from_cells(cls, cells: Sequence[CellStats], measures: Sequence[str] = ()) -> OutputStats:
        """From one :class:`CellStats` per row; every listed measure gets the same stats."""
        n = np.array([c.n_units for c in cells], dtype=np.int64)
        width = max([2, *(len(c.top) for c in cells)])
        top = np.zeros((len(cells), width), dtype=np.float64)
        for i, c in enumerate(cells):
            vals = sorted((abs(v) for v in c.top), reverse=True)
            top[i, : len(vals)] = vals
        total = np.array([abs(c.total) for c in cells], dtype=np.float64)
        contrib = {m: Contributions(total, top) for m in measures}
        units: pa.ListArray | None = None
        if any(c.units is not None for c in cells):
            lists = [sorted(set(c.units or ())) for c in cells]
            units = pa.array(lists, type=pa.list_(pa.uint64()))
        return cls(n, contrib, units)

    @classmethod
    def from_arrow(cls, table: pa.Table, measures: Sequence[str] = ()) -> OutputStats:
        """From the trusted query's stats table (columns named in the module docstring)."""
        if "n_units" not in table.column_names:
            raise _bad(
                "the cell statistics have no n_units column",
                "the trusted query must return n_units per output row",
            )
        n = np.asarray(table.column("n_units").to_numpy(zero_copy_only=False), dtype=np.int64)
        contrib: dict[str, Contributions] = {}
        for m in measures:
            tot_name, top_name = f"{m}__total", f"{m}__top"
            if tot_name not in table.column_names or top_name not in table.column_names:
                raise _bad(
                    f"the cell statistics lack {tot_name} / {top_name}",
                    "the trusted query must return the total and top contributions of "
                    "every sum or mean column",
                )
            total = np.abs(
                np.asarray(table.column(tot_name).to_numpy(zero_copy_only=False), np.float64)
            )
            contrib[m] = Contributions(total, _top_matrix(table.column(top_name)))
        units = None
        if "units" in table.column_names:
            col = table.column("units").combine_chunks()
            units = col.cast(pa.list_(pa.uint64()))
        return cls(n, contrib, units)


def _top_matrix(col: pa.ChunkedArray) -> F64:
    arr = col.combine_chunks()
    rows = len(arr)
    lengths = np.asarray(arr.value_lengths().fill_null(0).to_numpy(), dtype=np.int64)
    width = max(2, int(lengths.max()) if rows else 2)
    out = np.zeros((rows, width), dtype=np.float64)
    if rows == 0:
        return out
    values = np.abs(np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64))
    row_idx = np.repeat(np.arange(rows), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(values.shape[0]) - np.repeat(starts, lengths)
    out[row_idx, pos] = values
    # the query promises descending order; sort anyway, the rules depend on it
    return np.asarray(-np.sort(-out, axis=1), dtype=np.float64)


# --- the output ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputSpec:
    """One output of a job, as the gate sees it.

    ``measures`` names the aggregate columns and their kind; every other column is a
    *key* (a grouping dimension) when the output has measures, and a *record* column when
    it has none (a Python job's table, or SQL without aggregates), which is what the
    row-level check looks at. ``keys`` overrides that inference.
    """

    name: str
    table: pa.Table
    datasets: tuple[str, ...]
    mode: OutputMode = "sdc_aggregate"
    measures: Mapping[str, MeasureKind] = field(default_factory=dict)
    keys: tuple[str, ...] | None = None
    stats: OutputStats | None = None

    def __post_init__(self) -> None:
        cols = set(self.table.column_names)
        missing = [m for m in self.measures if m not in cols]
        if missing:
            raise _bad(
                f"output {self.name!r} declares measures it does not have: {missing}",
                "name the output's aggregate columns exactly as they appear in the table",
            )
        bad_kinds = sorted({k for k in self.measures.values() if k not in ("count", "sum", "mean")})
        if bad_kinds:
            raise _bad(f"unknown measure kinds {bad_kinds}", "use count, sum or mean")
        if self.stats is not None and len(self.stats) != self.table.num_rows:
            raise _bad(
                f"output {self.name!r} has {self.table.num_rows} rows but statistics for "
                f"{len(self.stats)}",
                "the trusted query must return one statistics row per output row",
            )

    @property
    def key_columns(self) -> tuple[str, ...]:
        if self.keys is not None:
            return self.keys
        if not self.measures:
            return ()
        return tuple(c for c in self.table.column_names if c not in self.measures)

    @property
    def record_columns(self) -> tuple[str, ...]:
        """Columns that are neither grouping keys nor declared counts."""
        keys = set(self.key_columns)
        return tuple(
            c for c in self.table.column_names if c not in keys and self.measures.get(c) != "count"
        )

    def measures_of(self, *kinds: str) -> list[str]:
        return [m for m, k in self.measures.items() if k in kinds]

    @property
    def is_dp(self) -> bool:
        return self.mode == "dp_aggregate"
