"""Jobs: submit (or dry-run), follow, cancel, and download the released result.

Jobs are asynchronous. ``POST /v1/jobs`` answers 202 with the job queued; the runner takes
it from there. Follow it by polling ``GET /v1/jobs/{job_id}``, by streaming
``GET /v1/jobs/{job_id}/events`` (server-sent events: one ``state`` event per change,
keep-alive comments in between, the stream ends when the job is final), or by asking either
call to wait: ``?wait=S`` holds the answer up to S seconds until the job *settles* (released,
waiting for a reviewer, or ended) and answers 200 then, 202 if it is still on its way. A
submit that waits and accepts Arrow (``Accept: application/vnd.apache.arrow.stream``) gets
the released answer itself, with the job's id and state in ``Shuyu-Job-Id`` and
``Shuyu-Job-State``: a short query is one request. Otherwise the result can be downloaded
once it is released, as Arrow IPC, CSV or JSON.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from enclave.tables import jobs as jobs_table
from shuyu import jobs
from shuyu.api.deps import Caller, DomainDep, allow
from shuyu.api.errors import ERROR_RESPONSES_FOR_FILES
from shuyu.api.logging import bind_job
from shuyu.api.schemas import (
    RELEASED_STATES,
    SETTLED_STATES,
    TERMINAL_STATES,
    DryRunReport,
    JobEvent,
    JobView,
    SubmitJob,
)
from shuyu.context import Domain
from shuyu.errors import RateLimited

__all__ = ["ACTIVE_STATES", "router"]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

OPERATOR = allow("operator")
CANCELLERS = allow("operator", "authority")
READERS = allow("operator", "reviewer", "auditor", "authority")

# Jobs that hold (or are about to hold) a sandbox: what the per-scenario limit counts.
ACTIVE_STATES: tuple[str, ...] = ("submitted", "authorized", "running", "computed", "gated")
EVENT_POLL_S = 0.5  # the event stream's fallback poll (changes made by other processes)
EVENT_STREAM_MAX_S = 600.0  # a stream ends after this; the client reconnects
RETRY_AFTER_BUSY_S = 5
MAX_WAIT_S = 60.0  # ?wait= longer than this is refused (422): reconnect instead

WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_S,
        description="Seconds to hold the answer until the job settles (released, waiting "
        "for a reviewer, or ended): 200 if it did, 202 with its state if not. 0: answer now.",
    ),
]
SETTLED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": JobView, "description": "The job has settled (with `wait`)."},
    202: {"model": JobView, "description": "The job is on its way."},
}
SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **SETTLED_RESPONSES,
    200: {
        "model": JobView,
        "description": "The job has settled (with `wait`). With `Accept: "
        "application/vnd.apache.arrow.stream` and the job released: its answer as an Arrow "
        "IPC stream, the job in the `Shuyu-Job-Id` and `Shuyu-Job-State` headers.",
        "content": {
            "application/vnd.apache.arrow.stream": {
                "schema": {"type": "string", "format": "binary"}
            }
        },
    },
}

MEDIA = {
    "arrow": "application/vnd.apache.arrow.stream",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
}


def _check_concurrency(domain: Domain, scenario_id: str) -> None:
    limit = domain.settings.max_concurrent_jobs_per_scenario
    with domain.engine.connect() as conn:
        active = conn.execute(
            sa.select(sa.func.count())
            .select_from(jobs_table)
            .where(jobs_table.c.scenario_id == scenario_id, jobs_table.c.state.in_(ACTIVE_STATES))
        ).scalar_one()
    if active >= limit:
        raise RateLimited(
            f"scenario {scenario_id} already has {active} jobs in progress (limit {limit})",
            code="service.too_many_jobs",
            retry_after_s=RETRY_AFTER_BUSY_S,
            hint="wait for one to finish (GET /v1/jobs), then submit again; the limit is "
            "SHUYU_MAX_CONCURRENT_JOBS_PER_SCENARIO",
        )


def _submit(
    domain: Domain, caller: Caller, body: SubmitJob, *, dry_run: bool, run_now: bool = False
) -> dict[str, Any]:
    return jobs.submit(
        domain,
        caller.user,
        body.scenario_id,
        kind=body.kind,
        code=body.code,
        output_mode=body.output_mode,
        epsilon=body.epsilon,
        accuracy=body.accuracy,
        dry_run=dry_run,
        run_now=run_now,
    )


async def _settle(
    domain: Domain, caller: Caller, view: dict[str, Any], wait_s: float
) -> dict[str, Any]:
    """The job once it settles, or as it is when ``wait_s`` has passed.

    Sleeps on the job watch (no thread held); reads the job back only when this process
    committed a change that settles it, or at each fallback poll (another process's change).
    """
    job_id = str(view["id"])
    deadline = time.monotonic() + wait_s
    watch = domain.job_watch
    seen = watch.seen(job_id)
    while view["state"] not in SETTLED_STATES:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        stamp = await watch.wait_async(seen, min(EVENT_POLL_S, left), job_id)
        changed, seen = stamp > seen, stamp
        if changed and watch.state(job_id) not in SETTLED_STATES:
            continue  # a step on the way (running, computed, gated): nothing to read
        view = await anyio.to_thread.run_sync(jobs.get, domain, caller.user, job_id)
    return view


def _settled_response(view: dict[str, Any]) -> JSONResponse:
    """200 with the job if it settled, 202 if it is still on its way."""
    code = status.HTTP_200_OK if view["state"] in SETTLED_STATES else status.HTTP_202_ACCEPTED
    return JSONResponse(JobView.model_validate(view).model_dump(mode="json"), status_code=code)


def _wants_arrow(request: Request) -> bool:
    """Whether the Accept header lists Arrow (with a quality above 0)."""
    for item in request.headers.get("accept", "").split(","):
        media, *params = (p.strip() for p in item.split(";"))
        if media == MEDIA["arrow"]:
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00") for p in params)
    return False


def _answer(domain: Domain, caller: Caller, view: dict[str, Any]) -> Response:
    """A released job's answer as Arrow IPC, the job named in headers."""
    table = jobs.result_table(domain, caller.user, str(view["id"]))
    return Response(
        _encode(table, "arrow"),
        media_type=MEDIA["arrow"],
        headers={
            "Shuyu-Job-Id": str(view["id"]),
            "Shuyu-Job-State": str(view["state"]),
            "Location": f"/v1/jobs/{view['id']}",
        },
    )


def _submit_now(
    domain: Domain, caller: Caller, body: SubmitJob, slots: threading.BoundedSemaphore | None
) -> dict[str, Any]:
    """Submit; a DP query whose caller waits runs right here when a slot is free.

    Only DP SQL runs in the request: short, in the operator's warm session. Other jobs
    (disclosure-checked aggregates hash identifiers in a sandbox of their own, models train)
    go to the runner and the request waits for them like any other.
    """
    _check_concurrency(domain, body.scenario_id)
    dp_sql = body.kind == "sql" and body.output_mode == "dp_aggregate"
    if slots is None or not dp_sql or not slots.acquire(blocking=False):
        return _submit(domain, caller, body, dry_run=False)
    try:
        return _submit(domain, caller, body, dry_run=False, run_now=True)
    finally:
        slots.release()


@router.post(
    "",
    response_model=JobView,
    status_code=status.HTTP_202_ACCEPTED,
    responses=SUBMIT_RESPONSES,
)
async def submit_job(
    request: Request,
    domain: DomainDep,
    caller: Annotated[Caller, Depends(OPERATOR)],
    body: SubmitJob,
    wait: WaitQuery = 0.0,
) -> Any:
    """Submit a job; it runs in the background (poll it, stream its events, or `wait`).

    With `wait` and `Accept: application/vnd.apache.arrow.stream`, a job released within the
    wait answers with its result itself."""
    slots = request.app.state.inline_runs if wait > 0 else None
    view = await anyio.to_thread.run_sync(_submit_now, domain, caller, body, slots)
    with bind_job(str(view.get("id", ""))):
        if wait <= 0:
            return view
        view = await _settle(domain, caller, view, wait)
        if view["state"] in RELEASED_STATES and _wants_arrow(request):
            return await anyio.to_thread.run_sync(_answer, domain, caller, view)
        return _settled_response(view)


@router.post("/dry-run", response_model=DryRunReport)
def dry_run_job(
    domain: DomainDep, caller: Annotated[Caller, Depends(OPERATOR)], body: SubmitJob
) -> Any:
    """Check and price a job without running it or charging the budget."""
    return _submit(domain, caller, body, dry_run=True)


@router.get("", response_model=list[JobView])
def list_jobs(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(READERS)],
    scenario_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Any:
    """Jobs you may see: an operator its organisation's, reviewers and auditors all."""
    return jobs.list_jobs(domain, caller.user, scenario_id)


def visible_job(
    domain: DomainDep, caller: Annotated[Caller, Depends(READERS)], job_id: str
) -> dict[str, Any]:
    """The job if the caller may see it (resolved before a stream starts, so 404 is a 404)."""
    with bind_job(job_id):
        return jobs.get(domain, caller.user, job_id)


@router.get("/{job_id}", response_model=JobView, responses=SETTLED_RESPONSES)
async def show_job(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(READERS)],
    view: Annotated[dict[str, Any], Depends(visible_job)],
    wait: WaitQuery = 0.0,
) -> Any:
    """One job: state, error code (never data), timestamps; with `wait`, once it settles."""
    if wait > 0:
        with bind_job(str(view["id"])):
            return _settled_response(await _settle(domain, caller, view, wait))
    return view


