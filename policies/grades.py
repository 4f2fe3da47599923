"""Data grades (数据分级) as policy data: the levels and what each one requires (R3.1, R3.2).

The defaults live in ``policies/defaults/grades.yaml`` (L1 … L4, and ``core``, which is
recognised only to be refused). Everything that treats grades differently — the catalog
(refuses ``core``), the egress checks (minimum cell size, dominance rule), the review
workflow (how many reviewers), sample views (desensitization) — reads them from here, so a
domain changes its rules by editing one file, not code.

Usage::

    grades = load_grades()
    grades.levels                         # ("L1", "L2", "L3", "L4", "core")
    grades.get("L4").reviewers_required   # 2
    grades.highest(["L2", "L4", "L3"])    # "L4"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policies.errors import PolicyError

__all__ = ["DEFAULT_GRADES_PATH", "Grade", "GradePolicy", "load_grades", "parse_grades"]

DEFAULT_GRADES_PATH = Path(__file__).parent / "defaults" / "grades.yaml"

_INT_FIELDS = ("rank", "min_cell_size", "reviewers_required", "dominance_n")
_BOOL_FIELDS = ("authorized_operation", "sample_desensitization")
_STR_FIELDS = ("name", "label", "description")


@dataclass(frozen=True)
class Grade:
    """One grade and the controls it requires."""

    name: str
    rank: int  # higher = more sensitive
    label: str
    description: str
    authorized_operation: bool  # False: the grade may not enter authorized operation
    min_cell_size: int  # smallest count a released cell may rest on
    sample_desensitization: bool  # sample / preview views must be desensitized
    reviewers_required: int  # distinct reviewers who must approve egress
    dominance_n: int  # (n, k) dominance rule: n largest contributors …
    dominance_k_percent: float  # … may make up at most k % of a cell total


@dataclass(frozen=True)
class GradePolicy:
    """The grades of one domain, ordered from least to most sensitive."""

    grades: tuple[Grade, ...]
    source: str = "defaults"

    @property
    def levels(self) -> tuple[str, ...]:
        """Grade names from least to most sensitive."""
        return tuple(g.name for g in self.grades)

    @property
    def operable_levels(self) -> tuple[str, ...]:
        """Grades that may enter authorized operation (everything but ``core`` by default)."""
        return tuple(g.name for g in self.grades if g.authorized_operation)

    def get(self, name: str) -> Grade:
        for g in self.grades:
            if g.name == name:
                return g
        raise PolicyError(
            f"unknown grade {name!r}",
            code="policy.grade_unknown",
            hint=f"use one of {', '.join(self.levels)}",
        )

    def rank(self, name: str) -> int:
        return self.get(name).rank

    def highest(self, names: Iterable[str]) -> str:
        """The most sensitive of ``names`` (a dataset's grade is that of its highest column)."""
        listed = list(names)
        if not listed:
            raise PolicyError(
                "no grades given",
                code="policy.grade_unknown",
                hint="a dataset needs at least one graded column",
            )
        return max(listed, key=self.rank)


def _fail(source: str, problems: list[str]) -> PolicyError:
    return PolicyError(
        f"grades file {source} is invalid: " + "; ".join(problems),
        code="policy.grades_invalid",
        hint="fix the named entries; policies/defaults/grades.yaml shows every field",
        details={"errors": problems},
    )


def _parse_grade(i: int, raw: Any, problems: list[str]) -> Grade | None:
    if not isinstance(raw, Mapping):
        problems.append(f"grades[{i}]: must be a mapping")
        return None
    before = len(problems)
    expected = set(_INT_FIELDS) | set(_BOOL_FIELDS) | set(_STR_FIELDS) | {"dominance_k_percent"}
    for extra in sorted(set(raw) - expected):
        problems.append(f"grades[{i}].{extra}: unknown field")
    for f in sorted(expected - set(raw)):
        problems.append(f"grades[{i}].{f}: required")
    for f in _INT_FIELDS:
        v = raw.get(f)
        if f in raw and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            problems.append(f"grades[{i}].{f}: must be a whole number >= 1")
    for f in _BOOL_FIELDS:
        if f in raw and not isinstance(raw[f], bool):
            problems.append(f"grades[{i}].{f}: must be true or false")
    for f in _STR_FIELDS:
        if f in raw and (not isinstance(raw[f], str) or not raw[f]):
            problems.append(f"grades[{i}].{f}: must be a non-empty string")
    k = raw.get("dominance_k_percent")
    if "dominance_k_percent" in raw and (
        isinstance(k, bool) or not isinstance(k, int | float) or not 0 < k <= 100
    ):
        problems.append(f"grades[{i}].dominance_k_percent: must be a number in (0, 100]")
    if len(problems) > before:
        return None
    return Grade(
        name=raw["name"],
        rank=raw["rank"],
        label=raw["label"],
        description=raw["description"],
        authorized_operation=raw["authorized_operation"],
        min_cell_size=raw["min_cell_size"],
        sample_desensitization=raw["sample_desensitization"],
        reviewers_required=raw["reviewers_required"],
        dominance_n=raw["dominance_n"],
        dominance_k_percent=float(raw["dominance_k_percent"]),
    )


def parse_grades(data: Any, source: str = "<memory>") -> GradePolicy:
    """Validate a parsed grades document; every problem is named, all at once."""
    if not isinstance(data, Mapping) or not isinstance(data.get("grades"), list):
        raise _fail(source, ["grades: a list of grades is required at the top level"])
    problems: list[str] = []
    parsed = [_parse_grade(i, raw, problems) for i, raw in enumerate(data["grades"])]
    grades = [g for g in parsed if g is not None]
    seen_names: set[str] = set()
    seen_ranks: set[int] = set()
    for g in grades:
        if g.name in seen_names:
            problems.append(f"grades: name {g.name!r} appears twice")
        if g.rank in seen_ranks:
            problems.append(f"grades: rank {g.rank} appears twice ({g.name!r})")
        seen_names.add(g.name)
        seen_ranks.add(g.rank)
    if not problems and not any(g.authorized_operation for g in grades):
        problems.append("grades: no grade allows authorized operation")
    if problems:
        raise _fail(source, problems)
    return GradePolicy(tuple(sorted(grades, key=lambda g: g.rank)), source)


def load_grades(path: Path | None = None) -> GradePolicy:
    """The grades of ``path``, or the shipped defaults when ``path`` is None."""
    p = path or DEFAULT_GRADES_PATH
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(
            f"grades file {p} not found",
            code="policy.grades_missing",
            hint="give the path of an existing grades YAML, or omit it to use the defaults",
        ) from exc
    except yaml.YAMLError as exc:
        raise _fail(str(p), [f"not valid YAML ({exc})"]) from exc
    return parse_grades(data, "defaults" if path is None else str(p))
