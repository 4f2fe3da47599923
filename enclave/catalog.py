"""The catalog: a dataset's metadata (META.yaml), typed and validated field by field.

A catalog entry carries the fields the regulations require of a public-data catalog
(R3.3, 002 §12) plus what shuyu needs to protect the data: a grade per column (R3.1), the
role of each column (identifier, quasi-identifier, sensitive, attribute), public bounds
for numeric columns and public domains for categories (the DP compiler clamps to them, so
they must be *public* knowledge, never read off the data), and the privacy unit with the
most rows one unit may own.

Validation collects every problem and raises one :class:`~enclave.errors.CatalogError`
whose message names each field: ``columns[3].bounds: required for numeric column
'income'``. Two refusals are policy, not syntax: a ``core`` (核心数据) grade, and data that
is neither open nor desensitized (R2.5); their messages say what to do instead.

Checks run in two passes: first the shape of every field (all at once, top level and each
column on its own), then the rules that relate fields to each other (privacy unit names a
column, dataset grade covers its columns) on whatever passed the first.

The catalog never holds data: :func:`render_catalog` shows an entry, never a row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from enclave.errors import CatalogError
from policies.grades import GradePolicy, load_grades

__all__ = [
    "COLUMN_TYPES",
    "NUMERIC_TYPES",
    "ROLES",
    "AuthorizedOperation",
    "ColumnMeta",
    "ColumnType",
    "DatasetMeta",
    "OpenAttribute",
    "Provider",
    "Role",
    "ShareAttribute",
    "TimeCoverage",
    "catalog_entry",
    "column_entry",
    "load_meta",
    "parse_meta",
    "render_catalog",
]

ColumnType = Literal["int", "float", "string", "date", "timestamp", "bool"]
Role = Literal["identifier", "quasi_identifier", "sensitive", "attribute"]
COLUMN_TYPES: tuple[str, ...] = ColumnType.__args__  # type: ignore[attr-defined]
ROLES: tuple[str, ...] = Role.__args__  # type: ignore[attr-defined]
NUMERIC_TYPES = frozenset({"int", "float"})
_DOMAIN_TYPES = frozenset({"int", "string", "bool"})
_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

UpdateFrequency = Literal[
    "real_time", "daily", "weekly", "monthly", "quarterly", "yearly", "irregular", "once"
]


class _Strict(BaseModel):
    # extra="forbid" turns a misspelt key (`bound:`) into an error instead of a silent no-op.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeCoverage(_Strict):
    """时间覆盖范围: the period the rows describe."""

    start: date
    end: date | None = None  # None: ongoing


class Provider(_Strict):
    """数源单位: the body that provides and owns the data."""

    name: str = Field(min_length=1)
    code: str = Field(min_length=1, max_length=128)  # unified social credit / org code


class ShareAttribute(_Strict):
    """共享属性 (R3.4, 002 §24)."""

    type: Literal["unconditional", "conditional", "not_shared"]
    conditions: str = ""


class OpenAttribute(_Strict):
    """开放属性 (R3.4, 002 §37)."""

    type: Literal["unconditional", "conditional", "not_open"]
    conditions: str = ""


class AuthorizedOperation(_Strict):
    """授权运营状态 and the scenarios the data is authorized for."""

    status: Literal["authorized", "pending", "not_authorized"]
    scenarios: list[str] = Field(default_factory=list)


class ColumnMeta(_Strict):
    """One data item (数据项): its name, format, grade, role and public value range."""

    name: str
    type: ColumnType
    grade: str | None = None  # None: the dataset's grade
    role: Role
    label: str = ""  # the name people use, e.g. 身份证号
    description: str = ""
    nullable: bool = True
    bounds: tuple[float, float] | None = None  # public [lower, upper] for numeric columns
    domain: list[str | int | float | bool] | None = None  # public list of category values

    @property
    def numeric(self) -> bool:
        return self.type in NUMERIC_TYPES


class _CatalogFields(_Strict):
    name: str = Field(min_length=1, max_length=256)  # 数据名称
    summary: str = Field(min_length=1)  # 数据摘要
    format: str = Field(default="table", min_length=1)  # 数据格式
    industry_class: str = Field(min_length=1)  # 行业分类
    time_coverage: TimeCoverage  # 时间覆盖范围
    region_coverage: str = Field(min_length=1)  # 区域覆盖范围
    update_frequency: UpdateFrequency  # 更新频率
    provider: Provider  # 数源单位名称及代码
    share: ShareAttribute  # 共享类型及条件
    open: OpenAttribute  # 开放类型及条件
    authorized_operation: AuthorizedOperation  # 授权运营状态及场景
    desensitized: bool  # 是否已脱敏
    grade: str | None = None  # dataset grade; None: the highest column grade
    kind: Literal["public", "social"] = "public"  # public data, or operator-owned (R2.6)
    privacy_unit: str | None = None  # the column whose value is one person / one unit
    max_rows_per_unit: int | None = Field(default=None, ge=1)


class DatasetMeta(_CatalogFields):
    """A validated META.yaml. After :func:`parse_meta`, ``grade`` is always set."""

    columns: list[ColumnMeta]

    @property
    def effective_grade(self) -> str:
        if self.grade is None:  # only for models built without parse_meta
            raise CatalogError("catalog entry has no grade", code="enclave.catalog_no_grade")
        return self.grade

    def column(self, name: str) -> ColumnMeta:
        for c in self.columns:
            if c.name == name:
                return c
        raise CatalogError(
            f"no column {name!r} in dataset {self.name!r}",
            code="enclave.column_unknown",
            kind="not_found",
            hint=f"columns are: {', '.join(c.name for c in self.columns)}",
        )

    def column_grade(self, column: ColumnMeta) -> str:
        return column.grade or self.effective_grade

    def columns_by_grade(self) -> dict[str, list[str]]:
        """Column names grouped by grade: one data key encrypts each group."""
        groups: dict[str, list[str]] = {}
        for c in self.columns:
            groups.setdefault(self.column_grade(c), []).append(c.name)
        return groups

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --- validation ----------------------------------------------------------------------------


def _path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _pydantic_problems(exc: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        msg = str(err["msg"])
        if err["type"] == "missing":
            msg = "required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling against docs/datasets.md)"
        problems.append(f"{_path(loc, prefix)}: {msg}")
    return problems


def _grade_problems(path: str, grade: str | None, grades: GradePolicy) -> list[str]:
    if grade is None:
        return []
    if grade not in grades.levels:
        return [f"{path}: unknown grade {grade!r}; use one of {', '.join(grades.levels)}"]
    if not grades.get(grade).authorized_operation:
        return [
            f"{path}: grade {grade!r} ({grades.get(grade).label}) is refused for authorized "
            "operation; such data may not be imported into the domain at all"
        ]
    return []


def _column_problems(i: int, c: ColumnMeta, grades: GradePolicy) -> list[str]:
    p = f"columns[{i}]"
    problems = _grade_problems(f"{p}.grade", c.grade, grades)
    if not _COLUMN_NAME.match(c.name):
        problems.append(
            f"{p}.name: {c.name!r} is not a plain column name (letters, digits, _; "
            "at most 64; put the human name in `label`)"
        )
    if c.bounds is not None:
        lo, hi = c.bounds
        if not c.numeric:
            problems.append(f"{p}.bounds: only numeric columns have bounds ({c.type} {c.name!r})")
        elif lo > hi:
            problems.append(f"{p}.bounds: lower {lo:g} is above upper {hi:g} for {c.name!r}")
        elif c.type == "int" and not (float(lo).is_integer() and float(hi).is_integer()):
            problems.append(f"{p}.bounds: int column {c.name!r} needs whole-number bounds")
    elif c.numeric and c.role != "identifier":
        problems.append(
            f"{p}.bounds: required for numeric column {c.name!r} (give the public "
            "[lower, upper] every value lies in; never derive it from the data)"
        )
    if c.domain is not None:
        if c.type not in _DOMAIN_TYPES:
            problems.append(f"{p}.domain: only string, int and bool columns have a domain")
        elif not c.domain:
            problems.append(f"{p}.domain: empty; list the public values or leave it out")
        else:
            want: type = {"int": int, "string": str, "bool": bool}[c.type]
            wrong = [v for v in c.domain if type(v) is not want]
            if wrong:
                problems.append(
                    f"{p}.domain: {len(wrong)} value(s) are not of type {c.type} for {c.name!r}"
                )
            if len({(type(v), v) for v in c.domain}) != len(c.domain):
                problems.append(f"{p}.domain: values repeat for {c.name!r}")
    return problems


def _dataset_problems(fields: _CatalogFields, grades: GradePolicy) -> list[str]:
    problems = _grade_problems("grade", fields.grade, grades)
    if fields.open.type == "not_open" and not fields.desensitized:
        problems.append(
            "open: data not open to the public (不予开放) and not desensitized is excluded "
            "from authorized operation (R2.5); desensitize it first and set "
            "`desensitized: true`, or do not import it"
        )
    for attr in ("share", "open"):
        a = getattr(fields, attr)
        if a.type == "conditional" and not a.conditions.strip():
            problems.append(f"{attr}.conditions: required when {attr}.type is conditional")
    if (fields.privacy_unit is None) != (fields.max_rows_per_unit is None):
        missing = "max_rows_per_unit" if fields.max_rows_per_unit is None else "privacy_unit"
        problems.append(f"{missing}: required together with privacy_unit and max_rows_per_unit")
    end = fields.time_coverage.end
    if end is not None and end < fields.time_coverage.start:
        problems.append("time_coverage.end: before time_coverage.start")
    return problems


def _cross_problems(
    fields: _CatalogFields, columns: list[ColumnMeta], grades: GradePolicy
) -> list[str]:
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, c in enumerate(columns):
        if c.name in seen:
            problems.append(f"columns[{i}].name: {c.name!r} repeats columns[{seen[c.name]}]")
        seen.setdefault(c.name, i)
    if fields.privacy_unit is not None and fields.privacy_unit not in seen:
        problems.append(f"privacy_unit: {fields.privacy_unit!r} is not one of the columns")
    if fields.grade is not None and fields.grade in grades.levels:
        for i, c in enumerate(columns):
            if c.grade in grades.levels and grades.rank(c.grade) > grades.rank(fields.grade):
                problems.append(
                    f"grade: {fields.grade} is below columns[{i}] {c.name!r} ({c.grade}); the "
                    "dataset grade is that of its most sensitive column"
                )
    return problems


def _is_refusal(problem: str) -> bool:
    return "refused for authorized operation" in problem or "excluded from authorized" in problem


def _fail(problems: list[str], source: str) -> CatalogError:
    """One error listing every problem; a policy refusal among them makes it ``forbidden``."""
    listing = "\n".join(f"  - {p}" for p in problems)
    refused = any(_is_refusal(p) for p in problems)
    return CatalogError(
        f"{source} has {len(problems)} problem(s):\n{listing}",
        code="enclave.catalog_refused" if refused else "enclave.catalog_invalid",
        kind="forbidden" if refused else "invalid",
        hint="fix each named field; docs/datasets.md shows a complete, commented META.yaml",
        details={"errors": problems},
    )


def parse_meta(
    raw: Any, grades: GradePolicy | None = None, *, source: str = "META.yaml"
) -> DatasetMeta:
    """Validate a parsed META document; every problem is named in one CatalogError."""
    grades = grades or load_grades()
    if not isinstance(raw, Mapping):
        raise _fail(["(top level): must be a mapping of catalog fields"], source)
    problems: list[str] = []
    fields: _CatalogFields | None = None
    try:
        fields = _CatalogFields.model_validate({k: v for k, v in raw.items() if k != "columns"})
    except ValidationError as exc:
        problems += _pydantic_problems(exc)
    if fields is not None:
        problems += _dataset_problems(fields, grades)

    raw_columns = raw.get("columns")
    columns: list[ColumnMeta] = []
    if not isinstance(raw_columns, list) or not raw_columns:
        problems.append("columns: required, a non-empty list of data items")
    else:
        for i, rc in enumerate(raw_columns):
            try:
                col = ColumnMeta.model_validate(rc)
            except ValidationError as exc:
                problems += _pydantic_problems(exc, f"columns[{i}]")
                continue
            columns.append(col)
            problems += _column_problems(i, col, grades)
    if fields is not None and raw_columns and len(columns) == len(raw_columns):
        problems += _cross_problems(fields, columns, grades)
    if problems or fields is None:
        raise _fail(problems, source)

    if fields.grade is None and any(c.grade is None for c in columns):
        raise _fail(["grade: required when a column has no grade of its own"], source)
    grade = fields.grade or grades.highest(str(c.grade) for c in columns)
    data = fields.model_dump()
    data["grade"] = grade
    return DatasetMeta.model_validate({**data, "columns": [c.model_dump() for c in columns]})


def load_meta(path: Path, grades: GradePolicy | None = None) -> DatasetMeta:
    """Read and validate a META.yaml file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CatalogError(
            f"catalog file {path} not found",
            code="enclave.catalog_missing",
            kind="not_found",
            hint="give the path of the dataset's META.yaml",
        ) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CatalogError(
            f"{path} is not valid YAML{where}",
            code="enclave.catalog_invalid",
            hint="fix the YAML syntax; docs/datasets.md shows a complete example",
        ) from exc
    return parse_meta(raw, grades, source=str(path))


