"""The egress report: every output of every job gets one before anyone outside sees it.

A report lists, per output, the checks that ran (or could not), their findings — check,
severity, evidence that names rows, columns and sources but never a value, and a fix
where one exists — and a verdict:

* ``blocked``: some finding has severity ``block``; the output cannot leave as it is;
* ``needs_review``: some finding asks a reviewer to decide, or a check could not run;
* ``clean``: nothing found.

The job's verdict is the worst of its outputs'. The JSON form (:meth:`EgressReport.to_json`)
is canonical — sorted keys, findings in a fixed order, no timestamps — so the same inputs
give the same bytes, which is what the release manifest hashes.

Routing (:func:`route`) is policy, not verdict: a clean DP aggregate may skip the reviewer
only when the scenario allows it; SDC aggregates and models always see one (DESIGN rule 6).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from egress.checks import (
    CheckOutcome,
    DifferencingIndex,
    Finding,
    IdentifierIndex,
    OutputSpec,
    SourceRows,
    Thresholds,
    run_checks,
)

__all__ = [
    "REPORT_VERSION",
    "EgressReport",
    "OutputReport",
    "Route",
    "Verdict",
    "build_output_report",
    "build_report",
    "route",
]

REPORT_VERSION = 1
Verdict = Literal["blocked", "needs_review", "clean"]
Route = Literal["refused", "pending_review", "auto_released"]
_VERDICT_RANK: dict[str, int] = {"blocked": 0, "needs_review": 1, "clean": 2}


def _verdict(findings: Sequence[Finding]) -> Verdict:
    severities = {f.severity for f in findings}
    if "block" in severities:
        return "blocked"
    if "review" in severities:
        return "needs_review"
    return "clean"


@dataclass(frozen=True)
class OutputReport:
    """The findings on one output."""

    name: str
    mode: str
    rows: int
    columns: tuple[str, ...]
    datasets: tuple[str, ...]
    findings: tuple[Finding, ...]
    checks: tuple[CheckOutcome, ...]

    @property
    def verdict(self) -> Verdict:
        return _verdict(self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "rows": self.rows,
            "columns": list(self.columns),
            "datasets": list(self.datasets),
            "verdict": self.verdict,
            "checks": [
                {
                    "name": c.name,
                    "ran": c.ran,
                    "findings": len(c.findings),
                    "result": "skipped"
                    if not c.ran
                    else ("clean" if not c.findings else _verdict(c.findings)),
                    "note": c.note,
                }
                for c in self.checks
            ],
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class EgressReport:
    """The report on all outputs of one job."""

    job_id: str
    outputs: tuple[OutputReport, ...]
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def verdict(self) -> Verdict:
        if not self.outputs:
            return "needs_review"  # a job with no output is odd; a person should look
        return min((o.verdict for o in self.outputs), key=_VERDICT_RANK.__getitem__)

    @property
    def findings(self) -> list[Finding]:
        return [f for o in self.outputs for f in o.findings]

    @property
    def datasets(self) -> list[str]:
        return sorted({d for o in self.outputs for d in o.datasets})

    def counts(self) -> dict[str, int]:
        out = {"block": 0, "review": 0, "info": 0}
        for f in self.findings:
            out[f.severity] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "job_id": self.job_id,
            "verdict": self.verdict,
            "counts": self.counts(),
            "thresholds": self.thresholds.to_dict(),
            "outputs": [o.to_dict() for o in self.outputs],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> EgressReport:
        """Back from :meth:`to_dict` (as stored in ``egress_reports``)."""
        t = dict(body.get("thresholds") or {})
        outputs = []
        for o in body.get("outputs", []):
            findings = tuple(Finding.from_dict(f) for f in o.get("findings", []))
            checks = tuple(
                CheckOutcome(
                    c["name"],
                    bool(c["ran"]),
                    tuple(f for f in findings if _check_family(f.check) == c["name"]),
                    c.get("note", ""),
                )
                for c in o.get("checks", [])
            )
            outputs.append(
                OutputReport(
                    o["name"],
                    o["mode"],
                    int(o["rows"]),
                    tuple(o["columns"]),
                    tuple(o["datasets"]),
                    findings,
                    checks,
                )
            )
        return cls(str(body["job_id"]), tuple(outputs), Thresholds(**t))


def _check_family(check: str) -> str:
    if check.startswith("model."):
        return "model"  # egress.models findings: model.capacity, model.refit, ...
    return "identifiers" if check == "canary" else check


def build_output_report(
    output: OutputSpec,
    thresholds: Thresholds,
    *,
    identifiers: IdentifierIndex | None = None,
    history: DifferencingIndex | None = None,
    sources: Mapping[str, SourceRows] | None = None,
    precomputed: Mapping[str, Sequence[Finding]] | None = None,
) -> OutputReport:
    """Run every check on one output and collect the findings in a stable order."""
    outcomes = run_checks(
        output,
        thresholds,
        identifiers=identifiers,
        history=history,
        sources=sources,
        precomputed=precomputed,
    )
    findings: list[Finding] = [f for c in outcomes for f in c.findings]
    for c in outcomes:
        if not c.ran:
            findings.append(
                Finding(
                    c.name,
                    "review",
                    f"the {c.name} check could not run: {c.note}",
                    {"check": c.name},
                )
            )
    findings.sort(key=lambda f: f.sort_key())
    return OutputReport(
        name=output.name,
        mode=output.mode,
        rows=output.table.num_rows,
        columns=tuple(output.table.column_names),
        datasets=tuple(sorted(output.datasets)),
        findings=tuple(findings),
        checks=tuple(outcomes),
    )


def build_report(
    job_id: str,
    outputs: Sequence[OutputSpec],
    thresholds: Thresholds,
    *,
    identifiers: IdentifierIndex | None = None,
    history: DifferencingIndex | None = None,
    sources: Mapping[str, SourceRows] | None = None,
    precomputed: Mapping[str, Mapping[str, Sequence[Finding]]] | None = None,
) -> EgressReport:
    """The report on every output of a job.

    ``precomputed`` maps an output name to {check name: findings} computed elsewhere (the
    row-level check run in the sandbox). ``history`` is the differencing index over the
    earlier releases of every scenario on the same datasets (:meth:`CellHistory.index`).
    """
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        from egress.errors import EgressError

        raise EgressError(
            f"job {job_id} has two outputs with the same name",
            code="egress.check_input",
            kind="invalid",
            hint="give each output of a job its own name",
        )
    pre = precomputed or {}
    return EgressReport(
        job_id,
        tuple(
            build_output_report(
                o,
                thresholds,
                identifiers=identifiers,
                history=history,
                sources=sources,
                precomputed=pre.get(o.name),
            )
            for o in outputs
        ),
        thresholds,
    )


def route(report: EgressReport, *, modes: Sequence[str], auto_release_clean_dp: bool) -> Route:
    """Where the job goes next: refused (blocked), a reviewer, or straight out.

    Only a clean report on outputs that are all DP aggregates, in a scenario that allows
    it, skips the reviewer.
    """
    if report.verdict == "blocked":
        return "refused"
    if (
        report.verdict == "clean"
        and auto_release_clean_dp
        and modes
        and all(m == "dp_aggregate" for m in modes)
    ):
        return "auto_released"
    return "pending_review"
