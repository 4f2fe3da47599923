"""Scenario authorizations (一场景一授权, R2): the file format, its checks, its hash.

An authority grants one scenario per use: one operator organisation, one stated purpose,
the exact datasets and columns it may touch, the job kinds and output modes it may use, a
privacy budget, disclosure thresholds, and a term. Nothing outside the file is authorized
(R2.1, R2.2). The file is YAML; :class:`Scenario` is its schema, and
``policies/scenario.schema.json`` is generated from it (``python -m policies.scenario``) so
editors and other tools can check a file before it reaches the domain. Commented examples
live in ``policies/examples/``.

Checks that span fields (the term, the budget, fees for the use class) run in model
validators and still name the field they are about, so an author sees every problem with
its path at once (:func:`parse_scenario`).

The **policy hash** is the SHA-256 of the scenario's canonical JSON (sorted keys, no
whitespace, UTF-8). Jobs and key release bind to it: a job authorized under one version of
a scenario cannot run under another.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from policies.errors import ScenarioFileError
from policies.terms import end_instant, last_day_label, start_instant, years_after

__all__ = [
    "MAX_TERM_YEARS",
    "MAX_WHOLE_CITY_TERM_YEARS",
    "SCHEMA_PATH",
    "DatasetScope",
    "Disclosure",
    "FieldProblems",
    "JobKind",
    "ModelPolicy",
    "OutputMode",
    "PrivacyBudget",
    "SampleSettings",
    "Scenario",
    "UseClass",
    "Validity",
    "canonical_json",
    "json_schema",
    "load_scenario_file",
    "parse_scenario",
    "policy_hash",
]

MAX_TERM_YEARS = 3  # 000 §9, 004 §3(9): "原则上不超过3年"
MAX_WHOLE_CITY_TERM_YEARS = 5  # 001 §3(3): whole-city authorization, 5 years
SCHEMA_PATH = Path(__file__).with_name("scenario.schema.json")

JobKind = Literal["sql", "python"]
OutputMode = Literal["dp_aggregate", "sdc_aggregate", "model"]
UseClass = Literal["public_welfare", "industry"]

ScenarioId = Annotated[
    str,
    Field(
        pattern=r"^S-[0-9]{4}-[0-9]{3,6}$",
        description="Scenario id: S-<year>-<number>, e.g. S-2026-014.",
    ),
]
DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,127}$")]
ColumnName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
OrgCode = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^\S+$")]


class FieldProblems(ValueError):
    """Raised by cross-field validators so each problem keeps the path of its field."""

    def __init__(self, problems: list[tuple[tuple[str, ...], str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(loc)}: {msg}" for loc, msg in problems))
        self.problems = problems


class _Strict(BaseModel):
    # Unknown keys are errors: a misspelt `colums:` must not silently authorize nothing.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetScope(_Strict):
    """One dataset of the scenario and the exact columns it may read (minimal range, R2.1)."""

    columns: list[ColumnName] = Field(
        min_length=1, description="The columns the scenario's jobs may read; nothing else."
    )

    @model_validator(mode="after")
    def _unique(self) -> DatasetScope:
        dup = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dup:
            raise FieldProblems([(("columns",), f"listed more than once: {', '.join(dup)}")])
        return self


class PrivacyBudget(_Strict):
    """The scenario's total differential-privacy budget and the cap for any one job."""

    epsilon: float = Field(gt=0, le=100, description="Total epsilon over the scenario's term.")
    delta: float = Field(ge=0, lt=1e-3, description="Total delta; 0 for pure DP.")
    per_job_epsilon: float = Field(gt=0, description="Largest epsilon one job may spend.")
    per_job_delta: float = Field(default=0.0, ge=0, description="Largest delta one job may spend.")

    @model_validator(mode="after")
    def _caps_within_total(self) -> PrivacyBudget:
        problems: list[tuple[tuple[str, ...], str]] = []
        if self.per_job_epsilon > self.epsilon:
            problems.append(
                (
                    ("per_job_epsilon",),
                    f"{self.per_job_epsilon} is more than the total epsilon {self.epsilon}",
                )
            )
        if self.per_job_delta > self.delta:
            problems.append(
                (
                    ("per_job_delta",),
                    f"{self.per_job_delta} is more than the total delta {self.delta}",
                )
            )
        if problems:
            raise FieldProblems(problems)
        return self


