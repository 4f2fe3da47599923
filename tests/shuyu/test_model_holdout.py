"""The platform's holdout splits a model job's sample by person (privacy unit), not by row:
all rows of one person on one side, seeded by a salt drawn per run, the same in the sandbox's
prelude and in the trusted worker, with the key and the salt reset before operator code."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from policies.desensitize import SampleColumn, load_desensitize_rules, sample_view
from policies.scenario import SampleSettings
from shuyu.model_jobs import HOLDOUT_SALT_VAR, HoldoutSplit, holdout_split, unit_sql

KEY = b"k" * 32


def _people(persons: int = 600, seed: int = 3) -> pa.Table:
    """1 to 6 rows per person, persons interleaved (not one block each)."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(persons), rng.integers(1, 7, size=persons))
    rng.shuffle(pid)
    return pa.table(
        {"pid": pid.astype(np.int64) + 100_000, "visits": rng.integers(0, 50, len(pid))}
    )


def _meta(unit: str | None = "pid") -> Any:
    columns = [
        SimpleNamespace(name="pid", role="identifier"),
        SimpleNamespace(name="visits", role="attribute"),
    ]
    return SimpleNamespace(meta=SimpleNamespace(privacy_unit=unit, columns=columns))


def _split(salt: bytes, rate: float = 1.0, fraction: float = 0.2) -> HoldoutSplit:
    view = sample_view(
        source="visits",
        columns=[
            SampleColumn("pid", "int", "identifier", "L3"),
            SampleColumn("visits", "int", "attribute", "L3"),
        ],
        scope={"pid", "visits"},
        settings=SampleSettings(rate=rate),
        rules=load_desensitize_rules(),
        unit_column="pid",
    )
    return holdout_split(view, KEY, unit_sql(_meta(), ["pid", "visits"]), fraction, salt)


def _run(
    split: HoldoutSplit, raw: pa.Table
) -> tuple[pa.Table, pa.Table, duckdb.DuckDBPyConnection]:
    con = duckdb.connect(":memory:")
    con.register("visits", raw)
    for sql, params in split.statements:
        con.execute(sql, list(params))
    train = con.sql(f'SELECT * FROM "{split.train}"').to_arrow_table()
    hold = con.sql(f'SELECT * FROM "{split.holdout}"').to_arrow_table()
    return train, hold, con


def test_every_person_is_on_one_side_only_and_about_the_fraction_is_held_out() -> None:
    raw = _people()
    train, hold, _ = _run(_split(b"s" * 16), raw)
    assert train.num_rows + hold.num_rows == raw.num_rows
    train_people = set(train.column("pid").to_pylist())  # pseudonyms: one per person
    held_people = set(hold.column("pid").to_pylist())
    assert not train_people & held_people
    assert len(train_people | held_people) == 600
    assert 0.15 < len(held_people) / 600 < 0.25


def test_a_row_level_split_would_have_put_people_on_both_sides() -> None:
    # the reason for this split: with 1-6 rows a person, rows split one by one share people
    raw = _people()
    mask = np.random.default_rng(0).random(raw.num_rows) < 0.2
    pids = np.asarray(raw.column("pid"))
    assert set(pids[mask]) & set(pids[~mask])


def test_the_split_is_deterministic_for_a_salt_and_changes_with_it() -> None:
    raw = _people()
    first, held_first, _ = _run(_split(b"a" * 16), raw)
    again, held_again, _ = _run(_split(b"a" * 16), raw)
    other, _, _ = _run(_split(b"b" * 16), raw)
    assert first.equals(again) and held_first.equals(held_again)  # same rows, same order
    assert set(first.column("pid").to_pylist()) != set(other.column("pid").to_pylist())


