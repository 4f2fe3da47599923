"""The reviewer's workflow (R1.3): a queue, the four questions, one or two approvals.

Outputs the gate routes to review wait with their job in ``pending_review``. A reviewer
sees the job (its SQL or code), the scenario and its purpose, the egress report, and the
held output itself — aggregates only: blocked outputs are never held, so never shown.

Every decision answers the four questions of 000 §14:

(a) ``beyond_scope``     — does it go beyond the authorized purpose or scope?
(b) ``direct_exposure``  — does it risk direct exposure of raw, sensitive or private data?
(c) ``model_attack``     — does it carry a risk of privacy attacks on models or algorithms?
(d) ``other_risk``       — any other data-security risk?

Approval needs all four answered "no". Rules the code enforces, each refusal audited:

* the submitter never reviews their own job (not even a comment counts as review);
* a reviewer approves once; outputs of datasets whose grade asks for more
  (``reviewers_required`` in the grade policy: two for L4) need that many *different*
  reviewers, and the job stays ``pending_review`` until they have all approved;
* one rejection ends it (``rejected``): the held outputs are deleted and the cells are
  dropped from the history, so a rejected output can never be released or downloaded;
* ``send_back`` is a rejection that asks for changes: the operator fixes and resubmits;
* comments do not change state.

The last approval releases the output at once (:func:`egress.release.release_job`). The
privacy budget is not consulted: it was charged when the answer was computed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from egress.checks import OutputSpec
from egress.errors import ReviewError
from egress.gate import Gate
from egress.gate_tables import egress_reports, egress_reviews
from egress.release import Release, release_job
from enclave.jobstore import Job, get_job, list_jobs, transition
from policies.errors import ShuyuError

__all__ = [
    "QUESTIONS",
    "ReviewAnswers",
    "ReviewOutcome",
    "approve",
    "comment",
    "reject",
    "review_queue",
    "send_back",
    "show",
]

QUESTIONS: dict[str, str] = {
    "beyond_scope": "Does the output go beyond the scenario's authorized purpose or scope?",
    "direct_exposure": "Does it risk direct exposure of raw, sensitive or private data?",
    "model_attack": "Does it carry a risk of privacy attacks on models or algorithms?",
    "other_risk": "Is there any other data-security risk?",
}

Action = Literal["comment", "approve", "reject", "send_back"]


@dataclass(frozen=True)
class ReviewAnswers:
    """The reviewer's answers to the four questions of R1.3; True means "yes, a risk"."""

    beyond_scope: bool
    direct_exposure: bool
    model_attack: bool
    other_risk: bool

    @property
    def any_risk(self) -> bool:
        return self.beyond_scope or self.direct_exposure or self.model_attack or self.other_risk

    def to_dict(self) -> dict[str, bool]:
        return {
            "beyond_scope": self.beyond_scope,
            "direct_exposure": self.direct_exposure,
            "model_attack": self.model_attack,
            "other_risk": self.other_risk,
        }


@dataclass(frozen=True)
class ReviewOutcome:
    job_id: str
    state: str  # the job's state after the action
    approvals: int
    required: int
    release: Release | None = None


@contextmanager
def _refusals(gate: Gate, actor: str, action: str, job_id: str) -> Iterator[None]:
    """Audit a refused action in its own transaction, after the action's has rolled back."""
    try:
        yield
    except ShuyuError as exc:
        gate.audit.record_now(
            gate.engine,
            actor=actor,
            action=f"review.{action}",
            target=job_id,
            result="denied",
            details={"code": exc.code, "reason": exc.message},
        )
        raise


def _required(conn: Connection, job_id: str) -> int:
    row = conn.execute(
        sa.select(egress_reports.c.required_reviewers).where(egress_reports.c.job_id == job_id)
    ).first()
    return int(row.required_reviewers) if row else 1


def _approvers(conn: Connection, job_id: str) -> list[str]:
    rows = conn.execute(
        sa.select(egress_reviews.c.reviewer)
        .where(egress_reviews.c.job_id == job_id, egress_reviews.c.action == "approve")
        .order_by(egress_reviews.c.created_at, egress_reviews.c.id)
    )
    return list(dict.fromkeys(r.reviewer for r in rows))


