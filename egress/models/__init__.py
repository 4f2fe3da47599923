"""Model checks: what a model must pass before a reviewer may release it (issue 7).

Models leave only as skops files loaded against a type allow-list (:mod:`.safe_format`).
:func:`check_model` runs, as trusted code next to the data, the class and structure checks
(:mod:`.structure`), capacity (:mod:`.capacity`), memorization and refit
(:mod:`.memorization`), membership inference (:mod:`.membership`) and the DP check
(:mod:`.dp`), and returns a report with a :class:`ModelCard`. The verdict is ``block`` or
``review``: no model releases without a reviewer. ``docs/models.md`` explains each check.
"""

from egress.models.capacity import count_parameters
from egress.models.card import ModelCard
from egress.models.checks import ModelCheckReport, check_loaded_model, check_model
from egress.models.data import ModelData
from egress.models.dp import DP_ALTERNATIVES, DpModel, find_dp_model
from egress.models.findings import ModelFinding, Severity, Verdict
from egress.models.membership import AttackResult
from egress.models.safe_format import (
    DP_TRUSTED_TYPES,
    EXTRA_TRUSTED_TYPES,
    dump_model,
    is_pickle,
    load_model_safely,
    schema_types,
)
from egress.models.thresholds import ModelThresholds

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
    "find_dp_model",
    "is_pickle",
    "load_model_safely",
    "schema_types",
]
