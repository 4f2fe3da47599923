"""The synthetic demo table: realistic, consistent, seeded, bounded, importable."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from enclave.catalog import load_meta
from shuyu.cli import app
from shuyu.synthetic import (
    BENEFIT_TYPES,
    DISTRICTS,
    demo_batches,
    id_check_digit,
    is_valid_id_number,
    write_demo_data,
)


def test_known_id_number_check_digits() -> None:
    # the worked example of GB 11643 itself
    assert id_check_digit("11010519491231002") == "X"
    assert is_valid_id_number("11010519491231002X")
    assert not is_valid_id_number("110105194912310021")


def test_rows_are_consistent_person_by_person(tmp_path: Path) -> None:
    files = write_demo_data(tmp_path, 30_000, seed=3, max_rows_per_person=4, batch_rows=7_000)
    t = pq.read_table(files.data_path)
    assert t.num_rows == files.rows == 30_000
    code_of = {name: code for code, name in DISTRICTS}
    per_person: dict[int, set[tuple[object, ...]]] = {}
    counts: dict[int, int] = {}
    for r in t.select(["person_id", "id_number", "name", "sex", "age", "district"]).to_pylist():
        idn = r["id_number"]
        assert is_valid_id_number(idn), idn
        assert idn[:6] == code_of[r["district"]]
        born = date(int(idn[6:10]), int(idn[10:12]), int(idn[12:14]))
        assert 2025 - born.year == r["age"]  # ages are as of 31 December 2025
        assert (int(idn[16]) % 2 == 1) == (r["sex"] == "男")
        per_person.setdefault(r["person_id"], set()).add(tuple(r.values()))
        counts[r["person_id"]] = counts.get(r["person_id"], 0) + 1
    assert all(len(v) == 1 for v in per_person.values())  # person attributes never vary
    assert max(counts.values()) == 4 and min(counts.values()) == 1
    assert sum(1 for c in counts.values() if c > 1) > len(counts) / 4
    assert set(t.column("benefit_type").to_pylist()) <= set(BENEFIT_TYPES)
    income = t.column("income")
    assert pc.min(income).as_py() >= 0 and pc.max(income).as_py() <= 500_000
    assert pc.mean(income).as_py() > pc.approximate_median(income).as_py()  # right-skewed


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = next(demo_batches(1_000, seed=5))
    b = next(demo_batches(1_000, seed=5))
    c = next(demo_batches(1_000, seed=6))
    assert a.equals(b) and not a.equals(c)


def test_canaries_are_planted_and_csv_round_trips(tmp_path: Path) -> None:
    files = write_demo_data(tmp_path, 5_000, fmt="csv", canaries=["CANARY-A", "CANARY-B"])
    t = pacsv.read_csv(files.data_path)
    names = t.column("name").to_pylist()
    assert names.count("CANARY-A") == 1 and names.count("CANARY-B") == 1
    assert t.num_rows == 5_000
    meta = load_meta(files.meta_path)  # the written META.yaml passes the catalog
    assert meta.privacy_unit == "person_id" and meta.max_rows_per_unit == 5


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_sizes_are_refused(bad: int) -> None:
    with pytest.raises(ValueError):
        next(demo_batches(bad))


def test_cli_demo_data_writes_data_and_meta(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "data", "--rows", "1234", "--out", str(out), "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 1,234 rows" in result.output
    assert (out / "residents.csv").exists() and (out / "residents.META.yaml").exists()
    result = CliRunner().invoke(app, ["demo", "data", "--out", str(out), "--format", "xlsx"])
    assert result.exit_code != 0
