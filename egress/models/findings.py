"""A model finding in the egress report's shape.

The check job reports :class:`sandbox.agent.modelcheck.findings.ModelFinding`; the gate's
report holds :class:`egress.checks.Finding`: message = the evidence text, evidence = the
metrics, fix = a ``Fix`` with machine-readable parameters where there are any.
"""

from __future__ import annotations

from egress.checks import Finding, Fix
from sandbox.agent.modelcheck.findings import ModelFinding

__all__ = ["to_finding"]


def to_finding(found: ModelFinding) -> Finding:
    """The same finding in the egress report's shape."""
    fix = None
    if found.fix:
        action = "set_params" if found.fix_params else "retrain"
        fix = Fix(action, found.fix, dict(found.fix_params))
    return Finding(found.check, found.severity, found.evidence, dict(found.metrics), fix)
