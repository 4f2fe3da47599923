"""What a check says about an output: findings with a severity, evidence and a fix.

Evidence names *where* the problem is — row positions, column names, dataset names, counts
of things — and never a data value: a report is read by people outside the trust boundary
(the submitter, a reviewer) and ends up in the audit trail and the release manifest, so it
must not become a side channel for the very values the checks protect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MAX_EVIDENCE_ITEMS",
    "SEVERITIES",
    "SEVERITY_RANK",
    "CheckOutcome",
    "Finding",
    "Fix",
    "Severity",
    "clip",
]

Severity = Literal["block", "review", "info"]
SEVERITIES: tuple[Severity, ...] = ("block", "review", "info")
# Lower sorts first: a report lists what stops the release before what merely informs.
SEVERITY_RANK: dict[str, int] = {"block": 0, "review": 1, "info": 2}

# Evidence lists are cut to this many entries; the total is always given beside them.
MAX_EVIDENCE_ITEMS = 50


@dataclass(frozen=True)
class Fix:
    """A change to the output (or the query) that would resolve a finding.

    ``action`` is machine-readable (``round``, ``suppress``, ``drop_columns``, ``merge``,
    ``aggregate``, ``use_dp``); ``params`` says exactly what, so the gate or the operator
    can apply it; ``automatic`` is True when the gate can apply it itself without changing
    what the output means (rounding counts, suppressing cells).
    """

    action: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    automatic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "description": self.description,
            "params": self.params,
            "automatic": self.automatic,
        }


@dataclass(frozen=True)
class Finding:
    """One problem (or note) a check found in one output."""

    check: str  # the check's stable name, e.g. "small_cells"
    severity: Severity
    message: str  # for people; never contains a data value
    evidence: dict[str, Any] = field(default_factory=dict)  # positions and names only
    fix: Fix | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "evidence": self.evidence,
        }
        if self.fix is not None:
            body["fix"] = self.fix.to_dict()
        return body

    def sort_key(self) -> tuple[int, str, str]:
        return (SEVERITY_RANK[self.severity], self.check, self.message)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Finding:
        """Back from :meth:`to_dict` (findings computed in the sandbox travel as JSON)."""
        fix = body.get("fix")
        severity = body["severity"]
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        return cls(
            check=str(body["check"]),
            severity=severity,
            message=str(body["message"]),
            evidence=dict(body.get("evidence") or {}),
            fix=None
            if fix is None
            else Fix(
                str(fix["action"]),
                str(fix["description"]),
                dict(fix.get("params") or {}),
                bool(fix.get("automatic", False)),
            ),
        )


@dataclass(frozen=True)
class CheckOutcome:
    """One check run (or skipped) on one output."""

    name: str
    ran: bool
    findings: tuple[Finding, ...] = ()
    note: str = ""  # why it was skipped, or what it could not cover


def clip(items: list[Any]) -> list[Any]:
    """At most :data:`MAX_EVIDENCE_ITEMS` items, so a report stays small for huge outputs."""
    return items[:MAX_EVIDENCE_ITEMS]
