"""Errors of the egress gate.

EgressError
├── QueryRefused      the SQL uses a construct the DP compiler does not allow
├── BudgetExhausted   the scenario's privacy budget cannot pay for this job
├── ReviewError       review not allowed (self-review, wrong state, missing answers)
├── ReleaseError      manifest or file does not verify
├── ModelFormatError  a model blob is pickle, holds untrusted types, or is too big
└── ModelCheckError   model checks cannot run on the inputs given
"""

from __future__ import annotations

from policies.errors import ErrorKind, ShuyuError

__all__ = [
    "BudgetExhausted",
    "EgressError",
    "ModelCheckError",
    "ModelFormatError",
    "QueryRefused",
    "ReleaseError",
    "ReviewError",
]


class EgressError(ShuyuError):
    code = "egress.error"
    kind: ErrorKind = "internal"


class QueryRefused(EgressError):
    code = "egress.query_refused"
    kind: ErrorKind = "invalid"


class BudgetExhausted(EgressError):
    code = "egress.budget_exhausted"
    kind: ErrorKind = "exhausted"


class ReviewError(EgressError):
    code = "egress.review"
    kind: ErrorKind = "forbidden"


class ReleaseError(EgressError):
    code = "egress.release"
    kind: ErrorKind = "conflict"


class ModelFormatError(EgressError):
    """A model blob is not a skops file we can load safely (pickle, unknown types, too big)."""

    code = "egress.model_format"
    kind: ErrorKind = "invalid"


class ModelCheckError(EgressError):
    """The model checks cannot run on what they were given (e.g. no target for a classifier)."""

    code = "egress.model_check"
    kind: ErrorKind = "invalid"
