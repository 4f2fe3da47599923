"""The personnel gate (R4.1, 004 §4(1)): when an operator's account opens.

Operator staff who process data must be trained, real-name verified, registered and
reviewed, and bound by a signed confidentiality agreement that states its term, before the
domain opens to them. Registration is ``shuyu user add``; review is the authority recording
each step with ``shuyu user activate``. This module holds the rule as a pure function of
the recorded steps and the time, so the enclave stores facts and never re-implements it,
and an agreement that lapses closes the account by itself, with no job to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from policies.reasons import Reason
from policies.terms import day_label, last_day_label

__all__ = ["PersonnelRecord", "personnel_gaps"]


@dataclass(frozen=True)
class PersonnelRecord:
    """The steps an authority has recorded for one person (None = not recorded)."""

    real_name_verified_at: datetime | None = None
    real_name_ref: str | None = None  # the verification's reference, never the ID number
    trained_at: datetime | None = None
    training_ref: str | None = None
    agreement_ref: str | None = None  # the signed confidentiality agreement's reference
    agreement_signed_at: datetime | None = None
    agreement_valid_from: datetime | None = None
    agreement_valid_until: datetime | None = None  # exclusive end of the agreement's term


def personnel_gaps(user_id: str, record: PersonnelRecord | None, now: datetime) -> list[Reason]:
    """Every step still missing before ``user_id`` may process data at ``now``; [] = open."""
    r = record or PersonnelRecord()
    gaps: list[Reason] = []
    if r.real_name_verified_at is None:
        gaps.append(
            Reason(
                "personnel",
                "personnel.not_verified",
                f"user `{user_id}` is not recorded as real-name verified",
            )
        )
    if r.trained_at is None:
        gaps.append(
            Reason(
                "personnel",
                "personnel.not_trained",
                f"user `{user_id}` has not completed the authorized-operation training",
            )
        )
    if r.agreement_ref is None or r.agreement_valid_until is None:
        gaps.append(
            Reason(
                "personnel",
                "personnel.no_agreement",
                f"user `{user_id}` has no signed confidentiality agreement on record",
            )
        )
    else:
        if r.agreement_valid_from is not None and now < r.agreement_valid_from:
            gaps.append(
                Reason(
                    "personnel",
                    "personnel.agreement_not_started",
                    f"confidentiality agreement `{r.agreement_ref}` of user `{user_id}` "
                    f"starts only on {day_label(r.agreement_valid_from)}",
                )
            )
        if now >= r.agreement_valid_until:
            gaps.append(
                Reason(
                    "personnel",
                    "personnel.agreement_expired",
                    f"confidentiality agreement `{r.agreement_ref}` of user `{user_id}` "
                    f"expired on {last_day_label(r.agreement_valid_until)}",
                )
            )
    return gaps
