"""The FastAPI application: ``create_app(domain)`` wires routers, limits, errors and metrics.

Thin by design: each route parses, checks the caller's role, calls one plain function of
the domain, and returns its result through a response model. The app holds no state of
its own beyond the :class:`~shuyu.context.Domain` and the metrics registry; rate-limit
counters and jobs live in the database, so replicas can sit behind one load balancer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.engine import Connection

import shuyu
from egress.ledger import Budget, Ledger
from shuyu.api.errors import ERROR_RESPONSES, install_error_handlers
from shuyu.api.metrics import CONTENT_TYPE, ApiMetrics, Probe
from shuyu.api.middleware import RequestContextMiddleware
from shuyu.api.routers import ROUTERS
from shuyu.api.schemas import Health
from shuyu.context import Domain

__all__ = ["Runner", "create_app"]

log = logging.getLogger(__name__)

DESCRIPTION = """\
The HTTP API of shuyu (数域): operators compute on public data they may use but never see.

Authenticate with `Authorization: Bearer <token>`. Every error answers
`{code, message, hint, kind, request_id}`. Jobs are asynchronous: `POST /v1/jobs` returns a
job; poll `GET /v1/jobs/{job_id}` or stream `GET /v1/jobs/{job_id}/events`.
See docs/api.md.
"""


class Runner(Protocol):
    """The background job worker started and stopped with the app (``shuyu.jobs.JobRunner``)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def _budget_probe(domain: Domain) -> Probe:
    """ε spent and left per scenario, as the privacy ledger accounts it."""

    def probe(conn: Connection) -> Iterator[Metric]:
        spent = GaugeMetricFamily(
            "shuyu_budget_epsilon_spent", "Privacy budget spent (ε).", labels=["scenario"]
        )
        left = GaugeMetricFamily(
            "shuyu_budget_epsilon_left", "Privacy budget left (ε).", labels=["scenario"]
        )
        ledger = Ledger(domain.audit, domain.keys)
        for record in domain.scenarios.list_scenarios(conn=conn):
            status = ledger.status(conn, record.id, Budget.of(record.scenario.privacy_budget))
            spent.add_metric([record.id], status.epsilon_spent)
            left.add_metric([record.id], status.epsilon_left)
        yield spent
        yield left

    return probe


def _pool_probe(domain: Domain) -> Probe:
    """The warm sandbox pool of this process: configured size, idle and bound sandboxes."""

    def probe(conn: Connection) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "shuyu_sandbox_pool_size",
            "Warm sandboxes configured (SHUYU_WARM_POOL_SIZE).",
            value=domain.settings.warm_pool_size,
        )
        # Only a pool this process already started: a scrape must not start containers.
        sandboxes = domain.__dict__.get("sandboxes")
        pool = None if sandboxes is None else sandboxes.started_pool
        if pool is not None:
            yield GaugeMetricFamily(
                "shuyu_sandbox_pool_idle", "Warm sandboxes idle.", value=pool.idle_count
            )
            yield GaugeMetricFamily(
                "shuyu_sandbox_spares",
                "One-shot sandboxes started ahead for cold jobs (SHUYU_COLD_SPARES).",
                value=pool.spare_count,
            )
            yield GaugeMetricFamily(
                "shuyu_sandbox_sessions",
                "Warm sandboxes bound to an operator's session.",
                value=len(pool.sessions()),
            )

    return probe


def create_app(domain: Domain, *, runner: Runner | None = None, console: bool = True) -> FastAPI:
    """Build the app for ``domain``; ``runner`` (if given) runs for the app's lifetime."""
    metrics = ApiMetrics(domain.engine.connect)
    metrics.domain.add_probe(_budget_probe(domain))
    metrics.domain.add_probe(_pool_probe(domain))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if runner is not None:
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                runner.stop()

    app = FastAPI(
        title="shuyu",
        version=shuyu.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        # OpenTelemetry log export would copy exception messages out of the domain.
        telemetry={"logs": False},
    )
    app.state.domain = domain
    # A DP query submitted with ?wait= runs in its request's thread when one of these slots
    # is free (shuyu.jobs.submit(run_now=True)); only where this process runs jobs at all.
    app.state.inline_runs = (
        threading.BoundedSemaphore(domain.settings.job_workers) if runner is not None else None
    )
    app.state.metrics = metrics
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_request_bytes=domain.settings.max_request_bytes,
    )
    install_error_handlers(app)

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["service"],
        responses={503: {"model": Health, "description": "The database does not answer."}},
    )
    def healthz() -> Any:
        """Liveness and readiness: the process answers and the metadata database does."""
        try:
            with domain.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            log.exception("health check: database unavailable")
            body = Health(status="unavailable", database="unavailable", version=shuyu.__version__)
            return JSONResponse(body.model_dump(), status_code=503)
        return Health(status="ok", database="ok", version=shuyu.__version__)

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    )
    def prometheus_metrics() -> Response:
        """Prometheus text format: requests, jobs by state, queue depth, gate, budgets."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    for router in ROUTERS:
        app.include_router(router, responses=ERROR_RESPONSES)

    if console:
        from shuyu.console.routes import mount_console

        mount_console(app)
    return app
