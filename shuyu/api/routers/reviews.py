"""Security review of outputs (R1.3): the queue, one output, approve, reject, send back.

Reviewers decide; the authority and auditors may read. Every decision answers the four
questions of R1.3 (``beyond_scope``, ``direct_exposure``, ``model_attack``,
``other_risk``; ``true`` = a risk). The submitter never reviews their own job, and
high-grade outputs need two different reviewers: :mod:`egress.review` enforces both.
"""

from __future__ import annotations

from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Depends, status

from egress import review
from shuyu.api.deps import Caller, DomainDep, allow
from shuyu.api.logging import bind_job
from shuyu.api.schemas import (
    CommentBody,
    Decision,
    ReviewDecision,
    ReviewDetail,
    ReviewItem,
    SendBack,
)

__all__ = ["MAX_ROWS_SHOWN", "router", "table_preview"]

router = APIRouter(prefix="/v1/reviews", tags=["reviews"])

READERS = allow("reviewer", "authority", "auditor")
REVIEWER = allow("reviewer")
MAX_ROWS_SHOWN = 1000  # aggregates are small; this bounds a pathological one


def table_preview(table: pa.Table, limit: int = MAX_ROWS_SHOWN) -> dict[str, Any]:
    """Columns, the first ``limit`` rows (as lists), and the total row count."""
    head = table.slice(0, limit)
    return {
        "columns": table.column_names,
        "rows": [list(r.values()) for r in head.to_pylist()],
        "total_rows": table.num_rows,
    }


def detail(shown: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of :func:`egress.review.show` (Arrow tables become row lists)."""
    outputs = [
        {
            "name": o["name"],
            "mode": o["mode"],
            "measures": o["measures"],
            **table_preview(o["table"]),
        }
        for o in shown["outputs"]
    ]
    return {**shown, "job_id": shown["job"]["id"], "outputs": outputs}


def outcome(o: review.ReviewOutcome) -> dict[str, Any]:
    return {
        "job_id": o.job_id,
        "state": o.state,
        "approvals": o.approvals,
        "required": o.required,
        "release_id": o.release.release_id if o.release else None,
    }


@router.get("", response_model=list[ReviewItem])
def review_queue(domain: DomainDep, caller: Annotated[Caller, Depends(READERS)]) -> Any:
    """Outputs waiting for review, oldest first, with verdict and approvals so far."""
    return review.review_queue(domain.gate, caller.user_id)


@router.get("/{job_id}", response_model=ReviewDetail)
def show_review(domain: DomainDep, caller: Annotated[Caller, Depends(READERS)], job_id: str) -> Any:
    """One output: its job and code, scenario and purpose, egress report, aggregates."""
    with bind_job(job_id):
        return detail(review.show(domain.gate, job_id, caller.user_id))


@router.post("/{job_id}/approve", response_model=ReviewDecision)
def approve(
    domain: DomainDep, caller: Annotated[Caller, Depends(REVIEWER)], job_id: str, body: Decision
) -> Any:
    """Approve (all four answers ``false``); the last required approval releases it."""
    answers = review.ReviewAnswers(**body.answers.model_dump())
    with bind_job(job_id):
        return outcome(review.approve(domain.gate, job_id, caller.user_id, answers, body.reason))


@router.post("/{job_id}/reject", response_model=ReviewDecision)
def reject(
    domain: DomainDep, caller: Annotated[Caller, Depends(REVIEWER)], job_id: str, body: Decision
) -> Any:
    """Reject for good: the held output is deleted and can never be released."""
    answers = review.ReviewAnswers(**body.answers.model_dump())
    with bind_job(job_id):
        return outcome(review.reject(domain.gate, job_id, caller.user_id, answers, body.reason))


@router.post("/{job_id}/send-back", response_model=ReviewDecision)
def send_back(
    domain: DomainDep, caller: Annotated[Caller, Depends(REVIEWER)], job_id: str, body: SendBack
) -> Any:
    """Reject asking for changes; the operator fixes the job and submits it again."""
    with bind_job(job_id):
        return outcome(review.send_back(domain.gate, job_id, caller.user_id, body.reason))


@router.post("/{job_id}/comments", status_code=status.HTTP_201_CREATED)
def add_comment(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(READERS)],
    job_id: str,
    body: CommentBody,
) -> dict[str, str]:
    """A note on an output under review; it changes nothing."""
    return {"review_id": review.comment(domain.gate, job_id, caller.user_id, body.text)}
