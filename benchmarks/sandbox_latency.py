"""Sandbox latency: the same queries three ways, in the same run.

    .venv/bin/python benchmarks/sandbox_latency.py [--rows 1000000,10000000] [--repeats 3]

For each size, synthetic demo rows (``shuyu.synthetic``) are written as plaintext Parquet
and imported into a throw-away domain (encrypted, ``enclave.store``). Then, for
``SELECT count(*)`` and a group-by aggregate:

(a) DuckDB in this process on the plaintext Parquet file (the baseline);
(b) a cold sandbox: a fresh hardened container per query (create, start, Python +
    DuckDB import, decrypt the columns, query, answer, remove);
(c) a warm-pool sandbox: the operator's session already holds the decrypted tables
    (one untimed query first), so a query is a job line in and an Arrow answer out.

Median of ``--repeats`` runs each. Writes the ``## sandbox_latency`` section of
``benchmarks/RESULTS.md`` (only that section) and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from enclave.catalog import load_meta
from enclave.keys import FOOTER, data_key_id
from enclave.store import DatasetStore
from sandbox.docker_executor import DockerExecutor
from sandbox.engine import docker_client
from sandbox.executor import run_job
from sandbox.image import build_image
from sandbox.job import JobSpec, TableGrant
from sandbox.limits import SandboxLimits
from sandbox.pool import WarmPool
from shuyu.context import init_domain
from shuyu.settings import Settings
from shuyu.synthetic import write_demo_data

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
QUERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "count(*)": ("SELECT count(*) AS n FROM residents", ("district",)),
    "group-by aggregate": (
        "SELECT district, count(*) AS n, avg(income) AS mean_income, max(age) AS oldest "
        "FROM residents GROUP BY district ORDER BY district",
        ("district", "income", "age"),
    ),
}


def _median(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _bench_size(
    rows: int, repeats: int, client: Any, image_id: str, work: Path
) -> list[dict[str, Any]]:
    src = work / f"src-{rows}"
    files = write_demo_data(src, rows, seed=11)
    plain = files.data_path
    domain = init_domain(Settings(home=work / f"home-{rows}"))
    meta = load_meta(files.meta_path)
    store = DatasetStore(domain.engine, domain.keys, domain.audit, domain.settings.store_dir)
    ds = store.import_dataset(plain, name="residents", meta=meta, actor="bench")
    grades = {meta.column_grade(c) for c in meta.columns}
    with domain.engine.connect() as conn:
        keys = domain.keys.get_many(
            conn, [data_key_id(ds.id, FOOTER), *(data_key_id(ds.id, g) for g in sorted(grades))]
        )
    limits = SandboxLimits(memory_bytes=3 * 1024**3, cpus=2.0, timeout_s=600,
                           max_output_bytes=64 * 1024**2)  # fmt: skip
    store_dir = domain.settings.store_dir
    cold = DockerExecutor(client, image_id, limits, store_dir)
    pool = WarmPool(client, image_id, limits, store_dir, size=1, idle_s=3600)
    pool.start(reaper_interval_s=3600)
    counter = iter(range(10**9))

    def spec(sql: str, cols: tuple[str, ...]) -> JobSpec:
        return JobSpec(
            job_id=f"J-bench-{rows}-{next(counter)}", kind="sql", code=sql,
            tables={"residents": TableGrant(ds.path, cols)}, keys=keys,
            operator="bench", scenario_id="S-bench",
        )  # fmt: skip

    out: list[dict[str, Any]] = []
    try:
        con = duckdb.connect()
        for label, (sql, cols) in QUERIES.items():
            plain_sql = sql.replace("FROM residents", f"FROM read_parquet('{plain}')")
            con.sql(plain_sql).fetchall()  # warm the OS page cache for the baseline
            t_duck, expected = _median(lambda q=plain_sql: con.sql(q).fetchall(), repeats)
            t_cold, got_cold = _median(lambda s=sql, c=cols: run_job(cold, spec(s, c)), repeats)
            pool.run(spec(sql, cols))  # the session decrypts and keeps the columns
            t_warm, got_warm = _median(lambda s=sql, c=cols: pool.run(spec(s, c)), repeats)
            for got in (got_cold, got_warm):
                assert len(got.result.to_pylist()) == len(expected)
            out.append({"rows": rows, "query": label, "duckdb": t_duck, "cold": t_cold,
                        "warm": t_warm})  # fmt: skip
            print(f"{rows:>11,} {label:<20} duckdb {t_duck:7.3f}s  cold {t_cold:7.3f}s  "
                  f"warm {t_warm:7.3f}s", flush=True)  # fmt: skip
    finally:
        pool.close()
        domain.close()
    return out


def _section(results: list[dict[str, Any]], args: argparse.Namespace, load: float) -> str:
    lines = [
        "## sandbox_latency",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared; load average {load:.1f} at the start), Python "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}, Docker engine with runc. "
        f"Median of {args.repeats} runs per cell. Synthetic demo rows, imported encrypted.",
        "",
        f"Command: `.venv/bin/python benchmarks/sandbox_latency.py --rows {args.rows} "
        f"--repeats {args.repeats}`",
        "",
        "| rows | query | (a) DuckDB in-process, plaintext s | (b) cold sandbox s | "
        "(c) warm session s | cold / DuckDB | warm / DuckDB |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['query']} | {r['duckdb']:.3f} | {r['cold']:.3f} | "
            f"{r['warm']:.3f} | {r['cold'] / r['duckdb']:.1f}× | {r['warm'] / r['duckdb']:.1f}× |"
        )
    lines += [
        "",
        "(a) reads plaintext Parquet; (b) and (c) read the encrypted store and decrypt only "
        "the query's columns with the released keys. (b) includes container create, start, "
        "interpreter and DuckDB import, decryption, the query, the framed Arrow answer and "
        "removal; (c) is a job line in and an Arrow answer out of a session that already holds "
        "the decrypted columns (the first, untimed query of the session pays for decryption).",
        "",
    ]
    return "\n".join(lines)


def _write(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(r"^## sandbox_latency\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1000000,10000000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    client = docker_client(timeout_s=900)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shuyu" / "image"
    image_id = build_image(client, "shuyu-sandbox", cache).image_id
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shuyu-bench-") as tmp:
        for rows in (int(r) for r in args.rows.split(",")):
            results += _bench_size(rows, args.repeats, client, image_id, Path(tmp))
    section = _section(results, args, load)
    print(section)
    if not args.no_write:
        _write(section)


if __name__ == "__main__":
    sys.exit(main())
