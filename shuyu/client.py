"""The Python SDK: call a shuyu server from a script or a notebook.

    from shuyu.client import Client

    with Client("http://127.0.0.1:8750", token) as sy:
        sql = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"
        job = sy.submit_sql("S-2026-014", sql, epsilon=0.5)
        job = sy.wait(job)                 # until released, or a reviewer's decision
        table = sy.result(job)             # a pyarrow.Table of the released aggregates

        # or, for a short query, in one request: the released answer, or NotReleased
        answer = sy.query("S-2026-014", sql, epsilon=0.5)
        answer.table, answer.job_id

Every method returns a typed model (the same pydantic models the server answers with) or
an Arrow table. Every error the server answers becomes a :class:`shuyu.errors.RemoteError`
subclass chosen by the error's kind (``RemoteForbidden``, ``RemoteNotFound``,
``RemoteExhausted``, ...) carrying the server's ``code``, ``hint``, HTTP ``status`` and
``request_id``; a server that cannot be reached is ``RemoteUnavailable``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
import pyarrow as pa
import pyarrow.ipc as ipc
from pydantic import BaseModel, TypeAdapter

from shuyu.api.schemas import (
    RELEASED_STATES,
    SETTLED_STATES,
    BudgetView,
    DryRunReport,
    JobEvent,
    JobView,
    Me,
    ReleaseView,
    ReviewDecision,
    ReviewDetail,
    ReviewItem,
)
from shuyu.errors import (
    REMOTE_ERRORS,
    NotReleased,
    RemoteError,
    RemoteInternal,
    RemoteUnavailable,
)

if TYPE_CHECKING:
    from egress.models.output import SavedModel

__all__ = ["Client", "JobRef", "QueryAnswer"]

M = TypeVar("M", bound=BaseModel)
JobRef = JobView | str  # a job, or its id
OutputMode = Literal["dp_aggregate", "sdc_aggregate", "model"]

# The longest one request may ask the server to hold an answer (the server's ?wait= limit).
_MAX_WAIT_S = 60.0


_ARROW = "application/vnd.apache.arrow.stream"


@dataclass(frozen=True)
class QueryAnswer:
    """A released answer: the table, and the job that produced it (to cite, or to find its
    release and signed manifest)."""

    job_id: str
    state: str
    table: pa.Table

    def to_pandas(self) -> Any:
        return self.table.to_pandas()


def _sql_job(
    scenario: str, sql: str, output_mode: str, epsilon: float | None, accuracy: float | None
) -> dict[str, Any]:
    """The body of ``POST /v1/jobs`` for a SQL job."""
    return {
        "scenario_id": scenario,
        "kind": "sql",
        "code": sql,
        "output_mode": output_mode,
        "epsilon": epsilon,
        "accuracy": accuracy,
    }


def _job_id(job: JobRef) -> str:
    return job if isinstance(job, str) else job.id


def _error_from(response: httpx.Response) -> RemoteError:
    """The typed exception for an error response (our JSON shape, or anything else)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "code" not in body:
        body = {
            "code": f"http.{response.status_code}",
            "message": f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} {response.reason_phrase}",
            "kind": "unavailable" if response.status_code >= 502 else "internal",
        }
    cls = REMOTE_ERRORS.get(str(body.get("kind", "")), RemoteInternal)
    exc = cls(
        str(body.get("message", "")),
        hint=str(body.get("hint", "")),
        code=str(body["code"]),
        details=body.get("details") or None,
    )
    exc.status = response.status_code
    exc.request_id = str(body.get("request_id") or response.headers.get("x-request-id", ""))
    return exc