@router.post("/{job_id}/cancel", response_model=JobView)
def cancel_job(
    domain: DomainDep, caller: Annotated[Caller, Depends(CANCELLERS)], job_id: str
) -> Any:
    """Cancel a job that has not finished (the submitter, or an authority)."""
    with bind_job(job_id):
        return jobs.cancel(domain, caller.user, job_id)


def _event(view: dict[str, Any]) -> ServerSentEvent:
    event = JobEvent(
        job_id=str(view["id"]),
        state=view["state"],
        error_code=view.get("error_code"),
        updated_at=str(view["updated_at"]),
        terminal=view["state"] in TERMINAL_STATES,
        job=JobView.model_validate(view),
    )
    return ServerSentEvent(data=event, event="state", id=f"{event.state}@{event.updated_at}")


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        **ERROR_RESPONSES_FOR_FILES,
        200: {
            "description": "`event: state` with a JobEvent as `data`, on every change.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
)
async def job_events(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(READERS)],
    view: Annotated[dict[str, Any], Depends(visible_job)],
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: the job's state now, then each change until it is final."""
    job_id = str(view["id"])
    yield _event(view)
    last = (view["state"], view["updated_at"])
    watch = domain.job_watch
    seen = 0  # the first wait returns at once if the job changed since `view` was read
    with anyio.move_on_after(EVENT_STREAM_MAX_S):
        while view["state"] not in TERMINAL_STATES:
            # Woken as soon as this process commits a change to the job; the timeout is
            # the fallback for changes made by another process sharing the database.
            seen = await watch.wait_async(seen, EVENT_POLL_S, job_id)
            view = await anyio.to_thread.run_sync(jobs.get, domain, caller.user, job_id)
            if (view["state"], view["updated_at"]) != last:
                last = (view["state"], view["updated_at"])
                yield _event(view)


def _encode(table: pa.Table, fmt: str) -> bytes:
    if fmt == "arrow":
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return bytes(sink.getvalue().to_pybytes())
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        return buf.getvalue()
    rows = table.to_pylist()
    return json.dumps(
        {"columns": table.column_names, "rows": rows}, default=str, ensure_ascii=False
    ).encode()


@router.get(
    "/{job_id}/result",
    response_class=Response,
    responses={
        **ERROR_RESPONSES_FOR_FILES,
        200: {
            "description": "The released result.",
            "content": {
                MEDIA["arrow"]: {"schema": {"type": "string", "format": "binary"}},
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "columns": {"type": "array", "items": {"type": "string"}},
                            "rows": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                },
            },
        },
    },
)
def job_result(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(READERS)],
    job_id: str,
    format: Annotated[Literal["arrow", "csv", "json"], Query()] = "arrow",
) -> Response:
    """The released result (only once released): Arrow IPC stream, CSV or JSON."""
    with bind_job(job_id):
        table = jobs.result_table(domain, caller.user, job_id)
    ext = {"arrow": "arrows", "csv": "csv", "json": "json"}[format]
    return Response(
        _encode(table, format),
        media_type=MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{job_id}.{ext}"'},
    )
