"""META.yaml validation: every problem named field by field, policy refusals explained."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from enclave.catalog import catalog_entry, load_meta, parse_meta, render_catalog
from enclave.errors import CatalogError
from shuyu.synthetic import demo_meta


def _meta(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(demo_meta())
    raw.update(changes)
    return raw


def _col(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in raw["columns"] if c["name"] == name)


def _errors(raw: Any) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_meta(raw)
    errors: list[str] = info.value.details["errors"]
    for e in errors:  # every line is also in the one message people read
        assert e in info.value.message
    return errors


def test_the_demo_catalog_is_valid_and_typed() -> None:
    meta = parse_meta(demo_meta())
    assert meta.grade == "L4"
    assert meta.column("income").bounds == (0.0, 500_000.0)
    assert meta.columns_by_grade()["L4"] == ["id_number", "name"]
    assert meta.privacy_unit == "person_id"


def test_missing_bounds_are_named_by_index_and_column() -> None:
    raw = _meta()
    idx = next(i for i, c in enumerate(raw["columns"]) if c["name"] == "income")
    del raw["columns"][idx]["bounds"]
    assert _errors(raw) == [
        f"columns[{idx}].bounds: required for numeric column 'income' (give the public "
        "[lower, upper] every value lies in; never derive it from the data)"
    ]


def test_identifiers_need_no_bounds_but_other_numeric_columns_do() -> None:
    raw = _meta()
    _col(raw, "person_id")["role"] = "attribute"
    (err,) = _errors(raw)
    assert err.startswith("columns[0].bounds: required for numeric column 'person_id'")


def test_all_problems_are_reported_at_once() -> None:
    raw = _meta(update_frequency="hourly", colour="blue")
    del raw["summary"]
    raw["provider"] = {"name": "x"}
    raw["columns"][1]["type"] = "text"
    raw["columns"][4]["bounds"] = [100, 0]
    raw["columns"][3]["grade"] = "L9"
    errors = _errors(raw)
    fields = sorted(e.split(":")[0] for e in errors)
    assert fields == sorted(
        [
            "summary",
            "update_frequency",
            "provider.code",
            "colour",
            "columns[1].type",
            "columns[4].bounds",
            "columns[3].grade",
        ]
    )
    assert any("unknown field" in e for e in errors if e.startswith("colour"))
    assert any("lower 100 is above upper 0" in e for e in errors)


def test_core_data_is_refused_with_a_reason() -> None:
    raw = _meta(grade="core")
    with pytest.raises(CatalogError) as info:
        parse_meta(raw)
    assert info.value.code == "enclave.catalog_refused"
    assert info.value.kind == "forbidden"
    assert "grade: grade 'core' (核心数据) is refused for authorized operation" in (
        info.value.message
    )


def test_a_core_column_is_refused_too() -> None:
    raw = _meta()
    raw["columns"][2]["grade"] = "core"
    errors = _errors(raw)
    assert any(e.startswith("columns[2].grade: grade 'core'") for e in errors)


def test_not_open_and_not_desensitized_is_refused_r2_5() -> None:
    raw = _meta(open={"type": "not_open"}, desensitized=False)
    with pytest.raises(CatalogError) as info:
        parse_meta(raw)
    assert info.value.code == "enclave.catalog_refused"
    assert "R2.5" in info.value.message and "desensitized: true" in info.value.message


def test_not_open_but_desensitized_is_accepted() -> None:
    meta = parse_meta(_meta(open={"type": "not_open"}, desensitized=True))
    assert meta.open.type == "not_open"


def test_conditional_attributes_need_their_conditions() -> None:
    raw = _meta(share={"type": "conditional"})
    assert _errors(raw) == ["share.conditions: required when share.type is conditional"]


def test_cross_field_rules() -> None:
    raw = _meta(grade="L2", privacy_unit="citizen")
    raw["columns"].append(copy.deepcopy(raw["columns"][0]))
    errors = _errors(raw)
    assert "privacy_unit: 'citizen' is not one of the columns" in errors
    assert any(e.startswith("columns[11].name: 'person_id' repeats columns[0]") for e in errors)
    assert any(e.startswith("grade: L2 is below columns[1] 'id_number' (L4)") for e in errors)


def test_privacy_unit_and_bound_come_together() -> None:
    raw = _meta()
    del raw["max_rows_per_unit"]
    assert _errors(raw) == [
        "max_rows_per_unit: required together with privacy_unit and max_rows_per_unit"
    ]


def test_domain_values_must_match_the_column_type() -> None:
    raw = _meta()
    _col(raw, "sex")["domain"] = ["女", 1]
    _col(raw, "income")["domain"] = [1.5]
    errors = _errors(raw)
    assert "columns[3].domain: 1 value(s) are not of type string for 'sex'" in errors
    assert any(e.startswith("columns[6].domain: only string, int and bool") for e in errors)


def test_dataset_grade_defaults_to_the_highest_column_grade() -> None:
    raw = _meta()
    del raw["grade"]
    assert parse_meta(raw).grade == "L4"


def test_a_column_without_grade_takes_the_dataset_grade() -> None:
    raw = _meta()
    del _col(raw, "visits")["grade"]
    meta = parse_meta(raw)
    assert meta.column_grade(meta.column("visits")) == "L4"


def test_column_names_must_be_plain() -> None:
    raw = _meta()
    raw["columns"][1]["name"] = "身份证号"
    errors = _errors(raw)
    assert errors[0].startswith("columns[1].name: '身份证号' is not a plain column name")


def test_not_a_mapping_and_no_columns() -> None:
    assert _errors([1, 2]) == ["(top level): must be a mapping of catalog fields"]
    raw = _meta(columns=[])
    assert _errors(raw) == ["columns: required, a non-empty list of data items"]


def test_load_meta_reports_yaml_syntax_with_its_line(tmp_path: Path) -> None:
    p = tmp_path / "META.yaml"
    p.write_text("name: x\nsummary: [unclosed\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"not valid YAML at line \d+"):
        load_meta(p)
    with pytest.raises(CatalogError) as info:
        load_meta(tmp_path / "absent.yaml")
    assert info.value.code == "enclave.catalog_missing"


def test_load_meta_reads_a_written_file(tmp_path: Path) -> None:
    p = tmp_path / "META.yaml"
    p.write_text(yaml.safe_dump(demo_meta(), allow_unicode=True), encoding="utf-8")
    assert load_meta(p).name == demo_meta()["name"]


def test_the_rendered_entry_shows_every_r3_3_field() -> None:
    meta = parse_meta(demo_meta())
    labels = [label for label, _ in catalog_entry(meta)]
    for field in (
        "name",
        "summary",
        "format",
        "industry class",
        "time coverage",
        "region coverage",
        "update frequency",
        "provider",
        "share",
        "open",
        "authorized operation",
    ):
        assert any(label.endswith(field) for label in labels), field
    text = render_catalog(meta)
    assert "DEMO-430100-MZJ" in text and "[0, 500000]" in text and "身份证号" in text
