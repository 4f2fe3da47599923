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

The orchestrator calls one method, :meth:`DerivedTables.keep`; it plans (checks and
catalog entry), then writes through the store's own atomic path (``DatasetStore.reserve``
and ``write_version``, the same one imports use), then registers the row — all inside the
store's reservation, so a crash leaves nothing the sweep does not remove::

    dataset_id = domain.derived.keep(
        scenario_id="S-2026-014", name="visits_by_person", sources=["residents", "visits"],
        columns={"person_id": "string", "n_visits": "int"}, batches=arrow_batches,
        job_id=job.id, code_sha256=job.code_sha256,
    )

:meth:`plan` and :meth:`register` are the two halves, for callers that write themselves.
The catalog entry is a full :class:`enclave.catalog.DatasetMeta` (so the store and the
sandbox read a derived table like any dataset): its provider is the operator, it is never
shared or opened beyond the scenario, every column has the table's grade, roles are
inherited from a source column of the same name (else ``sensitive``), and public bounds and
domains are inherited from a source column of the same name and type — they stay
data-independent, which is what the DP compiler's clamping needs.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection, Engine

from enclave.audit import AuditLog
from enclave.catalog import (
    AuthorizedOperation,
    ColumnMeta,
    DatasetMeta,
    OpenAttribute,
    Provider,
    ShareAttribute,
    TimeCoverage,
)
from enclave.errors import ScenarioError
from enclave.keys import FOOTER, KeyService
from enclave.scenarios import DatasetRow, ScenarioService, dataset_rows
from enclave.tables import datasets
from policies.grades import GradePolicy, load_grades

if TYPE_CHECKING:
    import pyarrow as pa

    from enclave.store import DatasetStore

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
    meta: DatasetMeta
    lineage: dict[str, Any] = field(default_factory=dict)

    @property
    def key_groups(self) -> list[str]:
        """The data-key groups the store needs: every column grade, and the footer."""
        return [*sorted(self.meta.columns_by_grade()), FOOTER]


