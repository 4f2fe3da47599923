"""Effective disclosure-control thresholds of a scenario: its own, or its grades' defaults.

A scenario's ``disclosure`` block may leave thresholds out; they then come from the grade
policy (``policies/defaults/grades.yaml``) of the most sensitive dataset in the scenario.
A threshold the scenario does set may be stricter than the grade's, never looser: a larger
minimum cell, a dominance rule with more contributors and a smaller share. The egress gate
reads :func:`effective_disclosure`; granting a scenario runs :func:`disclosure_problems`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from policies.grades import GradePolicy
from policies.scenario import Disclosure

__all__ = ["EffectiveDisclosure", "disclosure_problems", "effective_disclosure"]


@dataclass(frozen=True)
class EffectiveDisclosure:
    """The thresholds the egress gate applies to one scenario's outputs."""

    grade: str  # the grade the defaults came from (highest of the scenario's datasets)
    min_cell_size: int
    dominance_n: int
    dominance_k_percent: float
    p_percent: float | None  # None: the p% rule is not applied
    rounding_base: int | None  # None: counts are not rounded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def effective_disclosure(
    disclosure: Disclosure, dataset_grades: Iterable[str], grades: GradePolicy
) -> EffectiveDisclosure:
    """Scenario thresholds where set, else the defaults of the highest dataset grade."""
    grade_name = grades.highest(dataset_grades)
    g = grades.get(grade_name)
    return EffectiveDisclosure(
        grade=grade_name,
        min_cell_size=max(disclosure.min_cell_size or 0, g.min_cell_size),
        dominance_n=max(disclosure.dominance_n or 0, g.dominance_n),
        dominance_k_percent=min(
            disclosure.dominance_k_percent or g.dominance_k_percent, g.dominance_k_percent
        ),
        p_percent=disclosure.p_percent,
        rounding_base=disclosure.rounding_base,
    )


def disclosure_problems(
    disclosure: Disclosure, dataset_grades: Iterable[str], grades: GradePolicy
) -> list[tuple[str, str]]:
    """(field, message) for each threshold looser than the highest dataset grade allows."""
    grade_name = grades.highest(dataset_grades)
    g = grades.get(grade_name)
    out: list[tuple[str, str]] = []
    if disclosure.min_cell_size is not None and disclosure.min_cell_size < g.min_cell_size:
        out.append(
            (
                "disclosure.min_cell_size",
                f"{disclosure.min_cell_size} is below {g.min_cell_size}, the minimum of grade "
                f"{grade_name}; a scenario may only be stricter than its grades",
            )
        )
    if disclosure.dominance_n is not None and disclosure.dominance_n < g.dominance_n:
        out.append(
            (
                "disclosure.dominance_n",
                f"{disclosure.dominance_n} is below {g.dominance_n}, the n of grade {grade_name}",
            )
        )
    k = disclosure.dominance_k_percent
    if k is not None and k > g.dominance_k_percent:
        out.append(
            (
                "disclosure.dominance_k_percent",
                f"{k:g} is above {g.dominance_k_percent:g}, the k of grade {grade_name}",
            )
        )
    return out
