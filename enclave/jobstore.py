"""Jobs as a persisted state machine: every transition is compare-and-set, idempotent, audited.

    submitted → authorized → running → computed → gated → (pending_review | auto_released)
    → approved → released
    side exits: refused (policy), failed (error code, never data), rejected (reviewer),
    cancelled, expired

Every package that moves a job (the orchestrator, the key service, the gate, the reviewer
workflow) goes through :func:`transition`, so the rules live in one place: a transition is
allowed only from the states listed in :data:`ALLOWED_FROM`, it is applied with
``UPDATE … WHERE state IN (…)`` so two workers cannot both move the same job, asking for
the state a job is already in is a no-op (retries are safe), and the audit entry commits
with the change.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enclave.audit import AuditLog
from enclave.errors import EnclaveError
from enclave.jobwatch import mark_changed
from enclave.tables import JOB_STATES, TERMINAL_JOB_STATES, jobs

__all__ = [
    "ALLOWED_FROM",
    "Job",
    "JobStateError",
    "advance",
    "create_job",
    "get_job",
    "list_jobs",
    "transition",
]

ALLOWED_FROM: dict[str, frozenset[str]] = {
    "authorized": frozenset({"submitted"}),
    # running: a decision taken again just before the run refused it (scenario suspended …)
    "refused": frozenset({"submitted", "authorized", "running", "gated"}),
    "running": frozenset({"authorized"}),
    "computed": frozenset({"running"}),
    "gated": frozenset({"computed"}),
    "pending_review": frozenset({"gated"}),
    "auto_released": frozenset({"gated"}),
    "approved": frozenset({"pending_review"}),
    "released": frozenset({"approved"}),
    "rejected": frozenset({"pending_review"}),
    "failed": frozenset({"submitted", "authorized", "running", "computed", "gated"}),
    "cancelled": frozenset({"submitted", "authorized", "running", "pending_review"}),
    "expired": frozenset({"submitted", "authorized", "pending_review", "approved"}),
}
assert set(ALLOWED_FROM) | {"submitted"} == set(JOB_STATES)


class JobStateError(EnclaveError):
    code = "enclave.job_state"
    kind = "conflict"


@dataclass(frozen=True)
class Job:
    id: str
    scenario_id: str
    submitter: str
    kind: str
    output_mode: str
    code: str
    code_sha256: str
    params: dict[str, Any]
    state: str
    error_code: str | None
    error_message: str | None
    policy_hash: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_JOB_STATES

    def view(self) -> dict[str, Any]:
        """What a user may see of a job: no result bytes."""
        return {
            "id": self.id,
            "scenario_id": self.scenario_id,
            "submitter": self.submitter,
            "kind": self.kind,
            "output_mode": self.output_mode,
            "code_sha256": self.code_sha256,
            "params": self.params,
            "state": self.state,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _row_to_job(r: Any) -> Job:
    def aware(ts: datetime) -> datetime:
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)

    return Job(
        id=r.id,
        scenario_id=r.scenario_id,
        submitter=r.submitter,
        kind=r.kind,
        output_mode=r.output_mode,
        code=r.code,
        code_sha256=r.code_sha256,
        params=dict(r.params or {}),
        state=r.state,
        error_code=r.error_code,
        error_message=r.error_message,
        policy_hash=r.policy_hash,
        created_at=aware(r.created_at),
        updated_at=aware(r.updated_at),
    )


def create_job(
    conn: Connection,
    audit: AuditLog,
    *,
    scenario_id: str,
    submitter: str,
    kind: str,
    output_mode: str,
    code: str,
    params: dict[str, Any],
    policy_hash: str | None = None,
) -> Job:
    """Insert a job in state ``submitted`` and audit it."""
    now = datetime.now(UTC)
    job_id = f"J-{uuid.uuid4().hex[:16]}"
    code_sha = hashlib.sha256(code.encode()).hexdigest()
    conn.execute(
        _INSERT_JOB,
        {
            "id": job_id,
            "scenario_id": scenario_id,
            "submitter": submitter,
            "kind": kind,
            "output_mode": output_mode,
            "code": code,
            "code_sha256": code_sha,
            "params": params,
            "state": "submitted",
            "policy_hash": policy_hash,
            "created_at": now,
            "updated_at": now,
        },
    )
    audit.record(
        conn,
        actor=submitter,
        action="job.submit",
        target=job_id,
        details={
            "scenario": scenario_id,
            "kind": kind,
            "output_mode": output_mode,
            "code_sha256": code_sha,
        },
    )
    mark_changed(conn, job_id, "submitted")
    # As inserted: reading the row back costs a statement and tells nothing new.
    return Job(
        id=job_id,
        scenario_id=scenario_id,
        submitter=submitter,
        kind=kind,
        output_mode=output_mode,
        code=code,
        code_sha256=code_sha,
        params=dict(params),
        state="submitted",
        error_code=None,
        error_message=None,
        policy_hash=policy_hash,
        created_at=now,
        updated_at=now,
    )


_INSERT_JOB = jobs.insert()
_GET_JOB = sa.select(jobs).where(jobs.c.id == sa.bindparam("job_id"))  # built once: hot
# One compare-and-set per target state; the columns it sets come with the parameters.
_MOVE = {
    to: jobs.update().where(
        jobs.c.id == sa.bindparam("job_id"), jobs.c.state.in_(sorted(ALLOWED_FROM[to]))
    )
    for to in ALLOWED_FROM
}


def get_job(conn: Connection, job_id: str) -> Job:
    r = conn.execute(_GET_JOB, {"job_id": job_id}).first()
    if r is None:
        raise EnclaveError(
            f"no job {job_id}",
            code="enclave.job_not_found",
            kind="not_found",
            hint="check the job id (`shuyu job list`)",
        )
    return _row_to_job(r)


def list_jobs(
    conn: Connection,
    *,
    scenario_id: str | None = None,
    states: list[str] | None = None,
    submitter: str | None = None,
) -> list[Job]:
    q = sa.select(jobs).order_by(jobs.c.created_at)
    if scenario_id is not None:
        q = q.where(jobs.c.scenario_id == scenario_id)
    if states is not None:
        q = q.where(jobs.c.state.in_(states))
    if submitter is not None:
        q = q.where(jobs.c.submitter == submitter)
    return [_row_to_job(r) for r in conn.execute(q)]


def transition(
    conn: Connection,
    audit: AuditLog,
    job_id: str,
    to: str,
    *,
    actor: str,
    error_code: str | None = None,
    error_message: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
    **values: Any,
) -> bool:
    """Move a job to ``to``; True if it moved, False if it was already there.

    Raises :class:`JobStateError` when the job is in a state from which ``to`` is not
    reachable (for example approving a job that was rejected). ``at`` is the time written
    to ``updated_at`` (now by default).
    """
    if to not in ALLOWED_FROM:
        raise JobStateError(f"unknown job state {to!r}", kind="internal")
    res = conn.execute(
        _MOVE[to],
        {
            "job_id": job_id,
            "state": to,
            "updated_at": at or datetime.now(UTC),
            "error_code": error_code,
            "error_message": error_message,
            **values,
        },
    )
    if res.rowcount == 1:
        mark_changed(conn, job_id, to)
        det = dict(details or {})
        if error_code:
            det["error_code"] = error_code
        audit.record(
            conn,
            actor=actor,
            action=f"job.{to}",
            target=job_id,
            result="ok" if to not in {"failed", "refused", "rejected"} else to,
            details=det,
        )
        return True
    current = get_job(conn, job_id).state
    if current == to:
        return False
    raise JobStateError(
        f"job {job_id} is {current}; it cannot become {to}",
        hint=f"a job becomes {to} only from: {', '.join(sorted(ALLOWED_FROM[to]))}",
    )


def advance(
    conn: Connection,
    audit: AuditLog,
    job: Job,
    to: str,
    *,
    actor: str,
    error_code: str | None = None,
    error_message: str | None = None,
    details: dict[str, Any] | None = None,
    policy_hash: str | None = None,
) -> Job:
    """:func:`transition`, returning the job as this transaction leaves it.

    When the job moved, the new row is ``job`` with the columns the move wrote, so it is
    not read back (a statement per state on the hot path); when it was already in ``to``
    (a retry), it is read back.
    """
    now = datetime.now(UTC)
    extra: dict[str, Any] = {} if policy_hash is None else {"policy_hash": policy_hash}
    moved = transition(
        conn,
        audit,
        job.id,
        to,
        actor=actor,
        error_code=error_code,
        error_message=error_message,
        details=details,
        at=now,
        **extra,
    )
    if not moved:
        return get_job(conn, job.id)
    return replace(
        job,
        state=to,
        updated_at=now,
        error_code=error_code,
        error_message=error_message,
        **extra,
    )
