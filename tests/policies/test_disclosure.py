"""Disclosure thresholds: scenario values where set, the highest grade's defaults otherwise,
never looser than the grade."""

from __future__ import annotations

import pytest

from policies.disclosure import disclosure_problems, effective_disclosure
from policies.grades import load_grades
from policies.roles import may, parse_roles
from policies.scenario import Disclosure

GRADES = load_grades()


def test_unset_thresholds_come_from_the_highest_grade() -> None:
    eff = effective_disclosure(Disclosure(), ["L2", "L4", "L3"], GRADES)
    l4 = GRADES.get("L4")
    assert eff.grade == "L4"
    assert (eff.min_cell_size, eff.dominance_n, eff.dominance_k_percent) == (
        l4.min_cell_size,
        l4.dominance_n,
        l4.dominance_k_percent,
    )
    assert eff.p_percent is None and eff.rounding_base is None


def test_a_scenario_may_be_stricter_and_its_values_are_used() -> None:
    strict = Disclosure(min_cell_size=25, dominance_k_percent=50, p_percent=10, rounding_base=5)
    assert disclosure_problems(strict, ["L3"], GRADES) == []
    eff = effective_disclosure(strict, ["L3"], GRADES)
    assert (eff.min_cell_size, eff.dominance_k_percent, eff.p_percent, eff.rounding_base) == (
        25,
        50,
        10,
        5,
    )


def test_looser_thresholds_are_named_and_never_applied() -> None:
    loose = Disclosure(min_cell_size=2, dominance_n=1, dominance_k_percent=99)
    problems = dict(disclosure_problems(loose, ["L3"], GRADES))
    assert set(problems) == {
        "disclosure.min_cell_size",
        "disclosure.dominance_n",
        "disclosure.dominance_k_percent",
    }
    eff = effective_disclosure(loose, ["L3"], GRADES)
    assert eff.min_cell_size == GRADES.get("L3").min_cell_size
    assert eff.dominance_k_percent == GRADES.get("L3").dominance_k_percent


def test_roles_table() -> None:
    assert may(["operator"], "job.submit")
    assert not may(["authority"], "job.submit")
    assert may(["provider", "auditor"], "request.decide")
    assert not may(["operator"], "scenario.grant")
    assert not may(["authority"], "no.such.action")
    assert parse_roles(["Operator", "operator", "auditor"]) == ("operator", "auditor")
    with pytest.raises(ValueError, match="unknown role"):
        parse_roles(["admin"])
    with pytest.raises(ValueError, match="at least one"):
        parse_roles([])
