"""Prometheus metrics at ``/metrics``: requests in process, domain state from the database.

Request counts and latencies are counted in this process. Everything about the domain
(jobs by state, queue depth, gate findings, budget spent) is read from the metadata
database at scrape time by :class:`DomainCollector`, so every replica reports the same
truth and nothing is lost on restart. Labels are route templates (``/v1/jobs/{job_id}``),
never raw paths, so a scan of random URLs cannot blow up the number of series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.engine import Connection

from egress.checks.findings import SEVERITIES
from egress.gate_tables import egress_reports
from enclave.tables import JOB_STATES, jobs

__all__ = ["CONTENT_TYPE", "QUEUED_STATES", "ApiMetrics", "DomainCollector", "Probe"]

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Jobs accepted but not yet handed to a sandbox: the runner's queue.
QUEUED_STATES: tuple[str, ...] = ("submitted", "authorized")

# A probe adds metric families read from one database connection; other parts of the
# service (the job runner's sandbox pool, the gate) register theirs with add_probe().
Probe = Callable[[Connection], Iterator[Metric]]


def _jobs_by_state(conn: Connection) -> Iterator[Metric]:
    counts = dict.fromkeys(JOB_STATES, 0)
    for state, n in conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)):
        counts[str(state)] = int(n)
    by_state = GaugeMetricFamily("shuyu_jobs", "Jobs in each state.", labels=["state"])
    for state, n in counts.items():
        by_state.add_metric([state], n)
    yield by_state
    yield GaugeMetricFamily(
        "shuyu_job_queue_depth",
        "Jobs waiting for a sandbox (submitted or authorized).",
        value=sum(counts[s] for s in QUEUED_STATES),
    )


def _gate(conn: Connection) -> Iterator[Metric]:
    verdicts = GaugeMetricFamily(
        "shuyu_gate_reports", "Egress reports by verdict.", labels=["verdict"]
    )
    for verdict in ("blocked", "needs_review", "clean"):
        n = conn.execute(
            sa.select(sa.func.count())
            .select_from(egress_reports)
            .where(egress_reports.c.verdict == verdict)
        ).scalar_one()
        verdicts.add_metric([verdict], int(n))
    yield verdicts
    # Findings by severity, summed from each report's counts (no values in a report).
    totals = dict.fromkeys(SEVERITIES, 0)
    for (report,) in conn.execute(sa.select(egress_reports.c.report)):
        for severity, n in dict(report.get("counts") or {}).items():
            if severity in totals:
                totals[severity] += int(n)
    findings = GaugeMetricFamily(
        "shuyu_gate_findings", "Findings in all egress reports, by severity.", labels=["severity"]
    )
    for severity, n in totals.items():
        findings.add_metric([severity], n)
    yield findings


class DomainCollector:
    """Reads the domain's state at scrape time; a database error yields no domain metrics."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._probes: list[Probe] = [_jobs_by_state, _gate]

    def add_probe(self, probe: Probe) -> None:
        self._probes.append(probe)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("shuyu_database_up", "1 when the metadata database answered.")
        families: list[Metric] = []
        try:
            with self._connect() as conn:
                for probe in self._probes:
                    try:
                        families.extend(probe(conn))
                    except Exception:  # one broken probe must not hide the others
                        log.exception("metrics probe %s failed", probe.__name__)
                        conn.rollback()
        except Exception:
            log.exception("metrics: the database did not answer")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


class ApiMetrics:
    """The registry of one app: request metrics plus the domain collector."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        # A registry per app, not the global one: two apps in one test process do not clash.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shuyu_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shuyu_http_request_seconds",
            "Time to answer an HTTP request (to the first byte of a stream).",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.domain = DomainCollector(connect)
        self.registry.register(self.domain)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