class Disclosure(_Strict):
    """Statistical disclosure control thresholds; unset ones come from the grade policy.

    A scenario may make them stricter than its datasets' grades require, never looser
    (checked when the domain grants it, against ``policies/defaults/grades.yaml``).
    """

    min_cell_size: int | None = Field(
        default=None, ge=1, description="Smallest count a released cell may have."
    )
    dominance_n: int | None = Field(
        default=None, ge=1, description="(n, k) dominance: the n largest contributors..."
    )
    dominance_k_percent: float | None = Field(
        default=None, gt=0, le=100, description="...may not hold more than k% of a cell's total."
    )
    p_percent: float | None = Field(
        default=None, gt=0, le=100, description="p% rule: no contributor estimable within p%."
    )
    rounding_base: int | None = Field(
        default=None, ge=1, description="Released counts are rounded to a multiple of this."
    )


class ModelPolicy(_Strict):
    """How models may be trained and what membership-inference risk a released one may carry."""

    dp_training: bool = Field(
        default=True,
        description="Models must be trained with differential privacy: diffprivlib (or "
        "OpenDP PCA) estimators; the platform reads their epsilon from the model, refuses "
        "more than privacy_budget.per_job_epsilon and charges it to the scenario's budget.",
    )
    membership_inference_max_advantage: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Largest membership-inference advantage (TPR - FPR) a released model may show.",
    )


class SampleSettings(_Strict):
    """The desensitized sample view for model training and validation (R1.5, 004 §4(3))."""

    rate: float = Field(default=0.1, gt=0, le=1, description="Share of privacy units sampled.")
    age_band_years: int = Field(default=10, ge=1, le=50, description="Ages become bands this wide.")
    region_prefix_length: int = Field(
        default=4, ge=0, le=12, description="Region codes keep this many leading characters."
    )
    date_precision: Literal["year", "quarter", "month"] = Field(
        default="month", description="Dates among quasi-identifiers are truncated to this."
    )


class Validity(_Strict):
    """The term. A date is read as a whole day in CST (UTC+08:00); the end day is included."""

    start: date | datetime = Field(description="First day (or instant) of the term.")
    end: date | datetime = Field(description="Last day of the term (or exclusive end instant).")
    exception_reason: str | None = Field(
        default=None,
        min_length=10,
        description="The authority's recorded reason for a term longer than the normal limit.",
    )

    @property
    def starts_at(self) -> datetime:
        return start_instant(self.start)

    @property
    def ends_at(self) -> datetime:
        """Exclusive end instant."""
        return end_instant(self.end)

    @property
    def last_day(self) -> str:
        return last_day_label(self.ends_at)

    @model_validator(mode="after")
    def _ordered(self) -> Validity:
        problems: list[tuple[tuple[str, ...], str]] = []
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, datetime) and value.utcoffset() is None:
                problems.append(((name,), "a datetime needs a timezone offset such as +08:00"))
        if problems:
            raise FieldProblems(problems)
        if self.ends_at <= self.starts_at:
            raise FieldProblems([(("end",), f"{self.end} is not after the start {self.start}")])
        return self


class Scenario(_Strict):
    """One scenario authorization: who, why, exactly which data, how, how much, how long."""

    id: ScenarioId
    title: str = Field(default="", max_length=200, description="A short name for lists.")
    operator_org: OrgCode = Field(description="Code of the operator organisation authorized.")
    purpose: str = Field(
        min_length=10, max_length=4000, description="The agreed purpose, in words (R2.2)."
    )
    use_class: UseClass = Field(
        description="public_welfare is free; industry use is metered and may carry a fee (R8)."
    )
    fee_per_job_cny: Decimal | None = Field(
        default=None, ge=0, description="Service fee per completed job; industry use only."
    )
    whole_city: bool = Field(
        default=False, description="Whole-city authorization: the term may run to 5 years."
    )
    datasets: dict[DatasetName, DatasetScope] = Field(
        min_length=1, description="Dataset name -> the columns the scenario may read."
    )
    job_kinds: list[JobKind] = Field(min_length=1, description="Job kinds allowed.")
    output_modes: list[OutputMode] = Field(min_length=1, description="Output modes allowed.")
    privacy_budget: PrivacyBudget
    disclosure: Disclosure = Field(default_factory=Disclosure)
    auto_release_clean_dp: bool = Field(
        default=False,
        description="DP aggregates with no findings may release without a reviewer.",
    )
    models: ModelPolicy = Field(default_factory=ModelPolicy)
    sample: SampleSettings = Field(default_factory=SampleSettings)
    validity: Validity

    @model_validator(mode="after")
    def _cross_field(self) -> Scenario:
        problems = _scenario_level_problems(
            job_kinds=list(self.job_kinds),
            output_modes=list(self.output_modes),
            use_class=self.use_class,
            fee=self.fee_per_job_cny,
            whole_city=self.whole_city,
            validity=self.validity,
        )
        if problems:
            raise FieldProblems(problems)
        return self

    # --- what the rest of the product reads -------------------------------------------
    def columns_of(self, dataset: str) -> frozenset[str]:
        scope = self.datasets.get(dataset)
        return frozenset(scope.columns) if scope else frozenset()

    def canonical_json(self) -> str:
        return canonical_json(self)

    @property
    def policy_hash(self) -> str:
        return policy_hash(self)


