"""Reconstruction attempts against the table checks: each one stopped with the right finding.

Also the other side of it: ordinary aggregates pass, and no report carries a data value.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from egress.checks import (
    CellStats,
    DuckDBSource,
    IdentifierIndex,
    OutputSpec,
    OutputStats,
    Thresholds,
    check_dominance,
    check_identifiers,
    check_rounding,
    check_row_level,
    check_small_cells,
    round_counts,
    secondary_suppression,
)
from egress.errors import EgressError
from egress.report import build_report, route
from tests.egress.gate_factories import (
    CATALOG,
    COUNT,
    DEFAULT,
    SUM_INCOME,
    aggregate,
    people,
    source_conn,
)

CANARY = "CANARY-7f3a9c"


@pytest.fixture(scope="module")
def data() -> pa.Table:
    return people(1500)


@pytest.fixture(scope="module")
def conn(data: pa.Table):  # type: ignore[no-untyped-def]
    return source_conn(data)


@pytest.fixture(scope="module")
def index(data: pa.Table) -> IdentifierIndex:
    return IdentifierIndex.from_tables({"people": data}, CATALOG, canaries=[CANARY])


@pytest.fixture(scope="module")
def sources(conn):  # type: ignore[no-untyped-def]
    return {"people": DuckDBSource(conn, "people", "people")}


def checks_of(findings, severity="block"):  # type: ignore[no-untyped-def]
    return sorted({f.check for f in findings if f.severity == severity})


def full_report(output, index, sources, thresholds=DEFAULT):  # type: ignore[no-untyped-def]
    return build_report("J-test", [output], thresholds, identifiers=index, sources=sources)


# --- row-level output -----------------------------------------------------------------------


def test_select_star_is_blocked_as_row_level_and_identifiers(data, index, sources) -> None:
    out = OutputSpec("star", data.slice(0, 40), ("people",))
    report = full_report(out, index, sources)
    assert report.verdict == "blocked"
    assert {"row_level", "identifiers"} <= set(checks_of(report.findings))
    row = next(f for f in report.findings if f.check == "row_level")
    assert row.evidence["row_count"] == 40 and row.evidence["share_of_rows"] == 1.0
    assert row.fix is not None and row.fix.action == "aggregate"


def test_rows_without_identifiers_renamed_and_rounded_are_still_row_level(data, sources) -> None:
    # SELECT district AS d, age, round(income, -2) AS x FROM people: no identifier, renamed,
    # rounded: still one person per row
    table = pa.table(
        {
            "d": data.column("district").slice(0, 30),
            "age": data.column("age").slice(0, 30),
            "x": pc.multiply(pc.round(pc.divide(data.column("income").slice(0, 30), 100.0)), 100.0),
        }
    )
    findings = check_row_level(OutputSpec("rows", table, ("people",)), sources, DEFAULT)
    assert [f.severity for f in findings] == ["block"]
    cols = {c["output"]: c for c in findings[0].evidence["columns"]}
    assert cols["x"]["source"] == "income" and cols["x"]["matched_by"] == "values"
    assert cols["x"]["quantum"] == 100.0


def test_max_income_per_district_is_an_individual_value(conn, sources) -> None:
    table = conn.sql(
        "SELECT district, max(income) AS top FROM people GROUP BY district"
    ).to_arrow_table()
    out = OutputSpec("max", table, ("people",), keys=("district",))
    assert checks_of(check_row_level(out, sources, DEFAULT)) == ["row_level"]


def test_listing_a_category_is_not_row_level(sources) -> None:
    table = pa.table({"district": ["A", "B", "C"]})  # SELECT DISTINCT district
    assert check_row_level(OutputSpec("d", table, ("people",)), sources, DEFAULT) == []


# --- identifiers ------------------------------------------------------------------------------


def test_grouping_by_person_id_is_blocked_three_ways(conn, index, sources) -> None:
    out = aggregate(conn, ["person_id"], [SUM_INCOME])
    report = full_report(out, index, sources)
    assert report.verdict == "blocked"
    assert {"identifiers", "small_cells", "row_level"} <= set(checks_of(report.findings))
    named = [f for f in report.findings if f.check == "identifiers" and "columns" in f.evidence]
    assert named and named[0].fix is not None
    assert named[0].fix.description == "drop column(s) `person_id`"


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda s: f"row-{s}-end", id="concatenated with separators"),
        pytest.param(lambda s: f"x{s}y", id="concatenated without separators"),
        pytest.param(lambda s: s.encode().hex(), id="hex"),
        pytest.param(lambda s: s.encode().hex().upper(), id="hex upper case"),
        pytest.param(lambda s: base64.b64encode(s.encode()).decode(), id="base64"),
        pytest.param(
            lambda s: "id:" + base64.b64encode(s.encode()).decode(), id="base64 after prefix"
        ),
        pytest.param(
            lambda s: "zzz" + base64.urlsafe_b64encode(s.encode()).decode(), id="base64 glued"
        ),
        pytest.param(lambda s: "pre" + s.encode().hex() + "post", id="hex glued"),
    ],
)
def test_identifier_hidden_in_a_string_is_found(data, index, encode) -> None:  # type: ignore[no-untyped-def]
    secret = data.column("id_number")[11].as_py()
    labels = ["A", "B", encode(secret), "D"]
    out = OutputSpec(
        "o",
        pa.table({"label": labels, "n": [40, 50, 60, 70]}),
        ("people",),
        measures={"n": "count"},
    )
    findings = [f for f in check_identifiers(out, index) if f.severity == "block"]
    assert len(findings) == 1
    f = findings[0]
    assert f.evidence["rows"] == [2] and f.evidence["source"] == "people.id_number"
    assert secret not in json.dumps(f.to_dict())


def test_identifier_in_a_column_name_and_a_canary_are_found(data, index) -> None:
    secret = data.column("id_number")[3].as_py()
    table = pa.table({f"n_{secret}": [40, 50], "label": [f"ok-{CANARY}", "fine"]})
    out = OutputSpec("o", table, ("people",), measures={f"n_{secret}": "count"})
    findings = check_identifiers(out, index)
    checks = {
        (f.check, f.evidence.get("in_column_name")) for f in findings if f.severity == "block"
    }
    assert ("identifiers", True) in checks and ("canary", False) in checks


def test_short_names_match_whole_tokens_only(data, index) -> None:
    name = data.column("name")[0].as_py()  # two or three characters
    found = check_identifiers(
        OutputSpec("o", pa.table({"who": [f"{name} / 3"]}), ("people",)), index
    )
    assert [f.check for f in found if f.severity == "block"] == ["identifiers"]


def test_an_ordinary_aggregate_has_no_identifier_finding(conn, index) -> None:
    # ages, districts and counts coincide with nothing identifying
    out = aggregate(conn, ["district", "age"], [COUNT, SUM_INCOME])
    assert [f for f in check_identifiers(out, index) if f.severity == "block"] == []


def test_short_numeric_identifiers_are_named_not_scanned() -> None:
    idx = IdentifierIndex.empty()
    idx.add_values("t", "uid", [1, 2, 42])
    out = OutputSpec(
        "o", pa.table({"age": [42, 43], "n": [20, 30]}), ("t",), measures={"n": "count"}
    )
    findings = check_identifiers(out, idx)
    assert [f.severity for f in findings] == ["info"]
    assert findings[0].evidence["sources"] == ["t.uid"]


def test_index_built_in_sql_matches_the_python_one(conn, data) -> None:
    idx = IdentifierIndex.from_duckdb(conn, {"people": "people"}, CATALOG, canaries=[CANARY])
    secret = data.column("id_number")[5].as_py()
    out = OutputSpec("o", pa.table({"s": ["a" + secret.encode().hex()]}), ("people",))
    assert [
        f.evidence["encoding"] for f in check_identifiers(out, idx) if f.severity == "block"
    ] == ["hex"]


# --- small cells ------------------------------------------------------------------------------


def test_a_cell_of_three_people_is_blocked_with_its_secondary(conn, data) -> None:
    # one district restricted to three people, next to large ones
    three = data.filter(pc.equal(data.column("district"), "A")).column("person_id")[:3]
    listed = ", ".join(f"'{p}'" for p in three.to_pylist())
    out = aggregate(
        conn, ["district"], [COUNT], where=f"district <> 'A' OR person_id IN ({listed})"
    )
    findings = check_small_cells(out, DEFAULT)
    assert len(findings) == 1 and findings[0].severity == "block"
    ev = findings[0].evidence
    small = [i for i, n in enumerate(out.stats.n_units) if n < 10]  # type: ignore[union-attr]
    assert ev["primary_rows"] == small and ev["primary_count"] == 1
    # the district total is known, so one more cell must go with it
    assert ev["secondary_count"] == 1
    assert findings[0].fix is not None and findings[0].fix.automatic


def test_secondary_suppression_1d_hides_the_smallest_other_cell() -> None:
    keys = [("a",), ("b",), ("c",), (None,)]
    units = np.array([3, 50, 20, 73])
    secondary = secondary_suppression(keys, units, units < 10)
    assert secondary.tolist() == [False, False, True, False]


def test_secondary_suppression_2d_protects_rows_and_columns() -> None:
    # 3 x 3 table with margins; one small cell at (r1, c1)
    n = {
        ("r1", "c1"): 2,
        ("r1", "c2"): 30,
        ("r1", "c3"): 40,
        ("r2", "c1"): 25,
        ("r2", "c2"): 35,
        ("r2", "c3"): 45,
        ("r3", "c1"): 50,
        ("r3", "c2"): 60,
        ("r3", "c3"): 70,
    }
    keys = list(n)
    units = np.array([n[k] for k in keys])
    for r in ("r1", "r2", "r3"):
        keys.append((r, None))
        units = np.append(units, sum(v for k, v in n.items() if k[0] == r))
    for c in ("c1", "c2", "c3"):
        keys.append((None, c))
        units = np.append(units, sum(v for k, v in n.items() if k[1] == c))
    primary = (units > 0) & (units < 10)
    secondary = secondary_suppression(keys, units, primary)
    hidden = {keys[i] for i in np.flatnonzero(primary | secondary)}
    # every row and column line of the body now has zero or at least two hidden cells
    for r in ("r1", "r2", "r3"):
        assert len([k for k in hidden if k[0] == r and k[1] is not None]) != 1
    for c in ("c1", "c2", "c3"):
        assert len([k for k in hidden if k[1] == c and k[0] is not None]) != 1
    assert ("r1", "c2") in hidden and ("r2", "c1") in hidden and ("r2", "c2") in hidden


def test_counts_without_statistics_still_get_the_threshold_rule() -> None:
    out = OutputSpec(
        "o", pa.table({"k": ["a", "b"], "n": [4, 400]}), ("t",), measures={"n": "count"}
    )
    f = check_small_cells(out, DEFAULT)
    assert f[0].evidence["units_from"] == "n" and f[0].evidence["primary_rows"] == [0]


# --- dominance --------------------------------------------------------------------------------


def test_a_sum_dominated_by_one_income_goes_to_review(conn, data) -> None:
    rich = data.column("person_id")[0].as_py()
    conn.execute(
        "CREATE OR REPLACE TEMP VIEW skew AS SELECT * REPLACE "
        f"(CASE WHEN person_id = '{rich}' THEN income * 10000 ELSE income END AS income) "
        "FROM people"
    )
    from egress.checks.stats_sql import run_aggregate

    out = run_aggregate(
        conn, "skew", ["district"], [COUNT, SUM_INCOME], "person_id", "s", datasets=("people",)
    )
    findings = check_dominance(out, DEFAULT)
    assert {f.evidence["rule"] for f in findings} == {"(2, 90%)", "p%=10"}
    assert all(f.severity == "review" for f in findings)
    assert all(len(f.evidence["rows"]) == 1 for f in findings)


def test_dominance_rules_on_hand_made_cells() -> None:
    table = pa.table({"k": ["even", "one", "two"], "s": [100.0, 100.0, 100.0]})
    cells = [
        CellStats(20, total=100, top=(5, 5)),  # 20 equal units: safe
        CellStats(20, total=100, top=(95, 1)),  # one unit holds 95 %
        CellStats(20, total=100, top=(50, 45)),  # two hold 95 %; the rest (5) is 10 % of 50
    ]
    out = OutputSpec(
        "o", table, ("t",), measures={"s": "sum"}, stats=OutputStats.from_cells(cells, ["s"])
    )
    rules = {f.evidence["rule"]: f.evidence["rows"] for f in check_dominance(out, DEFAULT)}
    assert rules == {"(2, 90%)": [1, 2], "p%=10": [1]}


# --- rounding ---------------------------------------------------------------------------------


def test_counts_not_on_the_rounding_base_get_an_automatic_fix() -> None:
    t = Thresholds(rounding_base=5)
    out = OutputSpec(
        "o", pa.table({"k": ["a", "b"], "n": [15, 23]}), ("t",), measures={"n": "count"}
    )
    [finding] = check_rounding(out, t)
    assert finding.severity == "block" and finding.evidence["rows"] == [1]
    assert finding.fix is not None and finding.fix.description == "round counts to base 5"
    fixed = round_counts(out.table, ["n"], 5)
    assert fixed.column("n").to_pylist() == [15, 25]
    assert check_rounding(OutputSpec("o", fixed, ("t",), measures={"n": "count"}), t) == []


# --- DP outputs -------------------------------------------------------------------------------


def test_dp_output_small_noisy_count_is_not_a_finding_but_identifiers_block(
    conn, data, index, sources
) -> None:
    out = aggregate(conn, ["district", "age"], [COUNT], mode="dp_aggregate")
    report = full_report(out, index, sources)
    assert checks_of(report.findings) == []
    assert route(report, modes=["dp_aggregate"], auto_release_clean_dp=True) == "auto_released"
    secret = data.column("id_number")[0].as_py()
    leaky = OutputSpec(
        "leak",
        pa.table({"k": [secret], "n": [3.7]}),
        ("people",),
        mode="dp_aggregate",
        measures={"n": "count"},
    )
    report = full_report(leaky, index, sources)
    assert checks_of(report.findings) == ["identifiers"]
    assert route(report, modes=["dp_aggregate"], auto_release_clean_dp=True) == "refused"


def test_dp_output_of_rows_is_still_row_level(data, sources) -> None:
    out = OutputSpec(
        "rows", data.slice(0, 10).select(["age", "income"]), ("people",), mode="dp_aggregate"
    )
    assert checks_of(check_row_level(out, sources, DEFAULT)) == ["row_level"]


# --- the report -------------------------------------------------------------------------------


def test_report_is_stable_json_without_values(conn, data, index, sources) -> None:
    out = aggregate(conn, ["person_id"], [SUM_INCOME])
    a = full_report(out, index, sources).to_json()
    b = full_report(out, index, sources).to_json()
    assert a == b
    body = json.loads(a)
    assert body["verdict"] == "blocked" and body["counts"]["block"] >= 3
    for value in (
        data.column("person_id").to_pylist()[:50] + data.column("id_number").to_pylist()[:50]
    ):
        assert value not in a
    income = f"{data.column('income')[0].as_py()}"
    assert income not in a


def test_a_check_that_cannot_run_asks_for_review(conn) -> None:
    out = aggregate(conn, ["district"], [COUNT])
    report = build_report("J-1", [out], DEFAULT)
    assert report.verdict == "needs_review"
    assert {f.check for f in report.findings if f.severity == "review"} == {
        "identifiers",
        "row_level",
    }
    assert route(report, modes=["sdc_aggregate"], auto_release_clean_dp=True) == "pending_review"


def test_clean_sdc_output_still_goes_to_a_reviewer(conn, index, sources) -> None:
    out = aggregate(conn, ["district"], [COUNT, SUM_INCOME])
    report = full_report(out, index, sources)
    assert report.verdict == "clean"
    assert route(report, modes=["sdc_aggregate"], auto_release_clean_dp=True) == "pending_review"


def test_bad_inputs_are_named() -> None:
    with pytest.raises(EgressError, match="declares measures it does not have"):
        OutputSpec("o", pa.table({"a": [1]}), ("t",), measures={"n": "count"})
    with pytest.raises(EgressError, match="statistics for 2"):
        OutputSpec("o", pa.table({"a": [1]}), ("t",), stats=OutputStats(np.array([1, 2])))
    with pytest.raises(EgressError, match="at least 1"):
        Thresholds(min_cell_units=0)