class DerivedTables:
    """Plans and registers derived tables; shredding is the scenario's (see module doc)."""

    def __init__(
        self,
        audit: AuditLog,
        scenarios: ScenarioService,
        grades: GradePolicy | None = None,
        clock: Clock = _utc_now,
        *,
        engine: Engine | None = None,
        keys: KeyService | None = None,
        store: DatasetStore | None = None,
    ) -> None:
        self._audit = audit
        self._scenarios = scenarios
        self._grades = grades or load_grades()
        self._clock = clock
        self._engine = engine
        self._keys = keys
        self._store = store

    def keep(
        self,
        *,
        scenario_id: str,
        name: str,
        sources: Iterable[str],
        columns: Mapping[str, str],
        batches: Iterable[pa.RecordBatch],
        job_id: str,
        code_sha256: str,
        roles: Mapping[str, str] | None = None,
        actor: str = "system",
    ) -> str:
        """Plan, write encrypted through the store, and register; returns the dataset id."""
        if self._engine is None or self._keys is None or self._store is None:
            raise ScenarioError(
                "this DerivedTables has no store; build it with engine, keys and store",
                code="enclave.derived_no_store",
                kind="internal",
            )
        with self._engine.begin() as conn:
            plan = self.plan(
                conn,
                scenario_id=scenario_id,
                name=name,
                sources=list(sources),
                columns=columns,
                job_id=job_id,
                code_sha256=code_sha256,
                roles=roles,
            )
        with self._store.reserve(plan.dataset_id):
            # Keys commit before the write so no transaction stays open for its length; a
            # crash leaves keys without a row, which the store's sweep removes.
            with self._engine.begin() as conn:
                key_ids = [self._keys.create(conn, plan.dataset_id, g) for g in plan.key_groups]
            with self._engine.connect() as conn:
                keys = self._keys.get_many(conn, key_ids)
            written = self._store.write_version(
                plan.dataset_id, plan.version, plan.meta, keys, batches
            )
            with self._engine.begin() as conn:
                if not self._scenarios.is_open(scenario_id, conn):
                    raise ScenarioError(
                        f"scenario `{scenario_id}` closed while the table was written",
                        code="enclave.scenario_state",
                    )
                return self.register(
                    conn,
                    plan,
                    path=written.path,
                    num_rows=written.num_rows,
                    num_bytes=written.num_bytes,
                    content_sha256=written.content_sha256,
                    actor=actor,
                )

    def plan(
        self,
        conn: Connection,
        *,
        scenario_id: str,
        name: str,
        sources: Iterable[str],
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
        names = list(sources)
        src = dataset_rows(conn, names)
        missing = sorted(set(names) - set(src))
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
        if (
            existing is not None
            and existing.status == "active"
            and (existing.kind != "derived" or existing.scenario_id != scenario_id)
        ):
            raise ScenarioError(
                f"the name `{name}` is taken by another dataset",
                code="enclave.derived_name_taken",
                hint="choose another name for the derived table",
            )
        newest = conn.execute(
            sa.select(sa.func.max(datasets.c.version)).where(datasets.c.name == name)
        ).scalar_one()
        version = int(newest or 0) + 1
        grade = self._grades.highest([r.grade for r in src.values()])
        try:
            meta = _derived_meta(
                name=name,
                scenario_id=scenario_id,
                operator_org=rec.scenario.operator_org,
                job_id=job_id,
                grade=grade,
                columns=columns,
                roles=roles or {},
                sources=list(src.values()),
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ScenarioError(
                f"derived table `{name}` has an invalid column: {problems}",
                code="enclave.derived_columns",
                kind="invalid",
                hint="types: int, float, string, date, timestamp, bool; roles: identifier, "
                "quasi_identifier, sensitive, attribute",
            ) from exc
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
                meta=plan.meta.to_json(),
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


def _source_columns(sources: list[DatasetRow]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in sorted(sources, key=lambda r: r.name):
        cols = row.meta.get("columns") if isinstance(row.meta, dict) else None
        for c in cols if isinstance(cols, list) else []:
            if isinstance(c, dict) and "name" in c:
                out.setdefault(str(c["name"]), c)
    return out


def _derived_meta(
    *,
    name: str,
    scenario_id: str,
    operator_org: str,
    job_id: str,
    grade: str,
    columns: Mapping[str, str],
    roles: Mapping[str, str],
    sources: list[DatasetRow],
) -> DatasetMeta:
    """A full catalog entry for a derived table, from its sources (see the module doc)."""
    src_cols = _source_columns(sources)
    metas = [r.meta for r in sources if isinstance(r.meta, dict)]
    cols: list[ColumnMeta] = []
    for col, typ in columns.items():
        src = src_cols.get(col, {})
        same_type = src.get("type") == typ
        cols.append(
            ColumnMeta(
                name=col,
                type=typ,  # type: ignore[arg-type]  # validated by ColumnMeta
                grade=grade,
                role=roles.get(col) or src.get("role") or "sensitive",  # type: ignore[arg-type]
                label=str(src.get("label", "")),
                bounds=src.get("bounds") if same_type else None,
                domain=src.get("domain") if same_type else None,
            )
        )
    starts = [m["time_coverage"]["start"] for m in metas if m.get("time_coverage")]
    regions = sorted({str(m["region_coverage"]) for m in metas if m.get("region_coverage")})
    units = [m.get("privacy_unit") for m in metas if m.get("privacy_unit") in columns]
    social = any(r.kind == "social" for r in sources)
    return DatasetMeta(
        name=name,
        summary=f"derived table kept by job {job_id} in scenario {scenario_id}",
        industry_class=next(
            (str(m["industry_class"]) for m in metas if m.get("industry_class")), "derived"
        ),
        time_coverage=TimeCoverage(start=min(starts) if starts else date.today()),
        region_coverage="; ".join(regions) or "-",
        update_frequency="once",
        provider=Provider(name=operator_org, code=operator_org),
        share=ShareAttribute(type="not_shared"),
        open=OpenAttribute(type="conditional", conditions=f"only jobs of scenario {scenario_id}"),
        authorized_operation=AuthorizedOperation(status="authorized", scenarios=[scenario_id]),
        desensitized=False,
        grade=grade,
        kind="social" if social else "public",
        privacy_unit=units[0] if units else None,
        columns=cols,
    )
