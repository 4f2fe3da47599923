"""docs/policies.md stays honest: every reason code, the rules table, links, the example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from policies.desensitize import COLUMN_ROLES, load_desensitize_rules
from policies.errors import ScenarioFileError
from policies.scenario import parse_scenario
from tests.policies.factories import scenario_dict

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "policies.md").read_text(encoding="utf-8")
CODE = re.compile(r'"((?:identity|personnel|scenario|scope|purpose|approval)\.[a-z_]+)"')


def test_every_reason_code_the_decision_gives_is_documented() -> None:
    codes = set()
    for f in ("decision.py", "personnel.py"):
        codes |= set(CODE.findall((ROOT / "policies" / f).read_text()))
    assert len(codes) >= 20
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", DOC, re.M))
    assert codes == documented


def test_the_desensitization_table_matches_the_rules_file() -> None:
    rules = load_desensitize_rules()
    raw = yaml.safe_load((ROOT / "policies" / "defaults" / "desensitize.yaml").read_text())
    for grade in raw["grades"]:
        row = next(line for line in DOC.splitlines() if line.startswith(f"| {grade} |"))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert cells == [rules.action(grade, role) for role in COLUMN_ROLES]


def test_linked_examples_exist() -> None:
    links = re.findall(r"\]\((\.\./policies/examples/[^)]+)\)", DOC)
    assert len(links) == 3
    for link in links:
        assert (ROOT / "docs" / link).resolve().is_file()


def test_the_documented_error_is_the_real_one() -> None:
    block = DOC.split("$ shuyu scenario grant s.yaml --as chen\n", 1)[1].split("```", 1)[0]
    documented = " ".join(block.split()).removeprefix("error policy.scenario_invalid: ")
    data = scenario_dict(job_kinds=["sql", "rust"])
    data["validity"] = {"start": "2026-01-01", "end": "2031-01-01"}
    with pytest.raises(ScenarioFileError) as info:
        parse_scenario(data, "s.yaml")
    assert info.value.message == documented
