"""Model checks, host side: thresholds from a scenario, the check job's report read back,
findings in the egress report's shape, and the model output a reviewer sees (issue 7).

The checks themselves live in ``sandbox.agent.modelcheck``: they run in a sandbox, next to
the decrypted sample, as a check job (``shuyu.model_jobs``). They are re-exported here for
trusted callers that hold rows already (tests, benchmarks), with the host's error types
(``egress.model_format``, ``egress.model_check``). ``docs/models.md`` explains each check.
"""

from egress.models.findings import to_finding
from egress.models.report import check_model, egress_findings, read_report
from egress.models.safe_format import (
    dump_model,
    load_model_safely,
    schema_epsilon,
    schema_types,
)
from egress.models.thresholds import thresholds_for
from sandbox.agent.modelcheck.capacity import count_parameters
from sandbox.agent.modelcheck.card import ModelCard
from sandbox.agent.modelcheck.checks import ModelCheckReport, check_loaded_model
from sandbox.agent.modelcheck.data import ModelData
from sandbox.agent.modelcheck.dp import DP_ALTERNATIVES, DpModel, find_dp_model
from sandbox.agent.modelcheck.findings import ModelFinding, Severity, Verdict
from sandbox.agent.modelcheck.membership import AttackResult
from sandbox.agent.modelcheck.safe_format import (
    DP_TRUSTED_TYPES,
    EXTRA_TRUSTED_TYPES,
    is_pickle,
    model_sha256,
)
from sandbox.agent.modelcheck.thresholds import ModelThresholds

__all__ = [
    "DP_ALTERNATIVES",
    "DP_TRUSTED_TYPES",
    "EXTRA_TRUSTED_TYPES",
    "AttackResult",
    "DpModel",
    "ModelCard",
    "ModelCheckReport",
    "ModelData",
    "ModelFinding",
    "ModelThresholds",
    "Severity",
    "Verdict",
    "check_loaded_model",
    "check_model",
    "count_parameters",
    "dump_model",
    "egress_findings",
    "find_dp_model",
    "is_pickle",
    "load_model_safely",
    "model_sha256",
    "read_report",
    "schema_epsilon",
    "schema_types",
    "thresholds_for",
    "to_finding",
]