class Client:
    """A shuyu server at ``url``, called with one bearer ``token``.

    ``http`` lets a caller pass its own configured ``httpx.Client`` (proxies, CA bundle, or
    a test client bound to an in-process app); by default one is created and closed with
    this client. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def __repr__(self) -> str:  # never show the token
        return f"Client({self.url!r})"

    # --- plumbing ------------------------------------------------------------------------
    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        accept: str | None = None,
    ) -> httpx.Response:
        headers = self._headers if accept is None else {**self._headers, "Accept": accept}
        try:
            response = self._http.request(
                method,
                self.url + path,
                json=json_body,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise RemoteUnavailable(
                f"cannot reach {self.url}: {type(exc).__name__}",
                code="client.unreachable",
                hint="check the URL and that `shuyu serve` is running there",
            ) from exc
        if response.is_error:
            raise _error_from(response)
        return response

    def _get(self, model: type[M], path: str, **params: Any) -> M:
        return model.model_validate(self._request("GET", path, params=params).json())

    def _list(self, model: type[M], path: str, **params: Any) -> list[M]:
        data = self._request("GET", path, params=params).json()
        return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]

    def _post(
        self, model: type[M], path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> M:
        response = self._request("POST", path, json_body=body, params=params)
        return model.model_validate(response.json())

    def _hold(self, wait_s: float | None) -> dict[str, Any] | None:
        """The ``?wait=`` of one request: at most what the server allows, and a little less
        than this client's own read timeout, so the server answers first."""
        if not wait_s or wait_s <= 0:
            return None
        read = self._http.timeout.read
        cap = _MAX_WAIT_S if read is None else min(_MAX_WAIT_S, max(read - 5.0, 0.5))
        return {"wait": round(min(wait_s, cap), 3)}

    # --- who am I ------------------------------------------------------------------------
    def me(self) -> Me:
        """The user this token belongs to: id, roles, organisation."""
        return self._get(Me, "/v1/me")

    # --- operator: jobs ------------------------------------------------------------------
    def submit_sql(
        self,
        scenario: str,
        sql: str,
        *,
        dry_run: bool = False,
        epsilon: float | None = None,
        accuracy: float | None = None,
        output_mode: OutputMode = "dp_aggregate",
        wait_s: float | None = None,
    ) -> JobView | DryRunReport:
        """Submit a SQL job under ``scenario``; with ``dry_run`` only estimate it.

        A dry run compiles the query, checks the policy and prices it against the budget
        without running anything or charging the ledger; it returns a :class:`DryRunReport`.
        With ``wait_s`` the server holds its answer until the job settles: a short query is
        then one request (longer waits take a request per 60 s, or per this client's read
        timeout). Check ``.state``: a job still on its way after ``wait_s`` comes back as it
        is; :meth:`wait` follows it further.
        """
        body = _sql_job(scenario, sql, output_mode, epsilon, accuracy)
        if dry_run:
            return self._post(DryRunReport, "/v1/jobs/dry-run", body)
        if not wait_s or wait_s <= 0:
            return self._post(JobView, "/v1/jobs", body)
        deadline = time.monotonic() + wait_s
        view = self._post(JobView, "/v1/jobs", body, params=self._hold(wait_s))
        return self._follow(view, deadline)

    def query(
        self,
        scenario: str,
        sql: str,
        *,
        epsilon: float | None = None,
        accuracy: float | None = None,
        output_mode: OutputMode = "dp_aggregate",
        timeout_s: float = 600.0,
    ) -> QueryAnswer:
        """Run a SQL job and return its released answer: one request when it is released
        within the server's wait (a clean DP answer under a scenario that auto-releases).

        Raises :class:`shuyu.errors.NotReleased` (with ``.job``) when the job settles
        without a released answer — refused, failed, or waiting for a reviewer (then
        :meth:`wait` and :meth:`result` take it from there) — or is still on its way after
        ``timeout_s``.
        """
        body = _sql_job(scenario, sql, output_mode, epsilon, accuracy)
        deadline = time.monotonic() + timeout_s
        response = self._request(
            "POST",
            "/v1/jobs",
            json_body=body,
            params=self._hold(timeout_s),
            accept=f"{_ARROW}, application/json;q=0.5",
        )
        if response.headers.get("content-type", "").startswith(_ARROW):
            return QueryAnswer(
                job_id=response.headers["shuyu-job-id"],
                state=response.headers["shuyu-job-state"],
                table=ipc.open_stream(response.content).read_all(),
            )
        view = self._follow(JobView.model_validate(response.json()), deadline)
        if view.state in RELEASED_STATES:  # released by a reviewer's approval, or after the wait
            return QueryAnswer(job_id=view.id, state=view.state, table=self.result(view))
        why = f": {view.error_code} {view.error_message or ''}".rstrip() if view.error_code else ""
        raise NotReleased(
            f"job {view.id} is {view.state}{why}",
            job=view,
            hint="a reviewer decides on it (wait() then result())"
            if view.state in ("pending_review", "approved")
            else "see the job's error and the egress report (`shuyu job show`)"
            if view.state in SETTLED_STATES
            else "it is still running: wait() then result()",
        )

    def submit_python(
        self,
        scenario: str,
        path: str | Path,
        *,
        output_mode: OutputMode = "model",
        epsilon: float | None = None,
    ) -> JobView:
        """Submit the Python file at ``path`` as a job under ``scenario``."""
        code = Path(path).read_text(encoding="utf-8")
        body = {
            "scenario_id": scenario,
            "kind": "python",
            "code": code,
            "output_mode": output_mode,
            "epsilon": epsilon,
        }
        return self._post(JobView, "/v1/jobs", body)

    def job(self, job: JobRef) -> JobView:
        return self._get(JobView, f"/v1/jobs/{_job_id(job)}")

    def jobs(self, scenario: str | None = None) -> list[JobView]:
        """Jobs you may see (your own, or all for reviewers, auditors and the authority)."""
        return self._list(JobView, "/v1/jobs", scenario_id=scenario)

    def cancel(self, job: JobRef) -> JobView:
        return self._post(JobView, f"/v1/jobs/{_job_id(job)}/cancel")

    def events(self, job: JobRef, *, timeout_s: float = 600.0) -> Iterator[JobEvent]:
        """Stream the job's state changes (server-sent events) until it settles."""
        url = f"/v1/jobs/{_job_id(job)}/events"
        try:
            with self._http.stream(
                "GET",
                self.url + url,
                headers={**self._headers, "Accept": "text/event-stream"},
                timeout=httpx.Timeout(timeout_s, connect=10.0),
            ) as response:
                if response.is_error:
                    response.read()
                    raise _error_from(response)
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        yield JobEvent.model_validate(json.loads(line[5:].strip()))
        except httpx.TransportError as exc:
            raise RemoteUnavailable(
                f"lost the event stream from {self.url}: {type(exc).__name__}",
                code="client.stream_lost",
                hint="call wait() again; it resumes from the job's current state",
            ) from exc

    def wait(self, job: JobRef, *, timeout_s: float = 600.0, poll_s: float = 1.0) -> JobView:
        """Wait until the job settles: released, refused, failed, rejected, or waiting for
        a reviewer. Asks the server to hold each answer until the job settles (long
        polling, up to 60 s a request); ``poll_s`` spaces the requests to a server that
        answers at once. Raises TimeoutError.
        """
        deadline = time.monotonic() + timeout_s
        view = self._follow(_job_id(job), deadline, poll_s=poll_s)
        if view.state not in SETTLED_STATES:
            raise TimeoutError(f"job {view.id} is still {view.state} after {timeout_s} s")
        return view

    def _follow(self, job: JobRef, deadline: float, *, poll_s: float = 1.0) -> JobView:
        """The job once it settles, or as it is at ``deadline`` (monotonic clock)."""
        view = None if isinstance(job, str) else job
        job_id = _job_id(job)
        while view is None or view.state not in SETTLED_STATES:
            left = deadline - time.monotonic()
            if view is not None and left <= 0:
                break
            asked = time.monotonic()
            view = self._get(JobView, f"/v1/jobs/{job_id}", **(self._hold(left) or {}))
            # A server that held the request has waited already; one that did not, hasn't.
            if view.state not in SETTLED_STATES and time.monotonic() - asked < poll_s / 2:
                time.sleep(min(poll_s, max(deadline - time.monotonic(), 0)))
        return view

    def result(self, job: JobRef) -> pa.Table:
        """The released result of ``job`` as an Arrow table (only once released)."""
        response = self._request(
            "GET", f"/v1/jobs/{_job_id(job)}/result", params={"format": "arrow"}
        )
        return ipc.open_stream(response.content).read_all()

    def save_model(self, job: JobRef, path: Path | str | None = None) -> SavedModel:
        """Write a released model job's model to ``path`` (default ``./<job id>.skops``) and
        its card next to it; ``.load_code()`` of the answer says how to load it with skops
        and its explicit trusted types."""
        from egress.models.output import save_model_result

        job_id = _job_id(job)
        return save_model_result(self.result(job_id), Path(path or f"{job_id}.skops"))

    def budget(self, scenario: str) -> BudgetView:
        """The scenario's privacy budget: ε and δ in total, spent and left."""
        return self._get(BudgetView, f"/v1/scenarios/{scenario}/budget")

    # --- reviewer --------------------------------------------------------------------------
    def reviews(self) -> list[ReviewItem]:
        """Outputs waiting for review that you may review."""
        return self._list(ReviewItem, "/v1/reviews")

    def review(self, job: JobRef) -> ReviewDetail:
        """One output with its job, scenario, purpose, egress report and aggregates."""
        return self._get(ReviewDetail, f"/v1/reviews/{_job_id(job)}")

    def approve(self, job: JobRef, answers: Mapping[str, bool], reason: str = "") -> ReviewDecision:
        """Approve an output. ``answers`` holds the four R1.3 questions, each ``False``
        (no risk): ``beyond_scope``, ``direct_exposure``, ``model_attack``, ``other_risk``.
        """
        body = {"answers": dict(answers), "reason": reason}
        return self._post(ReviewDecision, f"/v1/reviews/{_job_id(job)}/approve", body)

    def reject(self, job: JobRef, answers: Mapping[str, bool], reason: str) -> ReviewDecision:
        """Reject an output for good, with a reason the operator will read."""
        body = {"answers": dict(answers), "reason": reason}
        return self._post(ReviewDecision, f"/v1/reviews/{_job_id(job)}/reject", body)

    def send_back(self, job: JobRef, reason: str) -> ReviewDecision:
        """Reject asking for changes; the operator fixes the job and submits it again."""
        return self._post(
            ReviewDecision, f"/v1/reviews/{_job_id(job)}/send-back", {"reason": reason}
        )

    # --- releases ------------------------------------------------------------------------
    def releases(self) -> list[ReleaseView]:
        return self._list(ReleaseView, "/v1/releases")

    def download_release(
        self,
        release_id: str,
        directory: str | Path,
        *,
        fmt: Literal["zip", "tar"] = "zip",
        purpose: str = "",
    ) -> Path:
        """Save a release (data, report, signed manifest) as one archive in ``directory``.

        The server records that you received it, and ``purpose`` if given (R4.2). Verify
        the unpacked folder offline with ``shuyu release verify``.
        """
        response = self._request(
            "GET",
            f"/v1/releases/{release_id}/archive",
            params={"format": fmt, "purpose": purpose or None},
        )
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{release_id}.{'zip' if fmt == 'zip' else 'tar.gz'}"
        path.write_bytes(response.content)
        return path
