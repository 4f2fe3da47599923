"""The enclave side of access decisions: gather the facts, decide, audit every outcome.

The rule is :func:`policies.decision.decide`, a pure function. This wrapper reads its
inputs from the database in one transaction — the user and their personnel record, the
scenario and its state, the catalog facts of the datasets the job reads, the providers'
approvals and the authority's fusion approvals — calls it, and writes an
``access.decide`` audit entry for every decision, allowed *and* denied, with every reason.
Those entries are what the supervision report counts as over-scope and over-purpose
attempts (R6.1) and as dataset use (the "unused for 3 months" rule).

The orchestrator calls :meth:`AccessService.authorize_job` when a job is submitted (and
may call it again before it runs); it raises :class:`policies.errors.AccessDenied` with
every reason, or returns the decision whose ``policy_hash`` the job and its key release
bind to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from enclave.audit import AuditLog
from enclave.errors import IdentityError
from enclave.identity import IdentityService
from enclave.requests import RequestService
from enclave.scenarios import DatasetRow, ScenarioRecord, ScenarioService, dataset_rows
from policies.decision import Actor, DatasetFacts, Decision, JobAccess, decide

__all__ = ["AccessService", "dataset_facts"]

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def dataset_facts(row: DatasetRow) -> DatasetFacts:
    """A catalog row as the decision sees it."""
    kind = row.kind if row.kind in ("public", "social", "derived") else "public"
    return DatasetFacts(
        name=row.name,
        kind=kind,  # type: ignore[arg-type]
        owner_org=row.owner_org,
        status=row.status,
        scenario_id=row.scenario_id,
        columns=row.column_names or None,
    )


class AccessService:
    """Decides whether a job may run, from the stored facts; audits every decision."""

    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        identity: IdentityService,
        scenarios: ScenarioService,
        clock: Clock = _utc_now,
    ) -> None:
        self._engine = engine
        self._audit = audit
        self._identity = identity
        self._scenarios = scenarios
        self._clock = clock

    def gather(
        self, conn: Connection, user_id: str, scenario_id: str, job: JobAccess
    ) -> dict[str, Any]:
        """The keyword arguments of :func:`policies.decision.decide`, read from the DB."""
        return self._gather(conn, user_id, scenario_id, job)[0]

    def _gather(
        self, conn: Connection, user_id: str, scenario_id: str, job: JobAccess
    ) -> tuple[dict[str, Any], ScenarioRecord | None]:
        try:
            actor = self._identity.get(user_id, conn).actor()
        except IdentityError:
            actor = Actor(user_id, "", frozenset(), enabled=False)
        rec = self._scenarios.find(scenario_id, conn)
        rows = dataset_rows(conn, job.columns)
        facts = {name: dataset_facts(r) for name, r in rows.items()}
        approvals = RequestService.approved_datasets(conn, scenario_id)
        approved = {
            name
            for name, orgs in approvals.items()
            if name in facts and facts[name].owner_org in orgs
        }
        return {
            "actor": actor,
            "scenario_id": scenario_id,
            "grant": rec.grant if rec else None,
            "job": job,
            "datasets": facts,
            "approved_requests": frozenset(approved),
            "fusion_approvals": rec.fusion_approved if rec else frozenset(),
            "now": self._clock(),
        }, rec

    def decide_job(
        self,
        user_id: str,
        scenario_id: str,
        job: JobAccess,
        *,
        job_id: str | None = None,
        conn: Connection | None = None,
    ) -> Decision:
        """Decide and audit; never raises for a denial (see :meth:`authorize_job`).

        With ``conn`` the decision and its audit entry join the caller's transaction (the
        job's own state change commits with the decision that allowed it, or neither does).
        """
        if conn is None:
            with self._engine.begin() as own:
                return self.decide_job(user_id, scenario_id, job, job_id=job_id, conn=own)
        return self.decide_job_in(conn, user_id, scenario_id, job, job_id=job_id)[0]

    def decide_job_in(
        self,
        conn: Connection,
        user_id: str,
        scenario_id: str,
        job: JobAccess,
        *,
        job_id: str | None = None,
    ) -> tuple[Decision, ScenarioRecord | None]:
        """:meth:`decide_job` in the caller's transaction, with the scenario as the
        decision read it there (None: no such scenario), so that a caller who needs the
        scenario too does not read it a second time."""
        inputs, rec = self._gather(conn, user_id, scenario_id, job)
        decision = decide(**inputs)
        self._audit.record(
            conn,
            actor=user_id,
            action="access.decide",
            target=scenario_id,
            result="allowed" if decision.allowed else "denied",
            details=_details(decision, job, job_id),
        )
        return decision, rec

    def authorize_job(
        self,
        user_id: str,
        scenario_id: str,
        job: JobAccess,
        *,
        job_id: str | None = None,
    ) -> Decision:
        """Decide and audit; raise :class:`policies.errors.AccessDenied` on a denial."""
        decision = self.decide_job(user_id, scenario_id, job, job_id=job_id)
        decision.raise_if_denied()
        return decision


def _details(decision: Decision, job: JobAccess, job_id: str | None) -> dict[str, Any]:
    columns: Mapping[str, Any] = {k: sorted(v) for k, v in sorted(job.columns.items())}
    out: dict[str, Any] = {
        "job_id": job_id,
        "kind": job.kind,
        "output_mode": job.output_mode,
        "datasets": columns,
        "policy_hash": decision.policy_hash,
        "reasons": [r.to_dict() for r in decision.reasons],
    }
    if job.epsilon is not None:
        out["epsilon"] = job.epsilon
    if job.delta is not None:
        out["delta"] = job.delta
    return out
