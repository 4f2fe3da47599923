"""Sample views: keyed pseudonyms (run in DuckDB), generalization, sampling, rules."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import duckdb
import pytest

from policies.desensitize import (
    SampleColumn,
    load_desensitize_rules,
    parse_desensitize_rules,
    pseudonym,
    sample_view,
    unit_sampled,
)
from policies.errors import PolicyError
from policies.grades import load_grades
from policies.scenario import SampleSettings

RULES = load_desensitize_rules()
COLUMNS = [
    SampleColumn("person_id", "string", "identifier", "L4"),
    SampleColumn("age", "int", "quasi_identifier", "L3"),
    SampleColumn("district_code", "string", "quasi_identifier", "L3"),
    SampleColumn("visit_date", "date", "quasi_identifier", "L3"),
    SampleColumn("income", "float", "sensitive", "L4"),
    SampleColumn("benefit", "float", "sensitive", "L3"),
    SampleColumn("sex", "string", "attribute", "L2"),
]
SCOPE = {"person_id", "age", "district_code", "visit_date", "income", "benefit"}


def _people() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(
        """
        CREATE TABLE residents AS
        SELECT 'P' || CAST(i AS VARCHAR) AS person_id, 18 + i % 70 AS age,
               '4301' || CAST(10 + i % 7 AS VARCHAR) AS district_code,
               DATE '2026-01-01' + CAST(i % 300 AS INTEGER) AS visit_date,
               1000.0 * i AS income, 10.0 * i AS benefit,
               CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END AS sex
        FROM range(2000) t(i)
        """
    )
    return con


def _materialize(key: bytes, rate: float = 1.0, **kw: Any) -> list[tuple[Any, ...]]:
    con = _people()
    view = sample_view(
        source="residents",
        columns=COLUMNS,
        scope=SCOPE,
        settings=SampleSettings(rate=rate, **kw),
        rules=RULES,
        unit_column="person_id",
    )
    for sql, params in view.statements(key):
        con.execute(sql, params)
    # the key is gone from the session before operator code could run
    assert con.sql("SELECT * FROM duckdb_variables()").fetchall() == []
    return con.sql("SELECT * FROM residents_sample ORDER BY person_id").fetchall()


def test_same_scenario_pseudonyms_are_stable_and_two_scenarios_differ() -> None:
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    first, again, other = _materialize(k1), _materialize(k1), _materialize(k2)
    ids1 = {r[0] for r in first}
    assert ids1 == {r[0] for r in again}
    assert ids1.isdisjoint({r[0] for r in other})
    assert len(ids1) == 2000
    assert not any(i.startswith("P") for i in ids1)


def test_duckdb_computes_real_hmac_sha256_under_the_scenario_key() -> None:
    key = secrets.token_bytes(32)
    rows = _materialize(key)
    expected = hmac.new(key, b"p|P7", hashlib.sha256).hexdigest()
    assert pseudonym(key, "P7") == expected
    assert expected in {r[0] for r in rows}


def test_quasi_identifiers_are_generalized_and_sensitive_l4_is_dropped() -> None:
    rows = _materialize(secrets.token_bytes(32), age_band_years=10, region_prefix_length=4)
    con = _people()
    view = sample_view(
        source="residents",
        columns=COLUMNS,
        scope=SCOPE,
        settings=SampleSettings(rate=1.0),
        rules=RULES,
    )
    assert view.actions == {
        "person_id": "pseudonymize",
        "age": "generalize",
        "district_code": "generalize",
        "visit_date": "generalize",
        "income": "drop",  # sensitive at L4
        "benefit": "keep",  # sensitive at L3
        "sex": "drop",  # outside the scenario's scope
    }
    ages = {r[1] for r in rows}
    assert ages <= {f"{lo}-{lo + 9}" for lo in range(10, 100, 10)}
    assert {r[2] for r in rows} == {"4301"}
    assert {r[3].day for r in rows} == {1}  # truncated to the month
    assert len(rows[0]) == 5
    con.close()


def test_sampling_is_per_unit_deterministic_and_matches_the_reference() -> None:
    key = secrets.token_bytes(32)
    rows = _materialize(key, rate=0.25)
    again = _materialize(key, rate=0.25)
    assert rows == again
    assert 400 < len(rows) < 600
    expected = {pseudonym(key, f"P{i}") for i in range(2000) if unit_sampled(key, f"P{i}", 0.25)}
    assert {r[0] for r in rows} == expected


def test_without_an_identifier_rows_are_sampled_by_their_content() -> None:
    cols = [
        SampleColumn("sex", "string", "attribute", "L2"),
        SampleColumn("age", "int", "attribute", "L2"),
    ]
    view = sample_view(
        source="residents",
        columns=cols,
        scope={"sex", "age"},
        settings=SampleSettings(rate=0.5),
        rules=RULES,
    )
    assert view.needs_key
    con = _people()
    for sql, params in view.statements(secrets.token_bytes(32)):
        con.execute(sql, params)
    assert 0 < con.execute("SELECT count(*) FROM residents_sample").fetchall()[0][0] < 2000


def test_no_key_is_needed_when_nothing_is_keyed() -> None:
    cols = [SampleColumn("sex", "string", "attribute", "L1")]
    view = sample_view(
        source="residents",
        columns=cols,
        scope={"sex"},
        settings=SampleSettings(rate=1.0),
        rules=RULES,
    )
    assert not view.needs_key
    assert view.setup(b"k" * 32) == []


def test_hostile_column_names_cannot_break_out_of_the_identifier() -> None:
    cols = [SampleColumn('x" FROM secrets; --', "string", "attribute", "L2")]
    view = sample_view(
        source="residents",
        columns=cols,
        scope={cols[0].name},
        settings=SampleSettings(rate=1),
        rules=RULES,
    )
    assert '"x"" FROM secrets; --"' in view.select_sql


def test_a_view_with_no_columns_left_is_refused() -> None:
    with pytest.raises(PolicyError, match="no columns") as info:
        sample_view(
            source="residents",
            columns=COLUMNS,
            scope={"income"},
            settings=SampleSettings(),
            rules=RULES,
        )
    assert info.value.code == "policy.sample_empty"


def test_rules_that_keep_identifiers_of_a_desensitized_grade_are_refused() -> None:
    grades = load_grades()
    data = {
        "grades": {
            "L3": {"identifier": "keep", "quasi_identifier": "blur", "sensitive": "keep"},
            "L9": {},
        }
    }
    with pytest.raises(PolicyError) as info:
        parse_desensitize_rules(data, grades)
    problems = " | ".join(info.value.details["errors"])
    assert "grades.L3.identifier: grade L3 requires desensitized samples" in problems
    assert "grades.L3.quasi_identifier: 'blur' is not one of" in problems
    assert "grades.L3.attribute: required" in problems
    assert "grades.L9: unknown grade" in problems


def test_a_grade_missing_from_the_rules_drops_everything() -> None:
    assert RULES.action("L7", "attribute") == "drop"
