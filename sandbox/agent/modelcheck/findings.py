"""What a model check says: one finding per problem, and the verdict they add up to.

The host turns one into the egress report's finding (``egress.models.to_finding``: message
= the evidence text, evidence = the metrics, fix with machine-readable parameters where
there are any); :meth:`ModelFinding.from_dict` reads one back from a check job's report.
Evidence never holds a data value: it names attributes, counts and statistics, never the
matched value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["SEVERITY_ORDER", "ModelFinding", "Severity", "Verdict", "verdict_of"]

Severity = Literal["block", "review", "info"]
Verdict = Literal["block", "review"]

#: Worst first; used to sort findings so a reviewer reads blockers before notes.
SEVERITY_ORDER: Mapping[str, int] = {"block": 0, "review": 1, "info": 2}


@dataclass(frozen=True)
class ModelFinding:
    """One result of one model check.

    ``check`` is a stable dotted name (``model.small_leaves``); ``evidence`` says what was
    seen without raw values; ``fix`` says what the operator can change; ``metrics`` holds the
    numbers behind the evidence (counts, ratios, AUCs) for reports and dashboards.
    """

    check: str
    severity: Severity
    evidence: str
    fix: str = ""
    metrics: Mapping[str, float | int | str | bool | None] = field(default_factory=dict)
    #: The fix as estimator parameters to set (``{"min_samples_leaf": 10}``), when it is one.
    fix_params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "check": self.check,
            "severity": self.severity,
            "evidence": self.evidence,
            "fix": self.fix,
            "metrics": dict(self.metrics),
        }
        if self.fix_params:
            body["fix_params"] = dict(self.fix_params)
        return body

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelFinding:
        """The finding :meth:`to_dict` wrote (a check job's report, read by the host)."""
        severity = raw["severity"]
        if severity not in SEVERITY_ORDER:
            raise ValueError("unknown severity")
        return cls(
            check=str(raw["check"]),
            severity=severity,
            evidence=str(raw["evidence"]),
            fix=str(raw.get("fix", "")),
            metrics=dict(raw.get("metrics", {})),
            fix_params=dict(raw.get("fix_params", {})),
        )


def verdict_of(findings: Iterable[ModelFinding]) -> Verdict:
    """``block`` if any finding blocks; otherwise ``review``.

    There is no passing verdict: every model needs a reviewer before release (R1.3(c),
    004 §4(4)), so the best a model can get from the checks is ``review``.
    """
    return "block" if any(f.severity == "block" for f in findings) else "review"
