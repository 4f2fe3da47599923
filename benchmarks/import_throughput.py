"""Import throughput: `shuyu` encrypted import vs. plain pyarrow Parquet, in the same run.

Generates the synthetic demo table (Parquet source), then runs, each in its own child
process so peak memory is measured per side:

* **baseline** — read the source in record batches and write it as *unencrypted* Parquet
  with the same row-group size and compression as the store;
* **shuyu import** — ``DatasetStore.import_dataset`` into a fresh domain: cast and check
  every batch against META.yaml, count rows per privacy unit, encrypt, hash, commit.

Goal: import ≥ 70 % of the baseline's rows/s, peak RSS < 2 GiB at 10,000,000 rows.

    .venv/bin/python benchmarks/import_throughput.py                 # 10,000,000 rows
    .venv/bin/python benchmarks/import_throughput.py --rows 200000   # quick run

Prints a markdown table and writes it as the ``## import_throughput`` section of
``benchmarks/RESULTS.md`` (other sections are left as they are).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "RESULTS.md"
SECTION = "import_throughput"
GOAL_SPEED_RATIO = 0.70
GOAL_PEAK_RSS_BYTES = 2 * 1024**3


# --- the two sides, each run in a child process ------------------------------------------------


def _baseline(source: Path, work: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from enclave.store import DEFAULT_COMPRESSION, DEFAULT_ROW_GROUP_ROWS

    start = time.perf_counter()
    out = work / "plain.parquet"
    pf = pq.ParquetFile(source)
    rows = 0
    buffer: list[pa.RecordBatch] = []
    buffered = 0
    with pq.ParquetWriter(out, pf.schema_arrow, compression=DEFAULT_COMPRESSION) as writer:
        for batch in pf.iter_batches(batch_size=128 * 1024):
            buffer.append(batch)
            buffered += batch.num_rows
            rows += batch.num_rows
            if buffered >= DEFAULT_ROW_GROUP_ROWS:
                table = pa.Table.from_batches(buffer)
                writer.write_table(table.slice(0, DEFAULT_ROW_GROUP_ROWS))
                rest = table.slice(DEFAULT_ROW_GROUP_ROWS)
                buffer, buffered = rest.to_batches(), rest.num_rows
        if buffered:
            writer.write_table(pa.Table.from_batches(buffer))
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "out_bytes": out.stat().st_size}


def _import(source: Path, work: Path) -> dict[str, Any]:
    from enclave.catalog import load_meta
    from shuyu.context import init_domain
    from shuyu.settings import Settings

    domain = init_domain(Settings(home=work / "home"))
    meta = load_meta(source.with_name("residents.META.yaml"))
    start = time.perf_counter()
    rec = domain.store.import_dataset(source, name="residents", meta=meta, actor="benchmark")
    seconds = time.perf_counter() - start
    return {
        "rows": rec.num_rows,
        "seconds": seconds,
        "out_bytes": rec.num_bytes,
        "unit_bound_verified": rec.unit_bound_verified,
    }


def _child(side: str, source: Path, work: Path) -> dict[str, Any]:
    """Run one side in a fresh interpreter; its own peak RSS comes from wait4."""
    cmd = [sys.executable, __file__, "--child", side, "--source", str(source), "--work", str(work)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_bytes"] = usage.ru_maxrss * 1024  # Linux reports KiB
    return result


# --- report ----------------------------------------------------------------------------------


def _table(
    rows: int, source_bytes: int, gen_s: float, base: dict[str, Any], imp: dict[str, Any]
) -> str:
    def line(label: str, r: dict[str, Any]) -> str:
        rps = r["rows"] / r["seconds"]
        mbps = source_bytes / 1024**2 / r["seconds"]
        return (
            f"| {label} | {r['seconds']:.2f} | {rps:,.0f} | {mbps:,.1f} | "
            f"{r['out_bytes'] / 1024**2:,.1f} | {r['peak_rss_bytes'] / 1024**2:,.0f} |"
        )

    ratio = (imp["rows"] / imp["seconds"]) / (base["rows"] / base["seconds"])
    peak = imp["peak_rss_bytes"]
    ok_speed = "meets" if ratio >= GOAL_SPEED_RATIO else "MISSES"
    ok_mem = "meets" if peak < GOAL_PEAK_RSS_BYTES else "MISSES"
    return "\n".join(
        [
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}: "
            f"{rows:,} synthetic rows, Parquet source of {source_bytes / 1024**2:,.1f} MiB "
            f"(generated in {gen_s:.1f} s); load average {os.getloadavg()[0]:.1f} at the end "
            "(the machine is shared: both sides ran under the same load).",
            "",
            "Command: `.venv/bin/python benchmarks/import_throughput.py"
            + (f" --rows {rows}`" if rows != 10_000_000 else "`"),
            "",
            "| side | seconds | rows/s | source MB/s | output MiB | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|",
            line("pyarrow, unencrypted Parquet (baseline)", base),
            line("shuyu import (check + unit count + encrypt + hash + commit)", imp),
            "",
            f"Import speed is **{ratio:.0%}** of the baseline ({ok_speed} the ≥ 70 % goal); "
            f"import peak RSS **{peak / 1024**2:,.0f} MiB** ({ok_mem} the < 2 GiB goal). "
            f"Privacy-unit bound verified: {imp.get('unit_bound_verified')}. Same row-group size "
            "and compression on both sides; the source is read in record batches by both.",
        ]
    )


def write_section(body: str, path: Path = RESULTS) -> None:
    """Replace (or append) this benchmark's section; every other section stays untouched."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    section = f"## {SECTION}\n\n{body}\n"
    pattern = re.compile(rf"^## {SECTION}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="Do not update RESULTS.md.")
    p.add_argument("--child", choices=["baseline", "import"], help=argparse.SUPPRESS)
    p.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        run = _baseline if args.child == "baseline" else _import
        print(json.dumps(run(args.source, args.work)))
        return

    from shuyu.synthetic import write_demo_data

    with tempfile.TemporaryDirectory(prefix="shuyu-bench-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        files = write_demo_data(work / "src", args.rows, seed=args.seed)
        gen_s = time.perf_counter() - start
        print(f"generated {files.rows:,} rows in {gen_s:.1f} s", file=sys.stderr)
        (work / "base").mkdir()
        (work / "imp").mkdir()
        base = _child("baseline", files.data_path, work / "base")
        print(f"baseline: {base['seconds']:.2f} s", file=sys.stderr)
        imp = _child("import", files.data_path, work / "imp")
        print(f"import:   {imp['seconds']:.2f} s", file=sys.stderr)
        body = _table(args.rows, files.data_path.stat().st_size, gen_s, base, imp)
    print(body)
    if not args.no_write:
        write_section(body)


if __name__ == "__main__":
    main()