def test_the_split_keeps_the_sample_and_its_order_and_resets_key_and_salt() -> None:
    raw = _people()
    split = _split(b"c" * 16, rate=0.5)
    train, hold, con = _run(split, raw)
    view = sample_view(
        source="visits",
        columns=[
            SampleColumn("pid", "int", "identifier", "L3"),
            SampleColumn("visits", "int", "attribute", "L3"),
        ],
        scope={"pid", "visits"},
        settings=SampleSettings(rate=0.5),
        rules=load_desensitize_rules(),
        unit_column="pid",
    )
    for sql, params in view.statements(KEY):
        con.execute(sql, list(params))
    sample = con.sql(f'SELECT * FROM "{view.name}"').to_arrow_table()
    # the same sampled, pseudonymized rows; training rows in the sample's own order
    assert sorted(sample.to_pylist(), key=str) == sorted(
        (train.to_pylist() + hold.to_pylist()), key=str
    )
    held = set(hold.column("pid").to_pylist())
    kept = [r for r in sample.to_pylist() if r["pid"] not in held]
    assert kept == train.to_pylist()
    for var in (HOLDOUT_SALT_VAR, "shuyu_pseudonym_ipad"):
        assert con.execute(f"SELECT getvariable('{var}')").fetchone() == (None,)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert f"{view.name}__split" not in tables  # the labelled table is gone


def test_without_a_unit_each_row_is_its_own_unit() -> None:
    assert unit_sql(_meta(unit=None), ["pid", "visits"]) == 'CAST("pid" AS VARCHAR)'
    no_ids = SimpleNamespace(
        meta=SimpleNamespace(
            privacy_unit=None, columns=[SimpleNamespace(name="visits", role="attribute")]
        )
    )
    assert unit_sql(no_ids, ["visits"]) == "concat_ws('|', CAST(\"visits\" AS VARCHAR))"  # type: ignore[arg-type]


def test_the_worker_gets_the_same_rows_plus_a_digest_per_person() -> None:
    from shuyu.model_jobs import UNIT_COLUMN

    raw = _people()
    split = _split(b"d" * 16)
    train, hold, _ = _run(split, raw)
    con = duckdb.connect(":memory:")
    con.register("visits", raw)
    for sql, params in split.trusted_statements:
        con.execute(sql, list(params))
    trusted = con.sql(f'SELECT * FROM "{split.train}"').to_arrow_table()
    assert trusted.drop_columns([UNIT_COLUMN]).equals(train)  # same rows, same order
    assert UNIT_COLUMN not in train.column_names  # the sandbox's table has no digest
    pairs = set(zip(trusted.column("pid").to_pylist(), trusted.column(UNIT_COLUMN).to_pylist()))
    assert len(pairs) == len({p for p, _ in pairs}) == len({u for _, u in pairs})
    assert hold.num_rows > 0


def test_the_attacks_count_persons_not_rows() -> None:
    from sklearn.linear_model import LogisticRegression

    from egress.models import ModelData, ModelThresholds
    from sandbox.agent.modelcheck.membership import run_attacks

    rng = np.random.default_rng(2)
    persons = rng.normal(size=(400, 2))
    copies = rng.integers(1, 5, size=400)
    rows = np.repeat(np.arange(400), copies)  # each person's rows are copies of one another
    x, y = persons[rows], (persons[rows, 0] > 0).astype(int)
    train_rows, hold_rows = rows < 300, rows >= 300
    train, holdout = ModelData(x[train_rows], y[train_rows]), ModelData(x[hold_rows], y[hold_rows])
    model = LogisticRegression().fit(train.features, train.target)
    by_person = run_attacks(
        model,
        train,
        holdout,
        ModelThresholds(),
        train_units=rows[train_rows],
        holdout_units=rows[hold_rows],
    )
    by_row = run_attacks(model, train, holdout, ModelThresholds())
    assert {(r.members, r.non_members) for r in by_person} == {(300, 100)}
    assert by_row[0].members == int(train_rows.sum()) > 300
    assert by_person[0].noise_floor > by_row[0].noise_floor  # fewer, independent draws
