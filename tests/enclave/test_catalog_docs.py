"""docs/datasets.md stays honest: its META.yaml example is valid and its rules are real."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from enclave.catalog import parse_meta
from policies.grades import load_grades

DOC = Path(__file__).parents[2] / "docs" / "datasets.md"


def test_the_documented_meta_yaml_is_valid() -> None:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block is not None
    meta = parse_meta(yaml.safe_load(block.group(1)))
    assert [c.name for c in meta.columns] == ["person_id", "age", "district", "income"]
    assert meta.grade == "L4" and meta.privacy_unit == "person_id"


def test_the_documented_grade_table_matches_the_defaults() -> None:
    text = DOC.read_text(encoding="utf-8")
    grades = load_grades()
    for name in ("L1", "L2", "L3", "L4"):
        g = grades.get(name)
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        assert cells[3] == str(g.min_cell_size)
        assert cells[5] == str(g.reviewers_required)
        assert cells[6] == f"({g.dominance_n}, {g.dominance_k_percent:g})"
