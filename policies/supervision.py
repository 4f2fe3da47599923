"""Supervision rules (R6.1, 002 §31): when use of a scenario's data needs a closer look.

The regulation names four situations that call for rectification and then suspension or
termination: over-scope calls (超范围调用), over-purpose calls (超目的调用), data not
called for three months (数据3个月未调用), and abnormal use (使用存在安全风险异常). The
first two are denied decisions by category (see :mod:`policies.reasons`); the last two are
these pure functions of dates and counts, so the thresholds are visible and testable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from statistics import median

__all__ = [
    "ABNORMAL_DAY_FACTOR",
    "ABNORMAL_MIN_DECISIONS_PER_DAY",
    "DENIAL_SHARE_MAX",
    "DENIAL_SHARE_MIN_DECISIONS",
    "OVER_PURPOSE",
    "OVER_SCOPE",
    "UNUSED_AFTER_DAYS",
    "Flag",
    "abnormal_days",
    "denial_share_flag",
    "unused_dataset_flag",
]

UNUSED_AFTER_DAYS = 90  # 002 §31: "数据3个月未调用"
ABNORMAL_DAY_FACTOR = 3.0  # a day with more than 3x the median daily decisions...
ABNORMAL_MIN_DECISIONS_PER_DAY = 20  # ...and at least this many is abnormal
DENIAL_SHARE_MAX = 0.3  # more than 30 % of decisions denied...
DENIAL_SHARE_MIN_DECISIONS = 10  # ...over at least this many decisions is abnormal
OVER_SCOPE = "scope"  # reason category of over-scope attempts
OVER_PURPOSE = "purpose"  # reason category of over-purpose attempts


@dataclass(frozen=True)
class Flag:
    """One finding of the supervision report."""

    kind: str  # over_scope | over_purpose | unused_dataset | abnormal_rate | denial_share
    subject: str  # what it is about: a dataset, a day, a user
    message: str


def unused_dataset_flag(
    dataset: str, available_since: datetime, last_used: datetime | None, now: datetime
) -> Flag | None:
    """A flag when a granted dataset has not been used for :data:`UNUSED_AFTER_DAYS`.

    ``available_since`` is when it became usable (grant, or the provider's approval);
    a dataset never used counts from then.
    """
    since = last_used or available_since
    idle = now - since
    if idle < timedelta(days=UNUSED_AFTER_DAYS):
        return None
    what = f"last used {last_used.date().isoformat()}" if last_used else "never used"
    return Flag(
        "unused_dataset",
        dataset,
        f"dataset `{dataset}` is granted but {what}: idle {idle.days} days "
        f"(more than {UNUSED_AFTER_DAYS}; 002 §31)",
    )


def abnormal_days(per_day: Mapping[date, int]) -> list[Flag]:
    """Days whose decision count is far above the scenario's usual (median) day."""
    if not per_day:
        return []
    usual = median(per_day.values())
    limit = max(ABNORMAL_DAY_FACTOR * usual, ABNORMAL_MIN_DECISIONS_PER_DAY)
    return [
        Flag(
            "abnormal_rate",
            day.isoformat(),
            f"{n} job decisions on {day.isoformat()}, above {limit:g} "
            f"({ABNORMAL_DAY_FACTOR:g}x the median day of {usual:g})",
        )
        for day, n in sorted(per_day.items())
        if n > limit
    ]


def denial_share_flag(allowed: int, denied: int) -> Flag | None:
    """A flag when an unusual share of a scenario's job decisions are denials."""
    total = allowed + denied
    if total < DENIAL_SHARE_MIN_DECISIONS or denied / total <= DENIAL_SHARE_MAX:
        return None
    return Flag(
        "denial_share",
        "decisions",
        f"{denied} of {total} job decisions were denied ({denied / total:.0%}, more than "
        f"{DENIAL_SHARE_MAX:.0%})",
    )
