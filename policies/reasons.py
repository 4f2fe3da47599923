"""One reason a decision gives: a stable code, a sentence for people, and a category.

Every refusal names *all* its reasons, each specific enough to act on ("column
`id_number` of `residents` is not in scenario `S-2026-014`"). The category lets the
supervision report count over-scope and over-purpose attempts (R6.1) without parsing
sentences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CATEGORIES", "Category", "Reason"]

Category = Literal[
    "identity",  # who is asking: unknown, disabled, wrong role or organisation
    "personnel",  # R4.1: verification, training, confidentiality agreement
    "scenario",  # R2.3/R6: not yet valid, expired, suspended, revoked
    "scope",  # R2.1: over-scope — a dataset or column outside the scenario
    "purpose",  # R2.2: over-purpose — a job kind, output mode or budget outside it
    "approval",  # R2.4/R2.6: provider approval or fusion approval missing
]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True, order=True)
class Reason:
    """Why a decision refused; ``code`` is stable, ``message`` is for people."""

    category: Category
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "code": self.code, "message": self.message}