def _guard(gate: Gate, conn: Connection, job: Job, actor: str, *, decide: bool) -> None:
    """Refuse a review action the actor or the job's state does not allow."""
    gate.check_actor(conn, actor, "review.decide" if decide else "review.read")
    if actor == job.submitter:
        raise ReviewError(
            f"{actor} submitted job {job.id} and cannot review it",
            code="egress.self_review",
            hint="another reviewer must review this job",
        )
    if decide and job.state != "pending_review":
        raise ReviewError(
            f"job {job.id} is {job.state}, not waiting for review",
            code="egress.review_state",
            kind="conflict",
            hint="only jobs in pending_review can be approved, rejected or sent back",
        )


def _insert(
    conn: Connection,
    job_id: str,
    actor: str,
    action: Action,
    text: str,
    answers: ReviewAnswers | None,
) -> str:
    rid = f"RV-{uuid.uuid4().hex[:16]}"
    conn.execute(
        egress_reviews.insert().values(
            id=rid,
            job_id=job_id,
            reviewer=actor,
            action=action,
            answers=None if answers is None else answers.to_dict(),
            text=text,
            created_at=datetime.now(UTC),
        )
    )
    return rid


def review_queue(gate: Gate, actor: str) -> list[dict[str, Any]]:
    """Jobs waiting for review, oldest first, with their verdict and approvals so far."""
    with gate.engine.connect() as conn:
        gate.check_actor(conn, actor, "review.read")
        out = []
        for job in list_jobs(conn, states=["pending_review"]):
            report = conn.execute(
                sa.select(egress_reports).where(egress_reports.c.job_id == job.id)
            ).first()
            approvers = _approvers(conn, job.id)
            out.append(
                {
                    "job_id": job.id,
                    "scenario_id": job.scenario_id,
                    "submitter": job.submitter,
                    "output_mode": job.output_mode,
                    "verdict": report.verdict if report else None,
                    "approvals": len(approvers),
                    "required": int(report.required_reviewers) if report else 1,
                    "own_job": job.submitter == actor,
                    "approved_by_you": actor in approvers,
                    "waiting_since": job.updated_at.isoformat(),
                }
            )
        return out


def show(gate: Gate, job_id: str, actor: str) -> dict[str, Any]:
    """Everything a reviewer looks at for one job; the viewing itself is audited."""
    with _refusals(gate, actor, "show", job_id), gate.engine.begin() as conn:
        job = get_job(conn, job_id)
        _guard(gate, conn, job, actor, decide=False)
        scenario = gate.scenario(conn, job.scenario_id)
        stored = gate.stored_report(conn, job_id)
        outputs = (
            gate.load_outputs(conn, job_id)
            if job.state in ("pending_review", "approved", "released", "auto_released")
            else []
        )
        reviews = [
            {
                "reviewer": r.reviewer,
                "action": r.action,
                "answers": r.answers,
                "text": r.text,
                "at": r.created_at.isoformat(),
            }
            for r in conn.execute(
                sa.select(egress_reviews)
                .where(egress_reviews.c.job_id == job_id)
                .order_by(egress_reviews.c.created_at, egress_reviews.c.id)
            )
        ]
        gate.audit.record(
            conn, actor=actor, action="review.show", target=job_id, details={"state": job.state}
        )
        return {
            "job": {**job.view(), "code": job.code},
            "scenario": None
            if scenario is None
            else {
                "id": scenario.id,
                "title": scenario.title,
                "purpose": scenario.purpose,
                "operator_org": scenario.operator_org,
                "datasets": {n: list(d.columns) for n, d in scenario.datasets.items()},
            },
            "report": None if stored is None else stored[0].to_dict(),
            "required_reviewers": _required(conn, job_id),
            "approvals": _approvers(conn, job_id),
            "reviews": reviews,
            "questions": QUESTIONS,
            "outputs": [
                {"name": o.name, "mode": o.mode, "measures": dict(o.measures), "table": _shown(o)}
                for o in outputs
            ],
        }


def _shown(output: OutputSpec) -> pa.Table:
    """The table a reviewer sees: a model as its card's facts, never its skops bytes."""
    if output.mode != "model":
        return output.table
    from egress.models.output import model_summary_table

    return model_summary_table(output.table)


