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

Median of ``--repeats`` runs each.

Then the five queries of ``benchmarks/throughput.py`` the way a DP job runs them: the
DP-rewritten SQL (``egress.dp.compile_query(...).rewritten_sql``) in the warm session, with
the columns and keys ``shuyu.jobs`` grants (the query's columns plus the privacy unit, the
footer key and one key per grade), next to raw DuckDB in this process on the plaintext
Parquet file (the throughput benchmark's baseline: the operator's SQL as written) and the
rewritten SQL on that same file. Median wall time of ``--dp-repeats`` runs, and CPU per
query: this process's for DuckDB, the container's cgroup for the sandbox.

Writes the ``## sandbox_latency`` section of ``benchmarks/RESULTS.md`` (only that section)
and prints it.
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
from throughput import QUERIES as DP_QUERIES

from egress.dp import DatasetCatalog, compile_query
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

# What shuyu.jobs grants each DP query: the columns it reads plus the privacy unit.
DP_COLUMNS: dict[str, tuple[str, ...]] = {
    "count": ("person_id",),
    "count by district": ("district", "person_id"),
    "sum(income) by district": ("district", "income", "person_id"),
    "avg(age) by district, sex": ("age", "district", "person_id", "sex"),
    "count by benefit, district, age>=60": ("age", "benefit_type", "district", "person_id"),
}

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


def _cpu_median(fn: Callable[[], Any], repeats: int, cpu: Callable[[], float]) -> float:
    """Median CPU seconds of ``fn`` as counted by ``cpu`` (a monotonic CPU clock)."""
    used = []
    for _ in range(repeats):
        c0 = cpu()
        fn()
        used.append(cpu() - c0)
    return statistics.median(used)


