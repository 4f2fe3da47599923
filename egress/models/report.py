"""The model checks' report on the host: read back from a check job, or made in-process.

:func:`read_report` reads what a check job's sandbox sent. It is strict, because the bytes
come out of a container that loaded an operator's file: a bounded size, the exact shape
:meth:`ModelCheckReport.to_dict` writes, a verdict that follows from the findings, check
names of the ``model.`` family and short evidence texts. A report that fails any of that
is refused (``egress.model_check``): the model is blocked, never released on a report the
host cannot trust.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterable, Mapping

from egress.checks import Finding
from egress.errors import ModelCheckError
from egress.models.findings import to_finding
from egress.models.safe_format import load_model_safely
from sandbox.agent.modelcheck.checks import ModelCheckReport, check_loaded_model
from sandbox.agent.modelcheck.data import ModelData
from sandbox.agent.modelcheck.errors import CheckInputRefused
from sandbox.agent.modelcheck.thresholds import ModelThresholds

__all__ = ["MAX_REPORT_BYTES", "check_model", "egress_findings", "read_report"]

#: Largest report a check job may send: findings, card and attack results are small.
MAX_REPORT_BYTES = 1024 * 1024
_CHECK_NAME = re.compile(r"^model\.[a-z][a-z0-9_.]{0,62}$")
_MAX_FINDINGS = 200
_MAX_EVIDENCE_CHARS = 4000


def _refused(why: str) -> ModelCheckError:
    return ModelCheckError(
        f"the model check job sent a report the gate cannot read ({why})",
        hint="report it: the model stays blocked until the checks run cleanly",
        kind="internal",
    )


def read_report(payload: bytes) -> ModelCheckReport:
    """The report a check job sent, validated (see the module doc)."""
    if len(payload) > MAX_REPORT_BYTES:
        raise _refused("too large")
    try:
        report = ModelCheckReport.from_dict(json.loads(payload))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise _refused("not a report") from None
    if len(report.findings) > _MAX_FINDINGS:
        raise _refused("too many findings")
    for found in report.findings:
        if not _CHECK_NAME.match(found.check) or len(found.evidence) > _MAX_EVIDENCE_CHARS:
            raise _refused("a finding is not a model check's")
    if report.dp_epsilon is not None and not report.dp_epsilon > 0:
        raise _refused("a DP model's epsilon must be positive")
    return report


def egress_findings(report: ModelCheckReport) -> list[Finding]:
    """The findings in the egress report's shape, for ``build_report(precomputed=...)``."""
    return [to_finding(f) for f in report.findings]


def check_model(
    blob: bytes,
    train: ModelData,
    holdout: ModelData,
    identifiers: Mapping[str, Iterable[object]],
    thresholds: ModelThresholds | None = None,
) -> ModelCheckReport:
    """Load a model safely and run every model check on it, in this process.

    For trusted callers that hold the rows already (tests, benchmarks); the product runs
    the same checks in a check job. ``train`` must be the rows the model was trained on, in
    order (the refit compares against them); ``holdout`` rows it never saw; ``identifiers``
    maps an identifier column (or ``"canary"``) to its values. Raises
    ``egress.model_format`` for a pickle or a skops file with types outside the allow-list.
    """
    limits = thresholds or ModelThresholds()
    t = time.perf_counter()
    model = load_model_safely(blob, max_model_bytes=limits.max_model_bytes)
    load_s = round(time.perf_counter() - t, 4)
    try:
        report = check_loaded_model(model, train, holdout, identifiers, limits, blob=blob)
    except CheckInputRefused as exc:
        raise ModelCheckError(exc.message, hint=exc.hint, details=exc.details) from None
    return dataclasses.replace(report, timings_s={"load": load_s, **report.timings_s})
