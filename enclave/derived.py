"""Derived tables (R2.6): row-level results a job keeps inside the domain for its scenario.

A job may keep a row-level result for later jobs of the *same* scenario. It is stored like
a dataset (``datasets.kind = 'derived'``, ``scenario_id``, ``lineage``), encrypted with its
own data keys like any dataset, and:

* it is visible only to its scenario's jobs — the decision refuses any other scenario
  (``scope.derived_other_scenario``) and a scenario can never grant it;
* its grade is the highest grade of the datasets it came from, so it is never protected
  less than its sources;
* it is crypto-shredded when the scenario is revoked or expires
  (:meth:`enclave.scenarios.ScenarioService.revoke`), like everything kept for it.

Two steps, so the encrypted write stays in the store (``enclave/store.py``) and this module
only owns metadata and rules, in the caller's transaction::

    plan = derived.plan(conn, scenario_id=..., name=..., sources={...}, columns={...},
                        job_id=..., code_sha256=...)
    # store: create keys <plan.dataset_id>.<grade> and .footer, write the Parquet files
    # with plan.meta["columns"] grades, under the store's layout
    derived.register(conn, plan, path=..., num_rows=..., num_bytes=..., content_sha256=...)
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enclave.audit import AuditLog
from enclave.errors import ScenarioError
from enclave.scenarios import ScenarioService, dataset_rows
from enclave.tables import datasets
from policies.grades import GradePolicy, load_grades

__all__ = ["DerivedPlan", "DerivedTables"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DerivedPlan:
    """What the store needs to write a derived table, and what register() records."""

    dataset_id: str
    name: str
    version: int
    scenario_id: str
    owner_org: str
    grade: str
    meta: dict[str, Any]
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def columns_by_grade(self) -> dict[str, list[str]]:
        return {self.grade: [c["name"] for c in self.meta["columns"]]}


class DerivedTables:
    """Plans and registers derived tables; shredding is the scenario's (see module doc)."""

    def __init__(
        self,
        audit: AuditLog,
        scenarios: ScenarioService,
        grades: GradePolicy | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self._audit = audit
        self._scenarios = scenarios
        self._grades = grades or load_grades()
        self._clock = clock

    def plan(
        self,
        conn: Connection,
        *,
        scenario_id: str,
        name: str,
        sources: Mapping[str, object],
        columns: Mapping[str, str],
        job_id: str,
        code_sha256: str,
        roles: Mapping[str, str] | None = None,
    ) -> DerivedPlan:
        """Check and describe a new derived table (or a new version of this scenario's).

        ``sources``: the datasets the job read (names); ``columns``: column -> catalog type
        of the table to keep; ``roles``: column -> role where known, else inherited from a
        source column of the same name, else ``sensitive`` (the careful default).
        """
        rec = self._scenarios.get(scenario_id, conn)
        if not self._scenarios.is_open(scenario_id, conn):
            raise ScenarioError(
                f"scenario `{scenario_id}` is {rec.effective_state(self._clock())}; nothing can "
                "be kept for it",
                code="enclave.scenario_state",
            )
        if not _NAME.match(name):
            raise ScenarioError(
                f"`{name}` is not a valid table name",
                code="enclave.derived_name",
                kind="invalid",
                hint="letters, digits and _, starting with a letter",
            )
        if not columns:
            raise ScenarioError(
                "a derived table needs columns", code="enclave.derived_empty", kind="invalid"
            )
        src = dataset_rows(conn, sources)
        missing = sorted(set(sources) - set(src))
        if missing:
            raise ScenarioError(
                f"unknown source dataset(s): {', '.join(missing)}",
                code="enclave.derived_sources",
                kind="invalid",
            )
        for s_name, row in src.items():
            own = row.kind == "derived" and row.scenario_id == scenario_id
            if not own and s_name not in rec.scenario.datasets:
                raise ScenarioError(
                    f"source `{s_name}` is not in scenario `{scenario_id}`",
                    code="enclave.derived_sources",
                    kind="invalid",
                )
        existing = dataset_rows(conn, [name]).get(name)
        version = 1
        if existing is not None and existing.status == "active":
            if existing.kind != "derived" or existing.scenario_id != scenario_id:
                raise ScenarioError(
                    f"the name `{name}` is taken by another dataset",
                    code="enclave.derived_name_taken",
                    hint="choose another name for the derived table",
                )
            version = existing.version + 1
        grade = self._grades.highest([r.grade for r in src.values()])
        source_roles: dict[str, str] = {}
        for row in src.values():
            for c in row.meta.get("columns", []) if isinstance(row.meta, dict) else []:
                if isinstance(c, dict) and "name" in c and "role" in c:
                    source_roles.setdefault(str(c["name"]), str(c["role"]))
        cols = [
            {
                "name": c,
                "type": t,
                "grade": grade,
                "role": (roles or {}).get(c) or source_roles.get(c, "sensitive"),
            }
            for c, t in columns.items()
        ]
        meta = {
            "name": name,
            "summary": f"derived by job {job_id} in scenario {scenario_id}",
            "kind": "derived",
            "grade": grade,
            "columns": cols,
        }
        lineage = {
            "scenario_id": scenario_id,
            "job_id": job_id,
            "code_sha256": code_sha256,
            "sources": [
                {"name": r.name, "id": r.id, "version": r.version, "grade": r.grade}
                for r in sorted(src.values(), key=lambda r: r.name)
            ],
        }
        return DerivedPlan(
            dataset_id=f"ds_{secrets.token_hex(16)}",
            name=name,
            version=version,
            scenario_id=scenario_id,
            owner_org=rec.scenario.operator_org,
            grade=grade,
            meta=meta,
            lineage=lineage,
        )

    def register(
        self,
        conn: Connection,
        plan: DerivedPlan,
        *,
        path: str,
        num_rows: int,
        num_bytes: int,
        content_sha256: str,
        actor: str = "system",
    ) -> str:
        """Record the written table in the catalog (same transaction as the write)."""
        now = self._clock()
        conn.execute(
            datasets.update()
            .where(
                datasets.c.name == plan.name,
                datasets.c.kind == "derived",
                datasets.c.scenario_id == plan.scenario_id,
                datasets.c.status == "active",
            )
            .values(status="deleted", deleted_at=now)
        )
        conn.execute(
            datasets.insert().values(
                id=plan.dataset_id,
                name=plan.name,
                version=plan.version,
                status="active",
                kind="derived",
                owner_org=plan.owner_org,
                grade=plan.grade,
                meta=plan.meta,
                path=path,
                num_rows=num_rows,
                num_bytes=num_bytes,
                content_sha256=content_sha256,
                scenario_id=plan.scenario_id,
                lineage=plan.lineage,
                created_at=now,
            )
        )
        self._audit.record(
            conn,
            actor=actor,
            action="dataset.derive",
            target=plan.dataset_id,
            details={
                "name": plan.name,
                "version": plan.version,
                "scenario": plan.scenario_id,
                "grade": plan.grade,
                "job_id": plan.lineage.get("job_id"),
                "sources": [s["name"] for s in plan.lineage.get("sources", [])],
            },
        )
        return plan.dataset_id

    @staticmethod
    def of_scenario(conn: Connection, scenario_id: str) -> list[str]:
        """Names of the scenario's active derived tables."""
        rows = conn.execute(
            sa.select(datasets.c.name).where(
                datasets.c.kind == "derived",
                datasets.c.scenario_id == scenario_id,
                datasets.c.status == "active",
            )
        )
        return sorted(r.name for r in rows)
