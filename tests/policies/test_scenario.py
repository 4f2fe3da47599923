"""Scenario files: examples validate, errors are named field by field, the hash is stable."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import jsonschema
import pytest
import yaml

from policies.errors import ScenarioFileError
from policies.scenario import (
    SCHEMA_PATH,
    json_schema,
    load_scenario_file,
    parse_scenario,
    render_json_schema,
)
from tests.policies.factories import scenario_dict

EXAMPLES = sorted((Path(__file__).parents[2] / "policies" / "examples").glob("*.yaml"))


def _errors(data: object) -> dict[str, str]:
    with pytest.raises(ScenarioFileError) as info:
        parse_scenario(data, "s.yaml")
    assert info.value.code == "policy.scenario_invalid"
    return {e["field"]: e["message"] for e in info.value.details["errors"]}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_a_valid_scenario_and_matches_the_json_schema(path: Path) -> None:
    scenario = load_scenario_file(path)
    assert scenario.id.startswith("S-")
    # YAML reads dates as date objects; JSON tools see them as ISO strings.
    document = json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))
    jsonschema.validate(document, json_schema())


def test_there_are_examples_for_both_use_classes_and_models() -> None:
    loaded = [load_scenario_file(p) for p in EXAMPLES]
    assert {s.use_class for s in loaded} == {"public_welfare", "industry"}
    assert any("model" in s.output_modes for s in loaded)
    assert any(s.whole_city for s in loaded)


def test_the_checked_in_json_schema_equals_the_model() -> None:
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema(), (
        "regenerate with `.venv/bin/python -m policies.scenario`"
    )
    assert SCHEMA_PATH.read_text() == render_json_schema()


def test_errors_are_named_field_by_field_all_at_once() -> None:
    data = scenario_dict(
        use_class="public_welfare",
        fee_per_job_cny=3,
        job_kinds=["sql", "rust"],
        colums=["x"],
    )
    data["datasets"]["residents"]["columns"].append("sex")
    data["privacy_budget"]["per_job_epsilon"] = 9
    data["validity"] = {"start": "2026-01-01", "end": "2030-01-01"}
    errors = _errors(data)
    assert set(errors) == {
        "job_kinds.1",
        "colums",
        "datasets.residents.columns",
        "privacy_budget.per_job_epsilon",
        "fee_per_job_cny",
        "validity.end",
    }
    assert "unknown field" in errors["colums"]
    assert "listed more than once: sex" in errors["datasets.residents.columns"]
    assert "more than the total epsilon 4.0" in errors["privacy_budget.per_job_epsilon"]
    assert "free (R8)" in errors["fee_per_job_cny"]
    assert "longer than 3 years" in errors["validity.end"]
    assert "2028-12-31" in errors["validity.end"]


def test_missing_fields_are_named() -> None:
    data = scenario_dict()
    del data["purpose"], data["validity"]
    assert set(_errors(data)) == {"purpose", "validity"}


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("id", "2026-014", "id"),
        ("use_class", "commercial", "use_class"),
        ("output_modes", ["raw_rows"], "output_modes.0"),
        ("datasets", {}, "datasets"),
        ("datasets", {"residents": {"columns": []}}, "datasets.residents.columns"),
        ("datasets", {"residents": {"columns": ["a b"]}}, "datasets.residents.columns.0"),
        ("purpose", "short", "purpose"),
    ],
)
def test_each_bad_field_is_named(field: str, value: object, path: str) -> None:
    assert path in _errors(scenario_dict(**{field: value}))


def test_term_limits_three_years_five_for_whole_city_longer_with_a_reason() -> None:
    three = {"start": "2026-03-01", "end": "2029-02-28"}
    parse_scenario(scenario_dict(validity=three))
    assert "validity.end" in _errors(
        scenario_dict(validity={"start": "2026-03-01", "end": "2029-03-01"})
    )
    five = {"start": "2026-03-01", "end": "2031-02-28"}
    assert "validity.end" in _errors(scenario_dict(validity=five))
    parse_scenario(scenario_dict(validity=five, whole_city=True))
    six = {"start": "2026-03-01", "end": "2032-02-28"}
    assert "whole-city" in _errors(scenario_dict(validity=six, whole_city=True))["validity.end"]
    s = parse_scenario(
        scenario_dict(
            validity={**six, "exception_reason": "aligned with the 2026-2032 master plan"},
            whole_city=True,
        )
    )
    assert s.validity.last_day == "2032-02-28"


def test_end_before_start_and_naive_datetimes_are_refused() -> None:
    assert "validity.end" in _errors(
        scenario_dict(validity={"start": "2026-03-01", "end": "2026-02-01"})
    )
    errors = _errors(scenario_dict(validity={"start": "2026-03-01T09:30:00", "end": "2027-03-01"}))
    assert "timezone" in errors["validity.start"]


def test_dates_are_whole_days_in_china_standard_time() -> None:
    s = parse_scenario(scenario_dict(validity={"start": "2026-03-01", "end": "2026-03-31"}))
    assert s.validity.starts_at.isoformat() == "2026-03-01T00:00:00+08:00"
    assert s.validity.ends_at.isoformat() == "2026-04-01T00:00:00+08:00"
    assert s.validity.last_day == "2026-03-31"


def test_policy_hash_is_stable_and_changes_with_any_field() -> None:
    a = parse_scenario(scenario_dict())
    b = parse_scenario(json.loads(a.canonical_json()))
    assert a.policy_hash == b.policy_hash
    assert len(a.policy_hash) == 64
    reordered = scenario_dict()
    reordered["datasets"] = dict(reversed(list(reordered["datasets"].items())))
    assert parse_scenario(reordered).policy_hash == a.policy_hash
    wider = scenario_dict()
    wider["datasets"]["residents"]["columns"].append("income")
    assert parse_scenario(wider).policy_hash != a.policy_hash


def test_not_a_mapping_and_bad_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ScenarioFileError, match="not a mapping"):
        parse_scenario(["id"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed\n")
    with pytest.raises(ScenarioFileError, match="not valid YAML"):
        load_scenario_file(bad)
    with pytest.raises(ScenarioFileError, match="cannot read"):
        load_scenario_file(tmp_path / "missing.yaml")


def test_columns_of_lists_only_the_granted_columns() -> None:
    s = parse_scenario(scenario_dict())
    assert s.columns_of("residents") == {"person_id", "birth_year", "district_code", "sex"}
    assert s.columns_of("taxes") == frozenset()
    assert s.validity.start == date.fromisoformat(scenario_dict()["validity"]["start"])
