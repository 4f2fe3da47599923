"""The gate: check a job's outputs, keep the report, hold the outputs, route the job.

This is what the orchestrator calls once a job is ``computed``::

    gate = domain.gate
    report = gate.check(job_id, outputs, identifiers=index, precomputed=sandbox_findings)
    result = gate.submit(job_id, outputs, report)

:meth:`Gate.check` works out the thresholds (the scenario's disclosure block over its
datasets' grades) and loads the cell history of every scenario over the same datasets;
:meth:`Gate.submit` stores the report, seals the outputs (``gate.outputs`` key), records
the cells' sketches for later differencing, and moves the job: ``refused`` when blocked,
``auto_released`` for a clean DP output the scenario lets through, else ``pending_review``.
Everything in one transaction with its audit entry.

A DP answer takes :meth:`Gate.process_charged` instead: it checks the noisy values before
they are paid for, then runs the ledger charge, the report, the held output and (for an
auto-released answer) the release in one transaction, so no answer is ever charged and
left unreported, or released unpaid.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from egress.checks import (
    DifferencingIndex,
    Finding,
    IdentifierIndex,
    OutputSpec,
    SourceRows,
    Thresholds,
)
from egress.errors import EgressError
from egress.gate_tables import egress_outputs, egress_reports
from egress.history import CellHistory
from egress.release import Packaged, package, register, sources_of
from egress.report import EgressReport, Route, build_report, route
from egress.sealing import key_bytes, open_sealed, seal
from enclave.audit import AuditLog
from enclave.authz_tables import scenarios
from enclave.jobstore import Job, get_job, transition
from enclave.keys import KeyService
from enclave.scenarios import DatasetRow, dataset_rows
from enclave.signing import Signer
from policies.disclosure import effective_disclosure
from policies.grades import GradePolicy, load_grades
from policies.scenario import Disclosure, Scenario

__all__ = ["Authorize", "Gate", "GateResult"]

# (conn, user id, action) -> anything; raises a ShuyuError when the user may not act.
Authorize = Callable[[Connection, str, str], Any]

# Built once: every job through the gate runs them.
_SCENARIO_SPEC = sa.select(scenarios.c.spec).where(scenarios.c.id == sa.bindparam("scenario_id"))
_INSERT_REPORT = egress_reports.insert()
_INSERT_OUTPUT = egress_outputs.insert()


@dataclass(frozen=True)
class GateResult:
    job_id: str
    route: Route
    verdict: str
    report_sha256: str
    required_reviewers: int
    release_id: str | None = None


@dataclass
class Gate:
    """The egress gate of one domain: checks, held outputs, reviews, releases."""

    engine: Engine
    keys: KeyService
    audit: AuditLog
    signer: Signer
    releases_dir: Path
    grades: GradePolicy = field(default_factory=load_grades)
    authorize: Authorize | None = None
    history: CellHistory = field(init=False)

    def __post_init__(self) -> None:
        self.history = CellHistory(self.engine, self.keys)

    # --- policy facts ------------------------------------------------------------------

    def scenario(self, conn: Connection, scenario_id: str) -> Scenario | None:
        row = conn.execute(_SCENARIO_SPEC, {"scenario_id": scenario_id}).first()
        return None if row is None else Scenario.model_validate(row.spec)

    def dataset_grades(self, conn: Connection, names: Sequence[str]) -> list[str]:
        """Each dataset's grade; an unknown dataset counts as the highest grade."""
        return self._grades_of(dataset_rows(conn, names), names)

    def _grades_of(self, rows: Mapping[str, DatasetRow], names: Sequence[str]) -> list[str]:
        top = self.grades.operable_levels[-1]
        return [rows[n].grade if n in rows else top for n in names] or [top]

    def thresholds(self, conn: Connection, scenario_id: str, datasets: Sequence[str]) -> Thresholds:
        sc = self.scenario(conn, scenario_id)
        return self._thresholds(sc, dataset_rows(conn, datasets), datasets)

    def _thresholds(
        self, sc: Scenario | None, rows: Mapping[str, DatasetRow], datasets: Sequence[str]
    ) -> Thresholds:
        disclosure = sc.disclosure if sc is not None else Disclosure()
        eff = effective_disclosure(disclosure, self._grades_of(rows, datasets), self.grades)
        return Thresholds.from_disclosure(eff)

    def required_reviewers(self, conn: Connection, datasets: Sequence[str]) -> int:
        """Distinct approvals an output of these datasets needs (two for L4 by default)."""
        return self._reviewers(self.dataset_grades(conn, datasets))

    def _reviewers(self, grades: Sequence[str]) -> int:
        return max([1, *(self.grades.get(g).reviewers_required for g in grades)])

    def check_actor(self, conn: Connection, user: str, action: str) -> None:
        if self.authorize is not None:
            self.authorize(conn, user, action)

    # --- checking ----------------------------------------------------------------------

    def check(
        self,
        job_id: str,
        outputs: Sequence[OutputSpec],
        *,
        identifiers: IdentifierIndex | None = None,
        sources: Mapping[str, SourceRows] | None = None,
        precomputed: Mapping[str, Mapping[str, Sequence[Finding]]] | None = None,
        thresholds: Thresholds | None = None,
    ) -> EgressReport:
        """The report on a job's outputs, against every earlier release on its datasets."""
        datasets = sorted({d for o in outputs for d in o.datasets})
        with self.engine.connect() as conn:
            job = get_job(conn, job_id)
            t = thresholds or self.thresholds(conn, job.scenario_id, datasets)
            history: DifferencingIndex | None = None
            # DP outputs are exempt from differencing (check_differencing returns nothing
            # for them), so an all-DP job skips reading and indexing the earlier releases.
            if datasets and not all(o.is_dp for o in outputs):
                history = self.history.index(conn, datasets, t.min_cell_units, exclude_job=job_id)
        return build_report(
            job_id,
            outputs,
            t,
            identifiers=identifiers,
            history=history,
            sources=sources,
            precomputed=precomputed,
        )

    def submit(
        self,
        job_id: str,
        outputs: Sequence[OutputSpec],
        report: EgressReport,
        *,
        auto_release_clean_dp: bool | None = None,
        actor: str = "system",
        on_hold: Callable[[Connection], None] | None = None,
    ) -> GateResult:
        """Keep the report and outputs and move the job on; safe to call twice.

        ``on_hold(conn)`` runs in the transaction that keeps the outputs, only when they are
        kept (not refused): a DP model's ledger charge commits with its held output or not
        at all. An exception from it rolls the whole submission back.
        """
        if report.job_id != job_id:
            raise EgressError(
                f"the report is for job {report.job_id}, not {job_id}",
                code="egress.check_input",
                kind="invalid",
                hint="build the report for this job",
            )
        text = report.to_json()
        sha = hashlib.sha256(text.encode()).hexdigest()
        with self.engine.connect() as conn:
            existing = conn.execute(
                sa.select(egress_reports).where(egress_reports.c.job_id == job_id)
            ).first()
            if existing is not None:
                done = GateResult(
                    job_id,
                    existing.route,
                    existing.verdict,
                    existing.report_sha256,
                    int(existing.required_reviewers),
                )
                # an auto-release that crashed after the report was kept: finish it now
                if existing.route != "auto_released" or get_job(conn, job_id).state != "gated":
                    return done
        if existing is not None:
            from egress.release import release_job

            rel = release_job(self, job_id, actor=actor, auto=True)
            return GateResult(
                done.job_id,
                done.route,
                done.verdict,
                done.report_sha256,
                done.required_reviewers,
                rel.release_id,
            )
        with self.engine.begin() as conn:
            job = get_job(conn, job_id)
            if job.state == "computed":
                transition(conn, self.audit, job_id, "gated", actor=actor)
            elif job.state != "gated":
                raise EgressError(
                    f"job {job_id} is {job.state}; only a computed job goes through the gate",
                    code="egress.job_state",
                    kind="conflict",
                    hint="run the job first",
                )
            if auto_release_clean_dp is None:
                sc = self.scenario(conn, job.scenario_id)
                auto_release_clean_dp = bool(sc and sc.auto_release_clean_dp)
            where = route(
                report,
                modes=[o.mode for o in outputs] or [job.output_mode],
                auto_release_clean_dp=auto_release_clean_dp,
            )
            needed = self.required_reviewers(conn, report.datasets)
            self._keep(conn, job, outputs, report, sha, where, needed, actor, on_hold)
            if where != "auto_released":
                return GateResult(job_id, where, report.verdict, sha, needed)
            from egress.release import Held, release_job

            # The job as this transaction leaves it (gated; a model's on_hold may have
            # written its spend into the params), for the release's manifest.
            held = Held(get_job(conn, job_id), outputs, report, sha, needed)
        rel = release_job(self, job_id, actor=actor, auto=True, held=held)
        return GateResult(job_id, where, report.verdict, sha, needed, rel.release_id)

    def _keep(
        self,
        conn: Connection,
        job: Job,
        outputs: Sequence[OutputSpec],
        report: EgressReport,
        sha: str,
        where: Route,
        needed: int,
        actor: str,
        on_hold: Callable[[Connection], None] | None = None,
    ) -> bool:
        """In the caller's transaction: keep the report (audited) and act on its route.

        ``refused``: the job is refused and nothing is held. Otherwise the outputs are
        sealed and held, with their cells for later differencing, and a ``pending_review``
        job moves there (an ``auto_released`` one stays ``gated`` for its release).
        Returns whether any cells were recorded.
        """
        job_id = job.id
        conn.execute(
            _INSERT_REPORT,
            {
                "job_id": job_id,
                "verdict": report.verdict,
                "route": where,
                "report": report.to_dict(),
                "report_sha256": sha,
                "required_reviewers": needed,
                "created_at": datetime.now(UTC),
            },
        )
        self.audit.record(
            conn,
            actor=actor,
            action="egress.report",
            target=job_id,
            result=report.verdict,
            details={"route": where, "counts": report.counts(), "report_sha256": sha},
        )
        if where == "refused":
            transition(
                conn,
                self.audit,
                job_id,
                "refused",
                actor=actor,
                error_code="egress.blocked",
                error_message="the egress report blocks an output; see the report's "
                "findings and fixes",
            )
            return False
        if on_hold is not None:
            on_hold(conn)
        self.store_outputs(conn, job_id, outputs)
        cells = False
        for o in outputs:
            if not o.is_dp and o.stats is not None and o.stats.units is not None:
                self.history.record(
                    conn,
                    job_id=job_id,
                    scenario_id=job.scenario_id,
                    output_name=o.name,
                    datasets=o.datasets,
                    units=o.stats.units,
                )
                cells = True
        if where == "pending_review":
            transition(conn, self.audit, job_id, "pending_review", actor=actor)
        return cells

    def process_charged(
        self,
        job: Job,
        outputs: Sequence[OutputSpec],
        *,
        charge: Callable[[Connection], bool],
        auto_release_clean_dp: bool,
        identifiers: IdentifierIndex | None = None,
        precomputed: Mapping[str, Mapping[str, Sequence[Finding]]] | None = None,
        actor: str = "system",
        scenario: Scenario | None = None,
        rows: Mapping[str, DatasetRow] | None = None,
    ) -> GateResult | None:
        """Check a DP job's outputs, then charge, keep and release them in ONE transaction.

        ``job`` is the ``running`` job whose outputs these are. ``charge(conn)`` runs first
        in the transaction: it moves the job to ``gated`` and pays for the outputs' noisy
        values; it returns False when the ledger answered with other values than these
        (a repeat released meanwhile, or this job's own earlier charge), and then only what
        it wrote commits and None is returned — the caller sends that earlier answer
        through :meth:`process`. Otherwise the report, the held outputs and, for an
        auto-released output, the release (its folder written before the transaction,
        removed if it does not commit) commit with the charge: an answer is never charged
        and left unreported, nor released unpaid. The charge's own errors (the budget
        cannot pay) roll everything back and propagate.

        ``scenario`` is the job's scenario as the caller read it (a granted scenario's
        file never changes), ``rows`` the catalog rows of the dataset versions the outputs
        were computed from (their grades set the thresholds, they are the release's
        sources); either is read here when not given.
        """
        datasets = sorted({d for o in outputs for d in o.datasets})
        history: DifferencingIndex | None = None
        needs_history = bool(datasets) and not all(o.is_dp for o in outputs)
        sc = scenario
        if sc is None or rows is None or needs_history:
            with self.engine.connect() as conn:
                if sc is None:
                    sc = self.scenario(conn, job.scenario_id)
                if rows is None:
                    rows = dataset_rows(conn, datasets)
                if needs_history:
                    t_pre = self._thresholds(sc, rows, datasets)
                    history = self.history.index(
                        conn, datasets, t_pre.min_cell_units, exclude_job=job.id
                    )
        t = self._thresholds(sc, rows, datasets)
        report = build_report(
            job.id, outputs, t, identifiers=identifiers, history=history, precomputed=precomputed
        )
        text = report.to_json()
        sha = hashlib.sha256(text.encode()).hexdigest()
        where = route(
            report,
            modes=[o.mode for o in outputs] or [job.output_mode],
            auto_release_clean_dp=auto_release_clean_dp,
        )
        if set(report.datasets) - set(rows):
            with self.engine.connect() as conn:
                rows = {**rows, **dataset_rows(conn, report.datasets)}
        needed = self._reviewers(self._grades_of(rows, report.datasets))
        pkg: Packaged | None = None
        sources: list[dict[str, Any]] = []
        if where == "auto_released":
            sources = sources_of(rows, report.datasets)
            pkg = package(
                self,
                job,
                outputs,
                report,
                sha,
                0,
                scenario=sc,
                sources=sources,
                reviews=[],
                actor=actor,
                auto=True,
                report_json=text,
            )
        try:
            with self.engine.begin() as conn:
                paid = charge(conn)
                if paid:
                    cells = self._keep(conn, job, outputs, report, sha, where, needed, actor)
                    if pkg is not None:
                        register(
                            conn,
                            self,
                            pkg,
                            job,
                            scenario=sc,
                            sources=sources,
                            actor=actor,
                            cells_held=cells,
                        )
        except BaseException:
            if pkg is not None:
                shutil.rmtree(pkg.root, ignore_errors=True)
            raise
        if not paid:
            if pkg is not None:
                shutil.rmtree(pkg.root, ignore_errors=True)
            return None
        return GateResult(
            job.id, where, report.verdict, sha, needed, pkg.release_id if pkg else None
        )

    def process(
        self,
        job_id: str,
        outputs: Sequence[OutputSpec],
        *,
        identifiers: IdentifierIndex | None = None,
        sources: Mapping[str, SourceRows] | None = None,
        precomputed: Mapping[str, Mapping[str, Sequence[Finding]]] | None = None,
        auto_release_clean_dp: bool | None = None,
        on_hold: Callable[[Connection], None] | None = None,
    ) -> GateResult:
        """:meth:`check` then :meth:`submit`."""
        report = self.check(
            job_id, outputs, identifiers=identifiers, sources=sources, precomputed=precomputed
        )
        return self.submit(
            job_id, outputs, report, auto_release_clean_dp=auto_release_clean_dp, on_hold=on_hold
        )

    # --- held outputs ------------------------------------------------------------------

    def store_outputs(self, conn: Connection, job_id: str, outputs: Sequence[OutputSpec]) -> None:
        key_id, key = key_bytes(conn, self.keys, "outputs")
        now = datetime.now(UTC)
        for o in outputs:
            sink = io.BytesIO()
            with ipc.new_stream(sink, o.table.schema) as writer:
                writer.write_table(o.table)
            spec = {
                "mode": o.mode,
                "measures": dict(o.measures),
                "keys": None if o.keys is None else list(o.keys),
                "datasets": list(o.datasets),
                "rows": o.table.num_rows,
                "columns": o.table.column_names,
            }
            conn.execute(
                _INSERT_OUTPUT,
                {
                    "job_id": job_id,
                    "name": o.name,
                    "spec": spec,
                    "key_id": key_id,
                    "blob": seal(key, sink.getvalue(), f"egress_outputs|{job_id}|{o.name}"),
                    "created_at": now,
                },
            )

    def load_outputs(self, conn: Connection, job_id: str) -> list[OutputSpec]:
        """The held outputs of a job, decrypted (aggregates only: blocked ones are never held)."""
        rows = list(
            conn.execute(
                sa.select(egress_outputs)
                .where(egress_outputs.c.job_id == job_id)
                .order_by(egress_outputs.c.name)
            )
        )
        if not rows:
            return []
        key = key_bytes(conn, self.keys, "outputs")[1]
        out = []
        for r in rows:
            data = open_sealed(key, bytes(r.blob), f"egress_outputs|{job_id}|{r.name}")
            table = ipc.open_stream(pa.BufferReader(data)).read_all()
            spec = dict(r.spec)
            out.append(
                OutputSpec(
                    name=r.name,
                    table=table,
                    datasets=tuple(spec.get("datasets") or ()),
                    mode=spec.get("mode", "sdc_aggregate"),
                    measures=dict(spec.get("measures") or {}),
                    keys=None if spec.get("keys") is None else tuple(spec["keys"]),
                )
            )
        return out

    def delete_outputs(self, conn: Connection, job_id: str) -> int:
        res = conn.execute(egress_outputs.delete().where(egress_outputs.c.job_id == job_id))
        return int(res.rowcount or 0)

    def stored_report(self, conn: Connection, job_id: str) -> tuple[EgressReport, Any] | None:
        row = conn.execute(
            sa.select(egress_reports).where(egress_reports.c.job_id == job_id)
        ).first()
        if row is None:
            return None
        return EgressReport.from_dict(row.report), row
