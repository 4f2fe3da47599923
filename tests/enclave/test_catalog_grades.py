"""The grade policy (policies.grades) that the catalog and the egress checks read."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.errors import PolicyError
from policies.grades import load_grades, parse_grades


def test_default_grades_order_and_requirements() -> None:
    g = load_grades()
    assert g.levels == ("L1", "L2", "L3", "L4", "core")
    assert g.operable_levels == ("L1", "L2", "L3", "L4")
    assert g.get("L4").reviewers_required == 2
    assert g.get("L3").reviewers_required == 1
    assert g.get("core").authorized_operation is False
    assert g.get("L1").sample_desensitization is False
    assert g.get("L2").sample_desensitization is True
    assert g.rank("L1") < g.rank("L4") < g.rank("core")
    assert all(g.get(n).min_cell_size >= 3 for n in g.levels)


def test_highest_picks_the_most_sensitive() -> None:
    g = load_grades()
    assert g.highest(["L2", "L4", "L1"]) == "L4"
    with pytest.raises(PolicyError):
        g.highest([])


def test_unknown_grade_is_a_clear_error() -> None:
    with pytest.raises(PolicyError) as info:
        load_grades().get("L7")
    assert info.value.code == "policy.grade_unknown"
    assert "L1, L2, L3, L4, core" in info.value.hint


def test_a_custom_grades_file_is_validated_field_by_field(tmp_path: Path) -> None:
    p = tmp_path / "grades.yaml"
    p.write_text(
        "grades:\n"
        "  - {name: A, rank: 1, label: a, description: d, authorized_operation: true,\n"
        "     min_cell_size: 0, sample_desensitization: maybe, reviewers_required: 1,\n"
        "     dominance_n: 1, dominance_k_percent: 150}\n"
        "  - {name: A, rank: 1, label: b, description: d, authorized_operation: true,\n"
        "     min_cell_size: 5, sample_desensitization: true, reviewers_required: 1,\n"
        "     dominance_n: 1, dominance_k_percent: 50, colour: red}\n",
        encoding="utf-8",
    )
    with pytest.raises(PolicyError) as info:
        load_grades(p)
    errors = info.value.details["errors"]
    assert "grades[0].min_cell_size: must be a whole number >= 1" in errors
    assert "grades[0].sample_desensitization: must be true or false" in errors
    assert "grades[0].dominance_k_percent: must be a number in (0, 100]" in errors
    assert "grades[1].colour: unknown field" in errors


def test_duplicate_names_and_ranks_are_refused() -> None:
    one = {
        "name": "A",
        "rank": 1,
        "label": "a",
        "description": "d",
        "authorized_operation": True,
        "min_cell_size": 5,
        "sample_desensitization": True,
        "reviewers_required": 1,
        "dominance_n": 1,
        "dominance_k_percent": 50,
    }
    with pytest.raises(PolicyError, match="appears twice"):
        parse_grades({"grades": [one, dict(one)]})
    assert parse_grades({"grades": [one]}).levels == ("A",)


def test_missing_file_and_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_grades(tmp_path / "none.yaml")
    assert info.value.code == "policy.grades_missing"
    with pytest.raises(PolicyError, match="a list of grades is required"):
        parse_grades({"levels": []})
