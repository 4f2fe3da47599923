"""Benchmark: the full egress check set on a 10,000-cell aggregate, next to its DuckDB query.

In one process and one run:

1. builds a population of ``--units`` people in DuckDB (ids, 18-digit ID numbers, 100
   districts, ages 0-99, sex, income);
2. records a history of ``--history`` earlier releases over the same people in a real
   domain database (SQLite), sealed like production: groupings by district, age band, sex
   and income band with random filters, a few over the whole population, and a few of the
   same district x age shape with a slightly different filter (so differencing has real
   candidates to settle);
3. times the query that produces the output — ``GROUP BY district, age`` with count and sum
   (10,000 cells), as the trusted statistics query the gate needs (per-cell units, top
   contributions, keyed unit hashes) and, for reference, as the operator's plain query;
4. times every check on that output: row-level (DuckDB, as in the sandbox), identifiers
   (index built once per dataset version, timed apart), small cells with secondary
   suppression, dominance, rounding, differencing against the history (warm index; the
   cold load from the database is timed apart).

Goal: checks under 20 % of the statistics query. Writes the ``## egress_checks`` section
of ``benchmarks/RESULTS.md`` (other sections are left as they are).

    .venv/bin/python benchmarks/egress_checks.py                 # 1,000,000 people, 1,000 releases
    .venv/bin/python benchmarks/egress_checks.py --units 200000 --history 100 --no-write
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from egress.checks import (
    DifferencingIndex,
    DuckDBSource,
    IdentifierIndex,
    Thresholds,
    check_differencing,
    check_dominance,
    check_identifiers,
    check_rounding,
    check_row_level,
    check_small_cells,
)
from egress.checks.inputs import DatasetInfo
from egress.checks.sketch import unit_hash_sql
from egress.checks.stats_sql import Measure, cell_stats_sql, run_aggregate
from egress.history import CellHistory
from shuyu.context import init_domain
from shuyu.settings import Settings

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## egress_checks"
CATALOG = {
    "people": DatasetInfo.from_meta(
        {
            "name": "people",
            "grade": "L3",
            "privacy_unit": "person_id",
            "columns": [
                {"name": "person_id", "type": "string", "role": "identifier"},
                {"name": "id_number", "type": "string", "role": "identifier"},
                {"name": "district", "type": "string", "role": "quasi_identifier"},
                {"name": "age", "type": "int", "role": "quasi_identifier"},
                {"name": "sex", "type": "string", "role": "quasi_identifier"},
                {"name": "income", "type": "float", "role": "sensitive"},
            ],
        }
    )
}
MEASURES = [Measure("n", "count"), Measure("total_income", "sum", "income")]


def population(conn: duckdb.DuckDBPyConnection, units: int) -> None:
    conn.execute("SELECT setseed(0.42)")
    conn.execute(
        f"""
        CREATE TABLE people AS
        SELECT 'P' || lpad(i::VARCHAR, 8, '0') AS person_id,
               lpad((110101 + i % 899)::VARCHAR, 6, '0')
                 || strftime(DATE '1940-01-01' + (i * 7919 % 25000)::INTEGER, '%Y%m%d')
                 || lpad((i % 9973)::VARCHAR, 4, '0') AS id_number,
               'D' || lpad((floor(random() * 100))::INTEGER::VARCHAR, 2, '0') AS district,
               floor(random() * 100)::INTEGER AS age,
               CASE WHEN random() < 0.5 THEN 'F' ELSE 'M' END AS sex,
               round(exp(10.3 + 0.7 * (random() + random() + random() - 1.5)), 2) AS income
        FROM range({units}) t(i)
        """
    )


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def build_history(
    conn: duckdb.DuckDBPyConnection, domain: Any, history: CellHistory, salt: str, releases: int
) -> float:
    """Record ``releases`` earlier outputs; returns seconds spent recording sketches."""
    frame = conn.sql(
        f"SELECT {unit_hash_sql('person_id', salt)} AS h, "
        "CAST(substr(district, 2) AS INTEGER) AS d, age AS a, "
        "CASE WHEN sex = 'F' THEN 0 ELSE 1 END AS s, "
        "least(CAST(income / 5000 AS INTEGER), 39) AS inc FROM people ORDER BY h"
    ).fetchnumpy()
    h = np.asarray(frame["h"], dtype=np.uint64)
    dims = {
        "d": np.asarray(frame["d"], np.int64),
        "a10": np.asarray(frame["a"], np.int64) // 10,
        "a": np.asarray(frame["a"], np.int64),
        "s": np.asarray(frame["s"], np.int64),
        "inc": np.asarray(frame["inc"], np.int64),
    }
    rng = np.random.default_rng(5)
    shapes = [("d",), ("a10",), ("s",), ("inc",), ("a10", "s"), ("d", "s"), ("a10", "inc")]
    spent = 0.0
    for r in range(releases):
        if r < 10:  # the whole population, one dimension
            shape, mask = (shapes[r % 4],), np.ones(h.size, dtype=bool)
            keys = shape[0]
        elif r < 15:  # the output's own shape, a slightly different filter
            keys = ("d", "a")
            mask = dims["inc"] != (r % 5)
        else:
            keys = shapes[int(rng.integers(0, len(shapes)))]
            lo = int(rng.integers(0, 95))
            mask = (dims["d"] >= lo) & (dims["d"] < lo + int(rng.integers(1, 20)))
        group = np.zeros(h.size, dtype=np.int64)
        for k in keys:
            group = group * 100 + dims[k]
        g = group[mask]
        order = np.argsort(g, kind="stable")  # h is sorted, so each cell stays sorted
        hv, gv = h[mask][order], g[order]
        _, counts = np.unique(gv, return_counts=True)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        units = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(hv))
        start = time.perf_counter()
        with domain.engine.begin() as c:
            history.record(
                c,
                job_id=f"J-hist-{r:04d}",
                scenario_id=f"S-2026-{100 + r % 7:03d}",
                output_name="result",
                datasets=["people"],
                units=units,
                status="released",
            )
        spent += time.perf_counter() - start
    return spent


def run(units: int, releases: int) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory()
    domain = init_domain(Settings(home=Path(tmp.name) / "home", audit_checkpoint_every=1000))
    conn = duckdb.connect()
    t0 = time.perf_counter()
    population(conn, units)
    gen_s = time.perf_counter() - t0
    history = CellHistory(domain.engine, domain.keys)
    with domain.engine.begin() as c:
        salt = history.unit_salt(c)
    record_s = build_history(conn, domain, history, salt, releases)

    plain_sql = (
        "SELECT district, age, count(*) AS n, sum(income) AS total_income FROM people "
        "GROUP BY district, age ORDER BY district, age"
    )
    plain_s, _ = timed(lambda: conn.sql(plain_sql).to_arrow_table(), repeat=5)
    stats_sql = cell_stats_sql("people", ["district", "age"], MEASURES, "person_id", salt)
    stats_s, _ = timed(lambda: conn.sql(stats_sql).to_arrow_table(), repeat=5)
    output = run_aggregate(
        conn, "people", ["district", "age"], MEASURES, "person_id", salt, datasets=("people",)
    )
    assert output.table.num_rows == 10_000, output.table.num_rows
    thresholds = Thresholds(min_cell_units=10, rounding_base=None)

    index_s, index = timed(
        lambda: IdentifierIndex.from_duckdb(conn, {"people": "people"}, CATALOG), repeat=1
    )
    with domain.engine.connect() as c:
        cold_s, hist = timed(
            lambda: CellHistory(domain.engine, domain.keys).index(
                c, ["people"], thresholds.min_cell_units
            ),
            repeat=1,
        )
        history.index(c, ["people"], thresholds.min_cell_units)  # warm the cache
        warm_load_s, hist = timed(lambda: history.index(c, ["people"], thresholds.min_cell_units))
    sources = {"people": DuckDBSource(conn, "people", "people")}
    # the same history without the five near-copies of the output (the attack case)
    near = {f"J-hist-{r:04d}" for r in range(10, 15)}
    typical = DifferencingIndex(
        [e for e in hist.earlier if e.ref["job_id"] not in near], thresholds.min_cell_units
    )

    parts: dict[str, Callable[[], Any]] = {
        "row_level": lambda: check_row_level(output, sources, thresholds),
        "identifiers": lambda: check_identifiers(output, index),
        "small_cells": lambda: check_small_cells(output, thresholds),
        "dominance": lambda: check_dominance(output, thresholds),
        "rounding": lambda: check_rounding(output, Thresholds(rounding_base=5)),
        "differencing": lambda: check_differencing(output, typical, thresholds),
    }
    per: dict[str, float] = {}
    found: dict[str, list[str]] = {}
    for name, fn in parts.items():
        per[name], findings = timed(fn)
        found[name] = sorted({f"{f.severity}" for f in findings})
    per["history index refresh (warm, per output)"] = warm_load_s
    found["history index refresh (warm, per output)"] = []
    checks_s = sum(per.values())
    attack_s, attack = timed(lambda: check_differencing(output, hist, thresholds))
    attack_pairs = sum(f.evidence.get("pair_count", 0) for f in attack)
    return {
        "attack_s": attack_s,
        "attack_pairs": attack_pairs,
        "attack_checks_s": checks_s - per["differencing"] + attack_s,
        "units": units,
        "releases": releases,
        "history_cells": len(hist),
        "cells": output.table.num_rows,
        "gen_s": gen_s,
        "record_s": record_s,
        "plain_s": plain_s,
        "stats_s": stats_s,
        "index_s": index_s,
        "cold_s": cold_s,
        "warm_load_s": warm_load_s,
        "per": per,
        "found": found,
        "checks_s": checks_s,
        "ratio": checks_s / stats_s,
        "dataset": output,
    }


def render(r: dict[str, Any]) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        SECTION,
        "",
        f"`.venv/bin/python benchmarks/egress_checks.py --units {r['units']} "
        f"--history {r['releases']}` on {os.cpu_count()} CPU(s) ({cpu}), "
        f"DuckDB {duckdb.__version__}, Python {platform.python_version()}.",
        "",
        f"Output: `GROUP BY district, age` over {r['units']:,} people, {r['cells']:,} cells "
        f"(count, sum). History: {r['releases']:,} earlier releases "
        f"({r['history_cells']:,} cells, sealed in SQLite) over the same people — groupings "
        "by district, age band, sex and income band with random filters. Five of them are "
        "near-copies of the output (same grouping, one income band left out): the "
        "differencing attack. The table compares against the other releases; the attack "
        "case is below it.",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| DuckDB: the operator's plain query (reference) | {r['plain_s']:.3f} |",
        f"| DuckDB: the trusted statistics query (units, top contributions, unit hashes) "
        f"| **{r['stats_s']:.3f}** |",
    ]
    for name, s in r["per"].items():
        if name.startswith("history"):
            lines.append(f"| {name} | {s:.3f} |")
            continue
        tags = ", ".join(r["found"][name]) or "none"
        lines.append(f"| check `{name}` (findings: {tags}) | {s:.3f} |")
    lines += [
        f"| **all checks** | **{r['checks_s']:.3f}** ({100 * r['ratio']:.1f} % of the "
        "statistics query; goal < 20 %) |",
        f"| differencing with the five near-copies in the history too "
        f"({r['attack_pairs']:,} close pairs found and settled) | {r['attack_s']:.3f} |",
        f"| all checks, attack case | {r['attack_checks_s']:.3f} "
        f"({100 * r['attack_checks_s'] / r['stats_s']:.1f} %) |",
        "",
        "Apart from the per-output checks (paid once, not per output):",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| identifier index of the dataset version (SQL hashing) | {r['index_s']:.3f} |",
        f"| history index, cold: read + decrypt {r['releases']:,} rows + build | "
        f"{r['cold_s']:.3f} |",
        f"| recording the {r['releases']:,} earlier releases' sketches (all) | "
        f"{r['record_s']:.1f} |",
        "",
        "Median of 5 runs for the queries, 3 for the checks; single runs for the one-off "
        "steps (the machine's 2 cores are shared, so expect some noise). The "
        "differencing check compares against the warm index; every row-level query runs "
        "on the same DuckDB connection as the data, as it would inside the sandbox.",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace (or append) only the ``## egress_checks`` section of RESULTS.md."""
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.M | re.S)
    new = pattern.sub(text + "\n", old) if pattern.search(old) else old.rstrip() + "\n\n" + text
    RESULTS.write_text(new.rstrip() + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=1_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    result = run(args.units, args.history)
    text = render(result)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