# --- rendering -------------------------------------------------------------------------------

_LABELS: tuple[tuple[str, str], ...] = (
    ("name", "数据名称 name"),
    ("summary", "数据摘要 summary"),
    ("format", "数据格式 format"),
    ("industry_class", "行业分类 industry class"),
    ("time_coverage", "时间覆盖 time coverage"),
    ("region_coverage", "区域覆盖 region coverage"),
    ("update_frequency", "更新频率 update frequency"),
    ("provider", "数源单位 provider"),
    ("share", "共享属性 share"),
    ("open", "开放属性 open"),
    ("authorized_operation", "授权运营 authorized operation"),
    ("desensitized", "已脱敏 desensitized"),
    ("grade", "分级 grade"),
    ("kind", "来源 kind"),
    ("privacy_unit", "隐私单元 privacy unit"),
)


def _with_conditions(kind: str, conditions: str) -> str:
    return f"{kind} ({conditions})" if conditions else kind


def catalog_entry(meta: DatasetMeta) -> list[tuple[str, str]]:
    """The catalog fields as (label, text) pairs in the regulation's order; never data."""
    end = meta.time_coverage.end
    values: dict[str, str] = {
        "name": meta.name,
        "summary": meta.summary,
        "format": meta.format,
        "industry_class": meta.industry_class,
        "time_coverage": f"{meta.time_coverage.start} – {end if end else 'ongoing'}",
        "region_coverage": meta.region_coverage,
        "update_frequency": meta.update_frequency,
        "provider": f"{meta.provider.name} [{meta.provider.code}]",
        "share": _with_conditions(meta.share.type, meta.share.conditions),
        "open": _with_conditions(meta.open.type, meta.open.conditions),
        "authorized_operation": meta.authorized_operation.status
        + (
            f": {', '.join(meta.authorized_operation.scenarios)}"
            if meta.authorized_operation.scenarios
            else ""
        ),
        "desensitized": "yes" if meta.desensitized else "no",
        "grade": str(meta.grade),
        "kind": meta.kind,
        "privacy_unit": (
            f"{meta.privacy_unit} (at most {meta.max_rows_per_unit} rows per unit)"
            if meta.privacy_unit
            else "none declared"
        ),
    }
    return [(label, values[key]) for key, label in _LABELS]


def column_entry(meta: DatasetMeta, c: ColumnMeta) -> dict[str, str]:
    """One data item as text: name, format, grade, role and its *public* range."""
    if c.bounds is not None:
        public = f"[{c.bounds[0]:g}, {c.bounds[1]:g}]"
    elif c.domain is not None:
        shown = ", ".join(str(v) for v in c.domain[:12])
        public = "{" + shown + (", …" if len(c.domain) > 12 else "") + "}"
    else:
        public = ""
    return {
        "column": c.name,
        "label": c.label,
        "type": c.type,
        "grade": meta.column_grade(c),
        "role": c.role,
        "public range": public,
    }


def render_catalog(meta: DatasetMeta) -> str:
    """A plain-text catalog entry with its data items; shows metadata only, never rows."""
    width = max(len(label) for label, _ in _LABELS)
    lines = [f"{label.ljust(width)}  {text}" for label, text in catalog_entry(meta)]
    lines.append("数据项 data items:")
    for c in meta.columns:
        e = column_entry(meta, c)
        lines.append(
            f"  {e['column']:<20} {e['type']:<9} {e['grade']:<5} {e['role']:<16} "
            f"{e['label']} {e['public range']}".rstrip()
        )
    return "\n".join(lines)