def _container_cpu_s(container_id: str) -> float:
    """CPU seconds the container has used so far (its cgroup, v1 or v2)."""
    for path, scale in (
        (f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage", 1e-9),
        (f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat", 1e-6),
        (f"/sys/fs/cgroup/docker/{container_id}/cpu.stat", 1e-6),
    ):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if path.endswith("cpu.stat"):
            text = next(ln.split()[1] for ln in text.splitlines() if ln.startswith("usage_usec"))
        return int(text.strip()) * scale
    raise RuntimeError("cannot read the sandbox container's CPU usage")


def _bench_size(
    rows: int, repeats: int, dp_repeats: int, client: Any, image_id: str, work: Path,
    baseline_id: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
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
    base: WarmPool | None = None
    if baseline_id:
        base = WarmPool(client, baseline_id, limits, store_dir, size=1, idle_s=3600)
        base.start(reaper_interval_s=3600)
    counter = iter(range(10**9))

    def spec(sql: str, cols: tuple[str, ...], key_ids: list[str] | None = None) -> JobSpec:
        given = keys if key_ids is None else {k: keys[k] for k in key_ids}
        return JobSpec(
            job_id=f"J-bench-{rows}-{next(counter)}", kind="sql", code=sql,
            tables={"residents": TableGrant(ds.path, cols)}, keys=given,
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
            row = {"rows": rows, "query": label, "duckdb": t_duck, "cold": t_cold,
                   "warm": t_warm}  # fmt: skip
            if base is not None:
                base.run(spec(sql, cols))
                row["base"], _ = _median(lambda s=sql, c=cols: base.run(spec(s, c)), repeats)
            out.append(row)
            print(f"{rows:>11,} {label:<20} duckdb {t_duck:7.3f}s  cold {t_cold:7.3f}s  "
                  f"warm {t_warm:7.3f}s  baseline warm {row.get('base', 0):7.3f}s",
                  flush=True)  # fmt: skip
        dp = _bench_dp(rows, dp_repeats, ds, meta, plain, con, pool, spec, base)
    finally:
        pool.close()
        if base is not None:
            base.close()
        domain.close()
    return out, dp


def _bench_dp(
    rows: int, repeats: int, ds: Any, meta: Any, plain: Path, con: Any, pool: WarmPool,
    spec: Callable[..., JobSpec], base: WarmPool | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The five throughput queries as DP jobs run them, in the warm session and in DuckDB
    (and in a warm session of the baseline image, when given)."""
    cat = DatasetCatalog.from_meta(
        meta.to_json(), name="residents", version=ds.version,
        unit_bound_verified=ds.unit_bound_verified,
    )  # fmt: skip
    session = pool.acquire("bench", "S-bench")
    container_id = session.container.id
    base_id = base.acquire("bench", "S-bench").container.id if base is not None else ""
    out: list[dict[str, Any]] = []
    for label, sql in DP_QUERIES:
        dp_sql = compile_query(sql, lambda _n: cat, epsilon=0.01, delta=1e-8).rewritten_sql
        cols = DP_COLUMNS[label]
        key_ids = [data_key_id(ds.id, FOOTER)]
        key_ids += [
            data_key_id(ds.id, g) for g in sorted({meta.column_grade(meta.column(c)) for c in cols})
        ]
        src = f"read_parquet('{plain}')"
        raw_sql = sql.replace("FROM residents", f"FROM {src}")
        plain_dp = dp_sql.replace('"residents"', src)
        expected = con.sql(plain_dp).fetchall()
        con.sql(raw_sql).fetchall()
        t_raw, _ = _median(lambda q=raw_sql: con.sql(q).fetchall(), repeats)
        c_raw = _cpu_median(lambda q=raw_sql: con.sql(q).fetchall(), repeats, time.process_time)
        t_plain_dp, _ = _median(lambda q=plain_dp: con.sql(q).fetchall(), repeats)

        def job(q: str = dp_sql, c: tuple[str, ...] = cols, k: list[str] = key_ids) -> Any:
            return pool.run(spec(q, c, k))

        got = job()  # decrypts any column the session does not hold yet
        assert sorted(got.result.to_pylist(), key=repr) == sorted(
            (dict(zip(got.result.column_names, r, strict=True)) for r in expected), key=repr
        ), label
        t_warm, _ = _median(job, repeats)
        c_warm = _cpu_median(job, repeats, lambda: _container_cpu_s(container_id))
        row = {"rows": rows, "query": label, "raw": t_raw, "raw_cpu": c_raw,
               "plain_dp": t_plain_dp, "warm": t_warm, "warm_cpu": c_warm}  # fmt: skip
        if base is not None:

            def base_job(q: str = dp_sql, c: tuple[str, ...] = cols, k: list[str] = key_ids) -> Any:
                return base.run(spec(q, c, k))

            base_job()
            row["base"], _ = _median(base_job, repeats)
            row["base_cpu"] = _cpu_median(base_job, repeats, lambda: _container_cpu_s(base_id))
        out.append(row)
        print(f"{rows:>11,} {label:<36} raw {t_raw * 1e3:7.1f} ms (cpu {c_raw * 1e3:6.1f})  "
              f"dp-on-parquet {t_plain_dp * 1e3:7.1f} ms  warm {t_warm * 1e3:7.1f} ms "
              f"(sandbox cpu {c_warm * 1e3:6.1f})  baseline warm "
              f"{row.get('base', 0) * 1e3:7.1f} ms (cpu {row.get('base_cpu', 0) * 1e3:6.1f})",
              flush=True)  # fmt: skip
    return out


def _section(
    results: list[dict[str, Any]], dp: list[dict[str, Any]], args: argparse.Namespace,
    load: float,
) -> str:  # fmt: skip
    base = bool(args.baseline_image)
    command = (
        f"Command: `.venv/bin/python benchmarks/sandbox_latency.py --rows {args.rows} "
        f"--repeats {args.repeats} --dp-repeats {args.dp_repeats}"
        + (f" --baseline-image {args.baseline_image[:19]}`" if base else "`")
    )
    lines = [
        "## sandbox_latency",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared; load average {load:.1f} at the start), Python "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}, Docker engine with runc. "
        f"Median of {args.repeats} runs per cell. Synthetic demo rows, imported encrypted.",
        "",
        command,
        "",
    ]
    if base:
        lines += [
            f"*baseline* = the same warm cells on an earlier sandbox image "
            f"(`{args.baseline_image[:19]}`), in the same run: {args.baseline_note}",
            "",
        ]
    lines += [
        "| rows | query | (a) DuckDB in-process, plaintext s | (b) cold sandbox s | "
        "(c) warm session s | cold / DuckDB | warm / DuckDB |"
        + (" (c) baseline s |" if base else ""),
        "|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if base else ""),
    ]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['query']} | {r['duckdb']:.3f} | {r['cold']:.3f} | "
            f"{r['warm']:.3f} | {r['cold'] / r['duckdb']:.1f}× | {r['warm'] / r['duckdb']:.1f}× |"
            + (f" {r['base']:.3f} |" if base else "")
        )
    lines += [
        "",
        "(a) reads plaintext Parquet; (b) and (c) read the encrypted store and decrypt only "
        "the query's columns with the released keys. (b) includes container create, start, "
        "interpreter and DuckDB import, decryption, the query, the framed Arrow answer and "
        "removal; (c) is a job line in and an Arrow answer out of a session that already holds "
        "the decrypted columns (the first, untimed query of the session pays for decryption).",
        "",
        f"The five queries of `benchmarks/throughput.py` as DP jobs run them (median of "
        f"{args.dp_repeats} runs; ms). *raw DuckDB* runs the operator's SQL as written on the "
        "plaintext Parquet file in this process (the throughput benchmark's baseline); *DP SQL "
        "on Parquet* runs the DP-rewritten SQL (`compile_query(...).rewritten_sql`) on that "
        "file; *warm session* sends the rewritten SQL as a job to the operator's warm sandbox "
        "with the columns and keys `shuyu.jobs` grants (the query's columns plus `person_id`, "
        "the footer key and one key per grade) — job line in, key proofs, query, Arrow answer "
        "out, host side included. CPU: this process for DuckDB, the container's cgroup for "
        "the sandbox.",
        "",
        "| rows | query | raw DuckDB ms | raw DuckDB CPU ms | DP SQL on Parquet ms | "
        "warm session ms | sandbox CPU ms | warm / raw |"
        + (" baseline warm ms | baseline sandbox CPU ms |" if base else ""),
        "|---:|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if base else ""),
    ]
    sizes = sorted({r["rows"] for r in dp})
    totals = []
    for n in sizes:
        mine = [r for r in dp if r["rows"] == n]
        total = {"rows": n, "query": "**all five**"}
        for key in ("raw", "raw_cpu", "plain_dp", "warm", "warm_cpu", "base", "base_cpu"):
            if all(key in r for r in mine):
                total[key] = sum(r[key] for r in mine)
        totals.append(total)
    for r in [*dp, *totals]:
        lines.append(
            f"| {r['rows']:,} | {r['query']} | {r['raw'] * 1e3:.1f} | {r['raw_cpu'] * 1e3:.1f} | "
            f"{r['plain_dp'] * 1e3:.1f} | {r['warm'] * 1e3:.1f} | {r['warm_cpu'] * 1e3:.1f} | "
            f"{r['warm'] / r['raw']:.1f}× |"
            + (f" {r['base'] * 1e3:.1f} | {r['base_cpu'] * 1e3:.1f} |" if base else "")
        )
    lines.append("")
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
    parser.add_argument("--dp-repeats", type=int, default=15)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--baseline-image",
        help="also run the warm cells on this earlier image ID, in the same run (before/after)",
    )
    parser.add_argument(
        "--baseline-note", default="", help="what the baseline image is (printed with it)"
    )
    parser.add_argument(
        "--image",
        help="run on this image ID instead of building the current one (e.g. to "
        "measure an earlier agent next to the current one)",
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]
    client = docker_client(timeout_s=900)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shuyu" / "image"
    image_id = args.image or build_image(client, "shuyu-sandbox", cache).image_id
    results: list[dict[str, Any]] = []
    dp: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shuyu-bench-") as tmp:
        for rows in (int(r) for r in args.rows.split(",")):
            size, size_dp = _bench_size(
                rows,
                args.repeats,
                args.dp_repeats,
                client,
                image_id,
                Path(tmp),
                args.baseline_image,
            )
            results += size
            dp += size_dp
    section = _section(results, dp, args, load)
    print(section)
    if not args.no_write:
        _write(section)


if __name__ == "__main__":
    sys.exit(main())
