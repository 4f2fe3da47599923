"""The catalog facts the DP compiler relies on, as plain frozen dataclasses.

The compiler never reads the metadata database: the caller hands it a
``catalog_for(name) -> DatasetCatalog`` function. :func:`DatasetCatalog.from_meta` builds one
from the validated catalog JSON kept in ``datasets.meta`` (``enclave.catalog`` writes it), so
the compiler depends on the *shape* of that document, not on the module that validates it.

Everything here is public information by construction: bounds and domains are declared by
the provider, never computed from the data, because bounds learnt from data would leak it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from egress.errors import QueryRefused

__all__ = ["ROLES", "ColumnSpec", "DatasetCatalog", "Role"]

Role = Literal["identifier", "quasi_identifier", "sensitive", "attribute"]
ROLES: tuple[str, ...] = ("identifier", "quasi_identifier", "sensitive", "attribute")

_INTEGER_TYPES = frozenset(
    {
        "int",
        "integer",
        "int8",
        "int16",
        "int32",
        "int64",
        "bigint",
        "smallint",
        "tinyint",
        "hugeint",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "ubigint",
        "uinteger",
        "usmallint",
        "utinyint",
        "long",
        "short",
    }
)
_FLOAT_TYPES = frozenset(
    {"float", "double", "real", "float32", "float64", "decimal", "numeric", "number"}
)


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its type, its role, and the public bounds or domain of its values."""

    name: str
    type: str = "string"
    role: Role = "attribute"
    bounds: tuple[float, float] | None = None  # public [lower, upper] for numeric columns
    domain: tuple[Any, ...] | None = None  # public list of category values
    nullable: bool = True  # False: the import refused missing values in this column

    @property
    def is_integer(self) -> bool:
        return self.type.lower().split("(")[0] in _INTEGER_TYPES

    @property
    def is_numeric(self) -> bool:
        base = self.type.lower().split("(")[0]
        return base in _INTEGER_TYPES or base in _FLOAT_TYPES


@dataclass(frozen=True)
class DatasetCatalog:
    """What the compiler knows about one dataset (one version of it)."""

    name: str
    privacy_unit: str
    max_rows_per_unit: int
    columns: Mapping[str, ColumnSpec]
    version: int = 1
    unit_bound_verified: bool = False  # the import checked max_rows_per_unit on this version
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_rows_per_unit < 1:
            raise QueryRefused(
                f"dataset {self.name!r} declares max_rows_per_unit={self.max_rows_per_unit}",
                hint="the catalog must declare a positive max_rows_per_unit for DP queries",
            )
        if self.privacy_unit not in self.columns:
            raise QueryRefused(
                f"dataset {self.name!r} names privacy unit {self.privacy_unit!r}, "
                "which is not one of its columns",
                hint="fix the dataset's catalog entry (privacy_unit)",
            )

    def column(self, name: str) -> ColumnSpec:
        try:
            return self.columns[name.lower()]
        except KeyError:
            raise QueryRefused(
                f"dataset {self.name!r} has no column {name!r}",
                hint=f"its columns are: {', '.join(sorted(self.columns))}",
            ) from None

    @classmethod
    def build(
        cls,
        name: str,
        *,
        privacy_unit: str,
        max_rows_per_unit: int,
        columns: Iterable[ColumnSpec],
        version: int = 1,
        unit_bound_verified: bool = False,
    ) -> DatasetCatalog:
        cols = {c.name.lower(): c for c in columns}
        return cls(
            name=name.lower(),
            privacy_unit=privacy_unit.lower(),
            max_rows_per_unit=int(max_rows_per_unit),
            columns=cols,
            version=version,
            unit_bound_verified=unit_bound_verified,
        )

    @classmethod
    def from_meta(
        cls,
        meta: Mapping[str, Any],
        *,
        name: str | None = None,
        version: int | None = None,
        unit_bound_verified: bool = False,
    ) -> DatasetCatalog:
        """Build from the catalog JSON of ``datasets.meta``.

        Accepts ``columns`` as a list of objects with ``name`` or as a mapping from name to
        object; ``privacy_unit`` and ``max_rows_per_unit`` at the top level or under
        ``privacy``. Unknown keys are ignored, so the catalog may grow.
        """
        raw_privacy = meta.get("privacy")
        privacy: Mapping[str, Any] = raw_privacy if isinstance(raw_privacy, Mapping) else {}
        unit = meta.get("privacy_unit") or privacy.get("privacy_unit") or privacy.get("unit")
        max_rows = meta.get("max_rows_per_unit") or privacy.get("max_rows_per_unit")
        ds_name = str(name or meta.get("name") or "")
        if not unit or not max_rows:
            raise QueryRefused(
                f"dataset {ds_name!r} has no privacy unit or max_rows_per_unit in its catalog",
                hint="DP queries need both; ask the provider to declare them in META.yaml",
            )
        raw_cols = meta.get("columns") or []
        items: list[Mapping[str, Any]]
        if isinstance(raw_cols, Mapping):
            items = [{"name": k, **dict(v)} for k, v in raw_cols.items()]
        else:
            items = list(raw_cols)
        cols = [_column_from_meta(c) for c in items]
        return cls.build(
            ds_name,
            privacy_unit=str(unit),
            max_rows_per_unit=int(max_rows),
            columns=cols,
            version=int(version if version is not None else meta.get("version", 1)),
            unit_bound_verified=unit_bound_verified,
        )


def _column_from_meta(c: Mapping[str, Any]) -> ColumnSpec:
    bounds_raw = c.get("bounds")
    bounds: tuple[float, float] | None = None
    if (
        isinstance(bounds_raw, Sequence)
        and not isinstance(bounds_raw, str)
        and len(bounds_raw) == 2
    ):
        lo, hi = float(bounds_raw[0]), float(bounds_raw[1])
        if lo <= hi:
            bounds = (lo, hi)
    elif isinstance(bounds_raw, Mapping):
        lo, hi = float(bounds_raw["lower"]), float(bounds_raw["upper"])
        if lo <= hi:
            bounds = (lo, hi)
    domain_raw = c.get("domain")
    domain = (
        tuple(domain_raw)
        if isinstance(domain_raw, Sequence) and not isinstance(domain_raw, str) and domain_raw
        else None
    )
    role = str(c.get("role", "attribute"))
    if role not in ROLES:
        role = "identifier"  # unknown roles are treated as the most restrictive
    return ColumnSpec(
        name=str(c["name"]).lower(),
        type=str(c.get("type", "string")),
        role=role,  # type: ignore[arg-type]
        bounds=bounds,
        domain=domain,
        nullable=bool(c.get("nullable", True)),
    )