def _scenario_level_problems(
    *,
    job_kinds: list[str],
    output_modes: list[str],
    use_class: str | None,
    fee: Any,
    whole_city: bool,
    validity: Validity | None,
) -> list[tuple[tuple[str, ...], str]]:
    """Rules that relate top-level fields; also run on a file whose other fields failed."""
    problems: list[tuple[tuple[str, ...], str]] = []
    for name, values in (("job_kinds", job_kinds), ("output_modes", output_modes)):
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            problems.append(((name,), f"listed more than once: {', '.join(dup)}"))
    if use_class == "public_welfare" and fee:
        problems.append(
            (
                ("fee_per_job_cny",),
                "public-welfare use is free (R8); remove the fee or set use_class: industry",
            )
        )
    if validity is not None:
        years = MAX_WHOLE_CITY_TERM_YEARS if whole_city else MAX_TERM_YEARS
        limit = years_after(validity.starts_at, years)
        if validity.ends_at > limit and not validity.exception_reason:
            kind = "a whole-city authorization" if whole_city else "an authorization"
            problems.append(
                (
                    ("validity", "end"),
                    f"the term {validity.start} .. {validity.end} is longer than {years} years, "
                    f"the limit for {kind}; end it by {last_day_label(limit)} or record the "
                    "authority's reason in validity.exception_reason",
                )
            )
    return problems


def _salvage_scenario_level(data: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """When some fields failed, still check the top-level rules on the parts that parse.

    Pydantic skips a model's own validator once any field fails; without this an author
    would fix one round of errors only to meet the term limit in the next.
    """
    try:
        validity: Validity | None = Validity.model_validate(data.get("validity"))
    except ValidationError:
        validity = None

    def strings(name: str) -> list[str]:
        raw = data.get(name)
        return [v for v in raw if isinstance(v, str)] if isinstance(raw, list) else []

    whole_city = data.get("whole_city") is True
    return _scenario_level_problems(
        job_kinds=strings("job_kinds"),
        output_modes=strings("output_modes"),
        use_class=data.get("use_class") if isinstance(data.get("use_class"), str) else None,
        fee=data.get("fee_per_job_cny"),
        whole_city=whole_city,
        validity=validity,
    )


def canonical_json(scenario: Scenario) -> str:
    """Sorted keys, no whitespace, UTF-8 text: the same scenario always gives the same text."""
    return json.dumps(
        scenario.model_dump(mode="json"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def policy_hash(scenario: Scenario) -> str:
    """SHA-256 (hex) of the canonical JSON: what jobs and key release bind to."""
    return hashlib.sha256(canonical_json(scenario).encode()).hexdigest()


def _problems(exc: ValidationError) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        original = (err.get("ctx") or {}).get("error")
        if isinstance(original, FieldProblems):
            for sub, msg in original.problems:
                out.append({"field": ".".join(loc + sub), "message": msg})
            continue
        msg = str(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown field (misspelt?); see policies/scenario.schema.json"
        out.append({"field": ".".join(loc) or "(file)", "message": msg})
    return out


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """Validate a loaded YAML/JSON document; every problem is named with its field path."""
    if not isinstance(data, dict):
        raise ScenarioFileError(
            f"{source} is not a mapping of fields",
            hint="start from one of the files in policies/examples/",
        )
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
        seen = {p["field"] for p in problems}
        for loc, msg in _salvage_scenario_level(data):
            if ".".join(loc) not in seen:
                problems.append({"field": ".".join(loc), "message": msg})
        listed = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise ScenarioFileError(
            f"{source} is invalid ({len(problems)} problem{'s' * (len(problems) != 1)}): {listed}",
            hint="fix the fields named above; policies/examples/ has commented examples",
            details={"errors": problems},
        ) from None


def load_scenario_file(path: Path) -> Scenario:
    """Read and validate a scenario YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioFileError(
            f"cannot read scenario file {path}: {exc.strerror}",
            hint="check the path",
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioFileError(
            f"{path.name} is not valid YAML: {exc}",
            hint="check indentation and quoting near the line named above",
        ) from exc
    return parse_scenario(data, source=path.name)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file (what ``scenario.schema.json`` must equal)."""
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://shuyu.example/schemas/scenario.schema.json"
    return schema


def render_json_schema() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - regenerates the checked-in schema
    SCHEMA_PATH.write_text(render_json_schema(), encoding="utf-8")
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
