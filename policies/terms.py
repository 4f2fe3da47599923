"""Terms (validity windows) of scenarios and agreements, and how dates become instants.

Regulations and agreements speak in calendar days in China Standard Time: an
authorization "valid until 2026-03-01" covers that whole day in Beijing. So a plain date
is read in :data:`DOMAIN_TZ`: a start date begins at its 00:00, an end date ends at the
next day's 00:00 (exclusive). A timezone-aware datetime is taken as it is; a naive one is
refused, because guessing a timezone for a legal deadline is how deadlines move by hours.
Every comparison then happens between aware instants.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

__all__ = [
    "DOMAIN_TZ",
    "add_years",
    "day_label",
    "end_instant",
    "last_day_label",
    "start_instant",
    "years_after",
]

DOMAIN_TZ = timezone(timedelta(hours=8), "CST")


def start_instant(value: date | datetime) -> datetime:
    """The first instant of a term that starts on ``value``."""
    if isinstance(value, datetime):
        _require_aware(value)
        return value
    return datetime.combine(value, time(0), DOMAIN_TZ)


def end_instant(value: date | datetime) -> datetime:
    """The first instant *after* a term that ends on ``value`` (exclusive end)."""
    if isinstance(value, datetime):
        _require_aware(value)
        return value
    return datetime.combine(value + timedelta(days=1), time(0), DOMAIN_TZ)


def day_label(instant: datetime) -> str:
    """The CST calendar day of an instant, as YYYY-MM-DD."""
    return instant.astimezone(DOMAIN_TZ).date().isoformat()


def last_day_label(end: datetime) -> str:
    """The last valid day of a term with exclusive end ``end``, as YYYY-MM-DD in CST."""
    return (end - timedelta(microseconds=1)).astimezone(DOMAIN_TZ).date().isoformat()


def add_years(value: date, years: int) -> date:
    """``value`` plus whole calendar years; 29 February becomes 28 February when needed."""
    try:
        return value.replace(year=value.year + years)
    except ValueError:
        return value.replace(year=value.year + years, day=28)


def _require_aware(value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{value.isoformat()} has no timezone; write a date (read in CST, UTC+08:00) "
            "or a datetime with an offset such as +08:00"
        )


def years_after(instant: datetime, years: int) -> datetime:
    """The same wall-clock moment ``years`` calendar years later, in CST."""
    local = instant.astimezone(DOMAIN_TZ)
    day = add_years(local.date(), years)
    return datetime.combine(day, local.timetz())
