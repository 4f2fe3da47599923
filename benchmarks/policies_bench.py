"""Costs of the policy layer: decisions, authentication, and desensitized sample views.

    PYTHONPATH=. .venv/bin/python benchmarks/policies_bench.py [--rows 1000000]

* ``decide()`` alone (pure function) and ``AccessService.decide_job`` (gather from SQLite,
  decide, write the audit entry) per call;
* ``IdentityService.authenticate`` per call (one indexed lookup by SHA-256);
* materializing the sample view of ``--rows`` rows (HMAC-SHA256 pseudonyms computed in
  DuckDB SQL, generalization, keyed 10 % sampling) against raw DuckDB copying the same
  table with no desensitization, in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from policies.decision import JobAccess, decide
from policies.desensitize import (
    SampleColumn,
    load_desensitize_rules,
    pseudonym_key_variables,
    sample_view,
)
from policies.scenario import SampleSettings
from shuyu.context import init_domain
from shuyu.settings import Settings
from tests.policies.factories import SID, build_world


def per_call_us(fn: Callable[[], object], n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    return statistics.median(times), times[int(0.95 * len(times))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        domain = init_domain(Settings(home=Path(tmp) / "home"))
        w = build_world(domain)
        job = JobAccess(
            {"residents": {"birth_year", "district_code"}, "clinic_visits": {"diagnosis_code"}},
            "sql",
            "dp_aggregate",
            epsilon=0.5,
        )
        with domain.engine.connect() as conn:
            inputs = w.access.gather(conn, "op", SID, job)
        assert decide(**inputs).allowed
        med, p95 = per_call_us(lambda: decide(**inputs), 5000)
        print(f"decide() pure:              median {med:8.1f} us   p95 {p95:8.1f} us")
        med, p95 = per_call_us(lambda: w.access.decide_job("op", SID, job), 300)
        print(f"decide_job (SQLite+audit):  median {med:8.1f} us   p95 {p95:8.1f} us")
        token = w.identity.create_token("op").secret
        med, p95 = per_call_us(lambda: w.identity.authenticate(token), 1000)
        print(f"authenticate (SQLite):      median {med:8.1f} us   p95 {p95:8.1f} us")
        domain.close()

    con = duckdb.connect()
    con.execute(
        f"""CREATE TABLE residents AS SELECT
              'P' || CAST(i AS VARCHAR) AS person_id, 18 + i % 70 AS age,
              '4301' || CAST(10 + i % 9 AS VARCHAR) AS district_code,
              DATE '2026-01-01' + CAST(i % 300 AS INTEGER) AS visit_date,
              100.0 * (i % 5000) AS benefit
            FROM range({args.rows}) t(i)"""
    )
    cols = [
        SampleColumn("person_id", "string", "identifier", "L4"),
        SampleColumn("age", "int", "quasi_identifier", "L3"),
        SampleColumn("district_code", "string", "quasi_identifier", "L3"),
        SampleColumn("visit_date", "date", "quasi_identifier", "L3"),
        SampleColumn("benefit", "float", "sensitive", "L3"),
    ]
    rules = load_desensitize_rules()
    key = secrets.token_bytes(32)
    for rate in (1.0, 0.1):
        view = sample_view(
            source="residents",
            columns=cols,
            scope={c.name for c in cols},
            settings=SampleSettings(rate=rate),
            rules=rules,
            unit_column="person_id",
        )
        t = time.perf_counter()
        for sql, params in view.statements(key, "sample"):
            con.execute(sql, params)
        desens = time.perf_counter() - t
        kept = con.execute("SELECT count(*) FROM sample").fetchall()[0][0]
        t = time.perf_counter()
        con.execute("CREATE OR REPLACE TABLE raw_copy AS SELECT * FROM residents")
        raw = time.perf_counter() - t
        print(
            f"sample view rate {rate:>4}: {args.rows:,} rows -> {kept:,} in {desens:6.2f} s "
            f"({args.rows / desens / 1e6:5.2f} M rows/s); raw DuckDB copy {raw:5.2f} s "
            f"({desens / raw:4.1f}x)"
        )

    # The alternative design: HMAC in a vectorized (Arrow) Python UDF.
    def udf(values: pa.Array) -> pa.Array:
        return pa.array(
            [
                hmac.new(key, b"p|" + v.encode(), hashlib.sha256).hexdigest()
                for v in values.to_pylist()
            ]
        )

    con.create_function("py_pseudonym", udf, ["VARCHAR"], "VARCHAR", type="arrow")
    t = time.perf_counter()
    con.execute("CREATE OR REPLACE TABLE u AS SELECT py_pseudonym(person_id) AS p FROM residents")
    py = time.perf_counter() - t
    for var, value in pseudonym_key_variables(key).items():
        con.execute(f"SET VARIABLE {var} = ?", [value])
    t = time.perf_counter()
    con.execute(
        "CREATE OR REPLACE TABLE s AS SELECT sha256(getvariable('shuyu_pseudonym_opad') || "
        "unhex(sha256(getvariable('shuyu_pseudonym_ipad') || encode('p|' || person_id)))) AS p "
        "FROM residents"
    )
    sql = time.perf_counter() - t
    print(
        f"pseudonyms only: SQL HMAC {sql:5.2f} s, Arrow Python UDF {py:5.2f} s ({py / sql:3.1f}x)"
    )
    print(f"measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