def comment(gate: Gate, job_id: str, actor: str, text: str) -> str:
    """Leave a note on a job under review (no state change)."""
    if not text.strip():
        raise ReviewError("a comment needs text", code="egress.review_text", kind="invalid")
    with _refusals(gate, actor, "comment", job_id), gate.engine.begin() as conn:
        job = get_job(conn, job_id)
        _guard(gate, conn, job, actor, decide=False)
        rid = _insert(conn, job_id, actor, "comment", text.strip(), None)
        gate.audit.record(
            conn, actor=actor, action="review.comment", target=job_id, details={"review": rid}
        )
        return rid


def approve(
    gate: Gate, job_id: str, actor: str, answers: ReviewAnswers, reason: str = ""
) -> ReviewOutcome:
    """Approve; the last required approval moves the job to approved and releases it."""
    with _refusals(gate, actor, "approve", job_id), gate.engine.begin() as conn:
        job = get_job(conn, job_id)
        _guard(gate, conn, job, actor, decide=True)
        if answers.any_risk:
            flagged = [k for k, v in answers.to_dict().items() if v]
            raise ReviewError(
                f"the answers flag a risk ({', '.join(flagged)}); an output with a risk "
                "cannot be approved",
                code="egress.review_risk",
                kind="invalid",
                hint="reject it, or send it back for changes",
            )
        approvers = _approvers(conn, job_id)
        if actor in approvers:
            raise ReviewError(
                f"{actor} has already approved job {job_id}",
                code="egress.review_twice",
                kind="conflict",
                hint="a different reviewer must give the next approval",
            )
        rid = _insert(conn, job_id, actor, "approve", reason.strip(), answers)
        approvals = len(approvers) + 1
        required = _required(conn, job_id)
        gate.audit.record(
            conn,
            actor=actor,
            action="review.approve",
            target=job_id,
            details={
                "review": rid,
                "answers": answers.to_dict(),
                "approvals": approvals,
                "required": required,
            },
        )
        if approvals < required:
            return ReviewOutcome(job_id, "pending_review", approvals, required)
        transition(
            conn,
            gate.audit,
            job_id,
            "approved",
            actor=actor,
            details={"approvers": [*approvers, actor]},
        )
    release = release_job(gate, job_id, actor=actor)
    return ReviewOutcome(job_id, "released", approvals, required, release)


def _close(
    gate: Gate,
    job_id: str,
    actor: str,
    action: Action,
    reason: str,
    answers: ReviewAnswers | None,
) -> ReviewOutcome:
    if not reason.strip():
        raise ReviewError(
            f"{action.replace('_', ' ')} needs a reason",
            code="egress.review_reason",
            kind="invalid",
            hint="say what is wrong, so the operator can fix it",
        )
    with _refusals(gate, actor, action, job_id), gate.engine.begin() as conn:
        job = get_job(conn, job_id)
        _guard(gate, conn, job, actor, decide=True)
        rid = _insert(conn, job_id, actor, action, reason.strip(), answers)
        approvals = len(_approvers(conn, job_id))
        required = _required(conn, job_id)
        dropped = gate.delete_outputs(conn, job_id)
        gate.history.discard(conn, job_id)
        gate.audit.record(
            conn,
            actor=actor,
            action=f"review.{action}",
            target=job_id,
            details={
                "review": rid,
                "answers": None if answers is None else answers.to_dict(),
                "outputs_deleted": dropped,
            },
        )
        transition(
            conn,
            gate.audit,
            job_id,
            "rejected",
            actor=actor,
            error_code="egress.changes_requested" if action == "send_back" else "egress.rejected",
            error_message=reason.strip(),
        )
    return ReviewOutcome(job_id, "rejected", approvals, required)


def reject(
    gate: Gate, job_id: str, actor: str, answers: ReviewAnswers, reason: str
) -> ReviewOutcome:
    """Reject for good: the held outputs are deleted and never released."""
    return _close(gate, job_id, actor, "reject", reason, answers)


def send_back(gate: Gate, job_id: str, actor: str, reason: str) -> ReviewOutcome:
    """Reject asking for changes; the operator resubmits a fixed job."""
    return _close(gate, job_id, actor, "send_back", reason, None)
