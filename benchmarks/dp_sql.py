"""Benchmark: the five DP SQL queries — the gate's own cost, the rewritten SQL next to raw
DuckDB, and (with ``--e2e``) whole jobs through the sandbox.

1. **Gate overhead** (goal: compile + noise + ledger < 10 ms per query): ``compile_query``,
   ``apply_noise`` on the exact table, and ``Ledger.charge_and_record`` into a real domain
   database (SQLite, audit entry included, the release sealed), each timed warm (median of
   ``--runs``) after one cold call.
2. **Rewritten SQL vs raw DuckDB** (goal: warm ≤ 1.5× raw at 10M rows), on the demo table
   (``shuyu.synthetic``, up to 5 rows per person): raw DuckDB over the plaintext Parquet file,
   cold (fresh connection, first run) and warm (median of later runs); the same for the
   rewritten SQL with the import's unit bound verified (the production path) and, for
   reference, without it (per-unit reservoir). The Arrow rows are the sandbox's situation:
   decrypted tables registered in a warm DuckDB session.
3. ``--e2e``: a demo domain (``shuyu demo``'s setup: users, scenario, encrypted import,
   sandbox image) and each query as a real job (``shuyu.jobs.submit`` + ``run_job``:
   compile, key release, hardened container, noise, ledger charge, egress checks), the
   first one cold and then warm.

Writes the ``## dp_sql`` section of ``benchmarks/RESULTS.md`` (other sections untouched).

    .venv/bin/python benchmarks/dp_sql.py                       # 1M and 10M rows
    .venv/bin/python benchmarks/dp_sql.py --rows 1000000 --no-write
    .venv/bin/python benchmarks/dp_sql.py --e2e --e2e-rows 1000000
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
import pyarrow.parquet as pq

from egress.dp import DatasetCatalog, apply_noise, compile_query
from egress.ledger import Budget
from shuyu.context import init_domain
from shuyu.settings import Settings
from shuyu.synthetic import demo_meta, write_demo_data

QUERIES: dict[str, str] = {
    "count": "SELECT COUNT(*) FROM residents",
    "count by district": "SELECT district, COUNT(*) FROM residents GROUP BY district",
    "sum(income) by district": "SELECT district, SUM(income) FROM residents GROUP BY district",
    "avg(age) by district, sex": (
        "SELECT district, sex, AVG(age) FROM residents GROUP BY district, sex"
    ),
    "count by benefit, district, age>=60": (
        "SELECT benefit_type, district, COUNT(*) FROM residents WHERE age >= 60 "
        "GROUP BY benefit_type, district"
    ),
}
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def once_ms(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def catalog(verified: bool) -> Callable[[str], DatasetCatalog]:
    cat = DatasetCatalog.from_meta(demo_meta(), name="residents", unit_bound_verified=verified)
    return lambda name: cat


def data_file(rows: int, cache: Path) -> Path:
    path = cache / f"residents-{rows}.parquet"
    if not path.exists():
        files = write_demo_data(cache / f"gen-{rows}", rows, seed=7)
        files.data_path.rename(path)
    return path


# -- 1. the gate's own cost -----------------------------------------------------------------


def gate_overhead(runs: int, home: Path, cache: Path) -> list[dict[str, Any]]:
    domain = init_domain(Settings(home=home / "gate-home", audit_checkpoint_every=1000))
    con = duckdb.connect()
    con.register("residents", pq.read_table(data_file(100_000, cache)))
    ledger = domain.ledger
    budget = Budget(epsilon=1e9, delta=1e-3)
    cat = catalog(True)
    rows = []
    counter = iter(range(10**9))
    for name, sql in QUERIES.items():
        compiled = compile_query(sql, cat, epsilon=1.0, delta=1e-8)
        exact = con.sql(compiled.rewritten_sql).to_arrow_table()

        def fresh(sql: str = sql) -> Any:
            # an ε never seen before: no cached conversion or OpenDP measurement
            return compile_query(sql, cat, epsilon=1.0 + next(counter) * 1e-7, delta=1e-8)

        warm_compile = median_ms(
            lambda sql=sql: compile_query(sql, cat, epsilon=1.0, delta=1e-8), runs
        )
        fresh_compile = median_ms(fresh, runs)
        warm_noise = median_ms(lambda c=compiled, e=exact: apply_noise(c, e), runs)
        # each charge is a new query (a new ε), so none is a free repeat; compiled and
        # noised beforehand so only the ledger transaction is timed
        pending = [(c, apply_noise(c, exact)) for c in (fresh() for _ in range(runs))]

        def charge(pending: list[Any] = pending) -> None:
            c, r = pending.pop()
            ledger.charge_and_record(
                domain.engine,
                scenario_id="S-bench",
                job_id=f"J-{next(counter)}",
                compiled=c,
                result=r,
                budget=budget,
            )

        ledger_ms = median_ms(charge, runs)
        rows.append(
            {
                "query": name,
                "compile": warm_compile,
                "fresh_compile": fresh_compile,
                "noise": warm_noise,
                "ledger": ledger_ms,
                "total": warm_compile + warm_noise + ledger_ms,
                "fresh_total": fresh_compile + warm_noise + ledger_ms,
                "groups": exact.num_rows,
            }
        )
    # the floor under any durable charge: one committed one-row transaction (fsync)
    import sqlalchemy as sa

    probe = sa.table("dp_bench_probe", sa.column("n"))
    with domain.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE dp_bench_probe (n INTEGER)")

    def commit_one() -> None:
        with domain.engine.begin() as conn:
            conn.execute(sa.insert(probe).values(n=1))

    floor = median_ms(commit_one, runs)
    for r in rows:
        r["commit_floor"] = floor
    domain.close()
    return rows


# -- 2. rewritten SQL vs raw DuckDB ------------------------------------------------------


def sql_times(rows: int, runs: int, cache: Path) -> list[dict[str, Any]]:
    path = data_file(rows, cache)
    out = []
    for name, sql in QUERIES.items():
        rewritten = compile_query(sql, catalog(True), epsilon=1.0).rewritten_sql
        bounded = compile_query(sql, catalog(False), epsilon=1.0).rewritten_sql
        row: dict[str, Any] = {"query": name}
        for label, q in (("raw", sql), ("dp", rewritten), ("dp_bounded", bounded)):
            con = duckdb.connect()
            con.execute(f"CREATE VIEW residents AS SELECT * FROM read_parquet('{path}')")
            row[f"{label}_cold"] = once_ms(lambda q=q, con=con: con.sql(q).to_arrow_table())
            n = runs if label != "dp_bounded" else max(1, runs // 2)
            row[f"{label}_warm"] = median_ms(lambda q=q, con=con: con.sql(q).to_arrow_table(), n)
            con.close()
        # the sandbox's situation: decrypted Arrow tables in a warm session
        con = duckdb.connect()
        con.register("residents", pq.read_table(path))
        for label, q in (("raw", sql), ("dp", rewritten)):
            con.sql(q).to_arrow_table()
            row[f"{label}_arrow"] = median_ms(
                lambda q=q, con=con: con.sql(q).to_arrow_table(), runs
            )
        con.close()
        out.append(row)
    return out


# -- 3. whole jobs through the sandbox -----------------------------------------------------


def e2e(rows: int, home: Path, runs: int) -> list[dict[str, Any]]:
    from shuyu import jobs
    from shuyu.demo import SCENARIO_ID, run_demo

    settings = Settings(home=home / f"e2e-{rows}")
    run_demo(settings, rows=rows, say=lambda m: None)
    from shuyu.context import open_domain

    domain = open_domain(settings)
    operator = domain.identity.get("operator")
    out = []
    n = 0
    for name, sql in QUERIES.items():
        times = []
        for _ in range(runs + 1):
            n += 1
            t = time.perf_counter()
            view = jobs.submit(
                domain,
                operator,
                SCENARIO_ID,
                kind="sql",
                code=sql,
                output_mode="dp_aggregate",
                epsilon=0.05 + n * 1e-6,
            )
            view = jobs.run_job(domain, view["id"])
            times.append((time.perf_counter() - t) * 1e3)
            if view["state"] in ("failed", "refused"):
                raise SystemExit(
                    f"{name}: job {view['id']} {view['state']} {view.get('error_code')}"
                )
        out.append({"query": name, "first": times[0], "warm": statistics.median(times[1:])})
    domain.close()
    return out


# -- report ----------------------------------------------------------------------------------


def render_gate(gate: list[dict[str, Any]], runs: int) -> str:
    floor = gate[0]["commit_floor"]
    lines = [
        "**Gate overhead** (in-process, exact aggregates from DuckDB; best of 3 rounds, each "
        f"the median of {runs}; ledger = one real charge into SQLite: lock, checks, charge, sealed "
        "release, audit entry, commit; *new ε* = a privacy parameter the process has not "
        "seen, so the ε→ρ conversion and the OpenDP measurements are built, not cached). "
        "Goal: compile + noise + ledger < 10 ms. On this disk one committed "
        f"one-row SQLite transaction (its fsync) takes **{floor:.2f} ms**: the floor under "
        "any durable charge.",
        "",
        "| query | groups | compile ms | noise ms | ledger ms | **total ms** | "
        "compile, new ε | total, new ε |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in gate:
        lines.append(
            f"| {r['query']} | {r['groups']} | {r['compile']:.2f} | {r['noise']:.2f} | "
            f"{r['ledger']:.2f} | **{r['total']:.2f}** | {r['fresh_compile']:.2f} | "
            f"{r['fresh_total']:.2f} |"
        )
    worst = max(r["fresh_total"] for r in gate)
    median = statistics.median(r["total"] for r in gate)
    lines += [
        "",
        f"Totals: median {median:.2f} ms; worst with a new ε {worst:.2f} ms: "
        + ("meets" if worst < 10 else "**misses**")
        + " the < 10 ms goal"
        + ("" if worst < 10 else f" (the commit alone is {floor:.1f} ms here)")
        + ". Compile + noise alone: at most "
        f"{max(r['compile'] + r['noise'] for r in gate):.2f} ms.",
        "",
    ]
    return "\n".join(lines)


def _goal_line(rows: int, table: list[dict[str, Any]]) -> str:
    """Which queries keep the rewritten SQL within 1.5× of raw DuckDB, warm."""
    over_file = [r["query"] for r in table if r["dp_warm"] > 1.5 * r["raw_warm"]]
    over_arrow = [r["query"] for r in table if r["dp_arrow"] > 1.5 * r["raw_arrow"]]
    worst_arrow = max(r["dp_arrow"] / r["raw_arrow"] for r in table)
    worst_file = max(r["dp_warm"] / r["raw_warm"] for r in table)
    return (
        f"Warm goal ≤ 1.5× raw at {rows:,} rows: in the sandbox's situation (Arrow) worst "
        f"{worst_arrow:.2f}× ({'met' if not over_arrow else 'over: ' + ', '.join(over_arrow)}); "
        f"over the Parquet file worst {worst_file:.2f}× "
        f"({'met' if not over_file else 'over: ' + ', '.join(over_file)})."
    )


def render(
    gate: list[dict[str, Any]],
    sql: dict[int, list[dict[str, Any]]],
    e2e_rows: dict[int, list[dict[str, Any]]],
    args: argparse.Namespace,
) -> str:
    load = os.getloadavg()[0]
    lines = [
        "## dp_sql",
        "",
        f"`python benchmarks/dp_sql.py {' '.join(args.argv)}`".replace(" `", "`"),
        f"— {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} cores (shared; load average {load:.1f} at the end), Python "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}. Demo table "
        "(`shuyu.synthetic`, up to 5 rows per person, `max_rows_per_unit` 5). "
        "ε = 1, δ = 1e-8 (zCDP, discrete Gaussian).",
        "",
    ]
    lines += render_gate(gate, args.runs * 3).splitlines()
    for rows, table in sql.items():
        lines += [
            f"**Rewritten SQL vs raw DuckDB, {rows:,} rows** (ms; cold = fresh connection, "
            "first run over the Parquet file; warm = median of later runs; Arrow = "
            "registered in-memory table, as in the sandbox's warm session).",
            "",
            "| query | raw cold | raw warm | DP cold | DP warm | DP/raw warm | "
            "raw Arrow | DP Arrow | DP/raw Arrow | DP + reservoir warm |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in table:
            lines.append(
                f"| {r['query']} | {r['raw_cold']:.0f} | {r['raw_warm']:.0f} | "
                f"{r['dp_cold']:.0f} | {r['dp_warm']:.0f} | "
                f"{r['dp_warm'] / r['raw_warm']:.2f}× | {r['raw_arrow']:.0f} | "
                f"{r['dp_arrow']:.0f} | {r['dp_arrow'] / r['raw_arrow']:.2f}× | "
                f"{r['dp_bounded_warm']:.0f} |"
            )
        lines += ["", _goal_line(rows, table), ""]
    for rows, table in e2e_rows.items():
        lines += [
            f"**End to end through the sandbox, {rows:,} rows** (ms per job: submit + "
            "run_job — compile, key release, hardened container, DuckDB, noise, ledger, "
            "egress checks; first job cold, then warm pool).",
            "",
            "| query | first job | warm job |",
            "|---|---:|---:|",
        ]
        lines += [f"| {r['query']} | {r['first']:.0f} | {r['warm']:.0f} |" for r in table]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_section(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## dp_sql\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda m: text + "\n", old)
    else:
        new = old.rstrip() + "\n\n" + text
    RESULTS.write_text(new)


def replace_gate_block(block: str) -> None:
    """Swap the gate table inside the existing ``## dp_sql`` section, keep the rest."""
    text = RESULTS.read_text()
    pattern = re.compile(r"^\*\*Gate overhead\*\*.*?(?=^\*\*Rewritten SQL)", re.S | re.M)
    if not pattern.search(text):
        raise SystemExit("no gate block in RESULTS.md: run the whole benchmark first")
    RESULTS.write_text(pattern.sub(lambda m: block + "\n", text, count=1))


