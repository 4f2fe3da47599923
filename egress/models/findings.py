"""What a model check says: one finding per problem, and the verdict they add up to.

:meth:`ModelFinding.to_finding` turns one into the egress report's
:class:`egress.checks.Finding` (message = the evidence text, evidence = the metrics, fix =
a ``Fix`` with machine-readable parameters where there are any). Evidence never holds a
data value: it names attributes, counts and statistics, never the matched value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from egress.checks import Finding, Fix

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

    def to_finding(self) -> Finding:
        """The same finding in the egress report's shape (``egress.checks.Finding``)."""
        fix = None
        if self.fix:
            action = "set_params" if self.fix_params else "retrain"
            fix = Fix(action, self.fix, dict(self.fix_params))
        return Finding(self.check, self.severity, self.evidence, dict(self.metrics), fix)


def verdict_of(findings: Iterable[ModelFinding]) -> Verdict:
    """``block`` if any finding blocks; otherwise ``review``.

    There is no passing verdict: every model needs a reviewer before release (R1.3(c),
    004 §4(4)), so the best a model can get from the checks is ``review``.
    """
    return "block" if any(f.severity == "block" for f in findings) else "review"
