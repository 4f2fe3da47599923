"""Factories for the egress-gate tests: a synthetic people table, its catalog, aggregates.

Values are made up; ids look like real ones (18-character ID numbers, P-prefixed person
ids, two- or three-character names) so the identifier scans face realistic strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from egress.checks import ColumnInfo, DatasetInfo, OutputSpec, Thresholds
from egress.checks.stats_sql import Measure, run_aggregate

SALT = "test-unit-salt"
DISTRICTS = [chr(ord("A") + i) for i in range(8)]
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"

CATALOG: dict[str, DatasetInfo] = {
    "people": DatasetInfo(
        "people",
        "person_id",
        (
            ColumnInfo("person_id", "string", "identifier", "L4"),
            ColumnInfo("id_number", "string", "identifier", "L4"),
            ColumnInfo("name", "string", "identifier", "L4"),
            ColumnInfo("district", "string", "quasi_identifier", "L2"),
            ColumnInfo("age", "int", "quasi_identifier", "L3"),
            ColumnInfo("sex", "string", "quasi_identifier", "L2"),
            ColumnInfo("income", "float", "sensitive", "L3"),
        ),
        version=1,
    )
}


def people(n: int = 2000, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = [f"P{i:07d}" for i in range(n)]
    birth = rng.integers(0, 365 * 60, n)
    id_numbers = [
        f"{110101 + int(rng.integers(0, 90)):06d}{19600101 + int(b) % 400000:08d}"
        f"{int(rng.integers(0, 9999)):04d}"
        for b in birth
    ]
    names = [
        _SURNAMES[int(rng.integers(0, len(_SURNAMES)))]
        + "".join(_GIVEN[int(rng.integers(0, len(_GIVEN)))] for _ in range(int(rng.integers(1, 3))))
        for _ in range(n)
    ]
    return pa.table(
        {
            "person_id": ids,
            "id_number": id_numbers,
            "name": names,
            "district": [DISTRICTS[int(i)] for i in rng.integers(0, len(DISTRICTS), n)],
            "age": rng.integers(18, 90, n).astype(np.int64),
            "sex": [("F", "M")[int(i)] for i in rng.integers(0, 2, n)],
            "income": np.round(rng.lognormal(10.5, 0.6, n), 2),
        }
    )


def source_conn(table: pa.Table) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.register("people", table)
    return conn


def aggregate(
    conn: duckdb.DuckDBPyConnection,
    keys: Sequence[str],
    measures: Sequence[Measure],
    *,
    where: str | None = None,
    name: str = "result",
    mode: Any = "sdc_aggregate",
) -> OutputSpec:
    return run_aggregate(
        conn,
        "people",
        keys,
        measures,
        "person_id",
        SALT,
        datasets=("people",),
        name=name,
        where=where,
        mode=mode,
    )


COUNT = Measure("n", "count")
SUM_INCOME = Measure("total_income", "sum", "income")
MEAN_INCOME = Measure("mean_income", "mean", "income")
DEFAULT = Thresholds()


# --- database fixtures for the gate, review and release tests ------------------------------

AUTHORITY, OPERATOR, REVIEWER_A, REVIEWER_B, AUDITOR = "boss", "op", "rev-a", "rev-b", "aud"


def add_people(domain: Any) -> None:
    """An authority, an operator, two reviewers and an auditor."""
    ident = domain.identity
    ident.add_user(None, AUTHORITY, org="GOV-1", roles=["authority"])
    ident.add_user(AUTHORITY, OPERATOR, org="ORG-OP-1", roles=["operator"])
    ident.add_user(AUTHORITY, REVIEWER_A, org="GOV-1", roles=["reviewer"])
    ident.add_user(AUTHORITY, REVIEWER_B, org="GOV-1", roles=["reviewer"])
    ident.add_user(AUTHORITY, AUDITOR, org="GOV-1", roles=["auditor"])


def add_dataset(domain: Any, name: str = "people", grade: str = "L3") -> str:
    """A catalog row (no files): enough for grades, versions and provenance."""
    from datetime import UTC, datetime

    from enclave.tables import datasets

    ds_id = f"ds_{name}"
    meta = {
        "name": name,
        "summary": "synthetic people",
        "grade": grade,
        "privacy_unit": "person_id",
        "provider": {"name": "Civil Affairs Bureau", "code": "GOV-CA-01"},
        "time_coverage": {"start": "2025-01-01", "end": "2025-12-31"},
        "columns": [
            {"name": c.name, "type": c.type, "role": c.role, "grade": c.grade}
            for c in CATALOG["people"].columns
        ],
    }
    with domain.engine.begin() as conn:
        conn.execute(
            datasets.insert().values(
                id=ds_id,
                name=name,
                version=1,
                status="active",
                kind="public",
                owner_org="GOV-CA-01",
                grade=grade,
                meta=meta,
                path=f"{ds_id}/v1",
                num_rows=0,
                num_bytes=0,
                content_sha256="0" * 64,
                created_at=datetime(2026, 3, 1, tzinfo=UTC),
            )
        )
    return ds_id


def add_scenario(domain: Any, scenario_id: str = "S-2026-001", **disclosure: Any) -> str:
    from datetime import UTC, datetime

    from enclave.authz_tables import scenarios
    from policies.scenario import Scenario, policy_hash

    sc = Scenario.model_validate(
        {
            "id": scenario_id,
            "title": "District income statistics",
            "operator_org": "ORG-OP-1",
            "purpose": "Publish income statistics by district for social-assistance planning.",
            "use_class": "public_welfare",
            "datasets": {"people": {"columns": ["district", "age", "sex", "income"]}},
            "job_kinds": ["sql"],
            "output_modes": ["sdc_aggregate", "dp_aggregate"],
            "privacy_budget": {"epsilon": 1.0, "delta": 0.0, "per_job_epsilon": 1.0},
            "disclosure": disclosure,
            "validity": {"start": "2026-01-01", "end": "2027-12-31"},
        }
    )
    now = datetime.now(UTC)
    with domain.engine.begin() as conn:
        conn.execute(
            scenarios.insert().values(
                id=scenario_id,
                operator_org=sc.operator_org,
                use_class=sc.use_class,
                state="active",
                spec=sc.model_dump(mode="json"),
                policy_hash=policy_hash(sc),
                valid_from=now,
                valid_until=now,
                granted_by=AUTHORITY,
                granted_at=now,
            )
        )
    return scenario_id


def computed_job(
    domain: Any,
    *,
    scenario_id: str = "S-2026-001",
    submitter: str = OPERATOR,
    output_mode: str = "sdc_aggregate",
    code: str = "SELECT district, count(*) AS n FROM people GROUP BY district",
    params: dict[str, Any] | None = None,
) -> str:
    """A job moved through the orchestrator's states up to ``computed``."""
    from enclave.jobstore import create_job, transition

    with domain.engine.begin() as conn:
        job = create_job(
            conn,
            domain.audit,
            scenario_id=scenario_id,
            submitter=submitter,
            kind="sql",
            output_mode=output_mode,
            code=code,
            params=params or {"datasets": ["people"]},
        )
        for state in ("authorized", "running", "computed"):
            transition(conn, domain.audit, job.id, state, actor="system")
    return job.id