def main() -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--e2e", action="store_true", help="also run whole jobs (Docker)")
    p.add_argument("--e2e-rows", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "shuyu-dp-bench")
    p.add_argument("--no-write", action="store_true")
    p.add_argument(
        "--gate-only",
        action="store_true",
        help="only re-measure the gate overhead and replace that block of the section",
    )
    args = p.parse_args()
    args.argv = sys.argv[1:]
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # the machine is shared: the best of three rounds (each a median) is the gate's
        # own cost with the least interference from other processes' disk and CPU use
        rounds = [
            gate_overhead(args.runs * 3, Path(tmp) / f"round{i}", args.cache) for i in range(3)
        ]
        gate = [min(rs, key=lambda r: r["fresh_total"]) for rs in zip(*rounds, strict=True)]
        for r in gate:
            print(
                f"gate {r['query']:40s} total {r['total']:.2f} ms "
                f"(compile {r['compile']:.2f}, noise {r['noise']:.2f}, ledger {r['ledger']:.2f})"
            )
        if args.gate_only:
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            block = render_gate(gate, args.runs * 3).replace(
                "**Gate overhead** (",
                f"**Gate overhead** (re-measured {stamp} with `python benchmarks/dp_sql.py "
                f"{' '.join(args.argv)}`, load average {os.getloadavg()[0]:.1f}; ",
                1,
            )
            print(block)
            if not args.no_write:
                replace_gate_block(block)
            return
        sql = {}
        for rows in args.rows:
            sql[rows] = sql_times(rows, args.runs, args.cache)
            for r in sql[rows]:
                print(
                    f"{rows:>10,} {r['query']:40s} raw {r['raw_warm']:.0f} ms, "
                    f"DP {r['dp_warm']:.0f} ms ({r['dp_warm'] / r['raw_warm']:.2f}x), "
                    f"Arrow {r['dp_arrow'] / r['raw_arrow']:.2f}x"
                )
        e2e_rows = {}
        if args.e2e:
            for rows in args.e2e_rows:
                e2e_rows[rows] = e2e(rows, Path(tmp), max(2, args.runs // 2))
                for r in e2e_rows[rows]:
                    print(
                        f"e2e {rows:,} {r['query']:40s} first {r['first']:.0f} ms, "
                        f"warm {r['warm']:.0f} ms"
                    )
    text = render(gate, sql, e2e_rows, args)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
