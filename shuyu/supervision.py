"""Supervision reports (R6): per-scenario supervision, the quarterly report, public disclosure.

* :func:`supervision_report` — for the authority and auditors (R6.1): over-scope and
  over-purpose attempts (denied decisions from the audit log, by reason category),
  datasets granted but unused for 90 days, abnormal decision rates and denial shares.
* :func:`quarterly_report` — what the operator reports each quarter (R6.4, 003 §28):
  jobs run, datasets used, budget spent, outputs released and rejected, fees metered (R8).
* :func:`disclosure_list` — the public list of current authorizations: who, for what,
  which data, until when (R6.5, 000 §27, 003 §21).

Sources: the audit log's ``access.decide`` entries (every decision, allowed and denied,
with its datasets and reasons), the ``jobs`` table, the scenario and request tables, and —
when they are installed — the egress gate's ``egress_releases`` and a privacy ledger
table. Those last two belong to other packages; they are read by table name from the shared
metadata, so a domain without them still reports, and says what it could not count.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from enclave.authz_tables import data_requests, from_db_time
from enclave.db import load_all_tables
from enclave.errors import PermissionDenied
from enclave.scenarios import ScenarioRecord, dataset_rows
from enclave.tables import audit_log, jobs
from policies.supervision import (
    OVER_PURPOSE,
    OVER_SCOPE,
    Flag,
    abnormal_days,
    denial_share_flag,
    unused_dataset_flag,
)
from policies.terms import DOMAIN_TZ
from shuyu.context import Domain

__all__ = [
    "BILLABLE_STATES",
    "DisclosureEntry",
    "QuarterlyReport",
    "SupervisionReport",
    "disclosure_list",
    "quarter_bounds",
    "quarterly_report",
    "supervision_report",
]

# A job is metered once it has run: it reached `computed` or any state after it.
BILLABLE_STATES = frozenset(
    {"computed", "gated", "pending_review", "auto_released", "approved", "released", "rejected"}
)
# The privacy ledger (egress.dp_tables) when installed: one row per charge.
_LEDGER_TABLES = ("dp_charges",)
_QUARTER = re.compile(r"^(\d{4})-?[Qq]([1-4])$")


@dataclass(frozen=True)
class _Decision:
    ts: datetime
    actor: str
    allowed: bool
    datasets: dict[str, list[str]]
    reasons: list[dict[str, str]]


def _decisions(conn: Connection, scenario_id: str) -> list[_Decision]:
    rows = conn.execute(
        sa.select(audit_log.c.ts, audit_log.c.actor, audit_log.c.result, audit_log.c.details)
        .where(audit_log.c.action == "access.decide", audit_log.c.target == scenario_id)
        .order_by(audit_log.c.seq)
    )
    out: list[_Decision] = []
    for r in rows:
        details = json.loads(r.details)
        out.append(
            _Decision(
                ts=datetime.fromisoformat(r.ts),
                actor=r.actor,
                allowed=r.result == "allowed",
                datasets=details.get("datasets") or {},
                reasons=details.get("reasons") or [],
            )
        )
    return out


def _require(
    domain: Domain, conn: Connection, as_user: str, action: str, rec: ScenarioRecord
) -> None:
    user = domain.identity.require(conn, as_user, action)
    privileged = user.has("authority") or user.has("auditor")
    if not privileged and user.org != rec.scenario.operator_org:
        raise PermissionDenied(
            f"`{as_user}` of `{user.org}` may not read reports on scenario `{rec.id}` of "
            f"`{rec.scenario.operator_org}`",
            code="enclave.wrong_org",
            hint="operators read their own organisation's reports",
        )


# --- supervision ------------------------------------------------------------------------


@dataclass
class SupervisionReport:
    scenario_id: str
    operator_org: str
    state: str
    generated_at: datetime
    window_days: int
    decisions_allowed: int = 0
    decisions_denied: int = 0
    denied_by_category: dict[str, int] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["generated_at"] = self.generated_at.isoformat()
        return out


def supervision_report(
    domain: Domain,
    as_user: str,
    scenario_id: str,
    *,
    now: datetime | None = None,
    window_days: int = 90,
) -> SupervisionReport:
    """Flags for one scenario over the last ``window_days`` (R6.1)."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=window_days)
    with domain.engine.connect() as conn:
        rec = domain.scenarios.get(scenario_id, conn)
        _require(domain, conn, as_user, "report.supervision", rec)
        decisions = _decisions(conn, scenario_id)
        approvals = conn.execute(
            sa.select(data_requests.c.dataset, data_requests.c.decided_at).where(
                data_requests.c.scenario_id == scenario_id,
                data_requests.c.state == "approved",
            )
        ).all()
        rows = dataset_rows(conn, rec.scenario.datasets)
    report = SupervisionReport(
        scenario_id, rec.scenario.operator_org, rec.effective_state(now), now, window_days
    )
    recent = [d for d in decisions if d.ts >= since]
    per_day: Counter[date] = Counter()
    categories: Counter[str] = Counter()
    for d in recent:
        per_day[d.ts.astimezone(DOMAIN_TZ).date()] += 1
        if d.allowed:
            report.decisions_allowed += 1
            continue
        report.decisions_denied += 1
        for r in d.reasons:
            categories[r.get("category", "")] += 1
            kind = {OVER_SCOPE: "over_scope", OVER_PURPOSE: "over_purpose"}.get(
                r.get("category", "")
            )
            if kind:
                when = d.ts.astimezone(DOMAIN_TZ).strftime("%Y-%m-%d %H:%M")
                report.flags.append(Flag(kind, d.actor, f"{when} `{d.actor}`: {r['message']}"))
    report.denied_by_category = dict(sorted(categories.items()))
    if rec.effective_state(now) in ("active", "suspended"):
        report.flags.extend(_unused(rec, decisions, approvals, rows, now))
    report.flags.extend(abnormal_days(per_day))
    share = denial_share_flag(report.decisions_allowed, report.decisions_denied)
    if share:
        report.flags.append(share)
    return report


def _unused(
    rec: ScenarioRecord,
    decisions: list[_Decision],
    approvals: Iterable[Any],
    rows: dict[str, Any],
    now: datetime,
) -> list[Flag]:
    approved_at: dict[str, datetime] = {}
    for a in approvals:
        at = from_db_time(a.decided_at)
        if at is not None:
            approved_at[a.dataset] = min(at, approved_at.get(a.dataset, at))
    last_used: dict[str, datetime] = {}
    for d in decisions:
        if d.allowed:
            for name in d.datasets:
                last_used[name] = d.ts
    flags: list[Flag] = []
    for name in sorted(rec.scenario.datasets):
        row = rows.get(name)
        own = row is not None and row.owner_org == rec.scenario.operator_org
        if not own and name not in approved_at:
            continue  # not usable yet: nothing to be idle about
        since = approved_at.get(name, rec.granted_at)
        flag = unused_dataset_flag(name, max(since, rec.granted_at), last_used.get(name), now)
        if flag:
            flags.append(flag)
    return flags


# --- quarterly ----------------------------------------------------------------------


def quarter_bounds(quarter: str) -> tuple[datetime, datetime]:
    """``2026Q3`` -> [2026-07-01, 2026-10-01) in CST."""
    m = _QUARTER.match(quarter.strip())
    if not m:
        raise ValueError(f"`{quarter}` is not a quarter; write it like 2026Q3")
    year, q = int(m.group(1)), int(m.group(2))
    start = datetime(year, 3 * q - 2, 1, tzinfo=DOMAIN_TZ)
    end = datetime(year + (q == 4), 1 if q == 4 else 3 * q + 1, 1, tzinfo=DOMAIN_TZ)
    return start, end


@dataclass
class QuarterlyReport:
    scenario_id: str
    quarter: str
    operator_org: str
    use_class: str
    period_start: datetime
    period_end: datetime
    jobs_by_state: dict[str, int] = field(default_factory=dict)
    jobs_submitted: int = 0
    jobs_run: int = 0
    datasets_used: dict[str, int] = field(default_factory=dict)
    decisions_denied: int = 0
    outputs_released: int = 0
    outputs_rejected: int = 0
    epsilon_spent: float | None = None  # basic composition of the quarter's charges;
    # None: no privacy ledger table in this domain
    delta_spent: float | None = None
    fee_per_job_cny: str | None = None
    fee_cny: str = "0"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["period_start"] = self.period_start.isoformat()
        out["period_end"] = self.period_end.isoformat()
        return out


def quarterly_report(
    domain: Domain, as_user: str, scenario_id: str, quarter: str
) -> QuarterlyReport:
    """The quarterly scenario report (R6.4): use, budget, outputs and fees in one quarter."""
    start, end = quarter_bounds(quarter)
    with domain.engine.connect() as conn:
        rec = domain.scenarios.get(scenario_id, conn)
        _require(domain, conn, as_user, "report.quarterly", rec)
        s = rec.scenario
        report = QuarterlyReport(
            scenario_id, quarter.upper(), s.operator_org, s.use_class, start, end
        )
        states: Counter[str] = Counter()
        for r in conn.execute(
            sa.select(jobs.c.state, jobs.c.created_at).where(jobs.c.scenario_id == scenario_id)
        ):
            created = from_db_time(r.created_at)
            if created is not None and start <= created < end:
                states[r.state] += 1
        report.jobs_by_state = dict(sorted(states.items()))
        report.jobs_submitted = sum(states.values())
        report.jobs_run = sum(n for st, n in states.items() if st in BILLABLE_STATES)
        report.outputs_released = states["released"] + states["auto_released"]
        report.outputs_rejected = states["rejected"]
        used: Counter[str] = Counter()
        for d in _decisions(conn, scenario_id):
            if start <= d.ts < end:
                if d.allowed:
                    used.update(d.datasets.keys())
                else:
                    report.decisions_denied += 1
        report.datasets_used = dict(sorted(used.items()))
        _optional_tables(conn, report, start, end)
    if s.use_class == "industry":
        price = s.fee_per_job_cny or Decimal(0)
        report.fee_per_job_cny = str(price)
        report.fee_cny = str(price * report.jobs_run)
    else:
        report.notes.append("public-welfare use is free (R8): no fee")
    return report


def _optional_tables(
    conn: Connection, report: QuarterlyReport, start: datetime, end: datetime
) -> None:
    """Read the gate's releases and a privacy ledger if this domain has them installed."""
    # Declared *and* created: a table module may be installed before its migration ran.
    existing = set(sa.inspect(conn).get_table_names())
    tables = {k: v for k, v in load_all_tables().tables.items() if k in existing}
    releases = tables.get("egress_releases")
    if releases is not None:
        n = 0
        for r in conn.execute(
            sa.select(releases.c.created_at).where(releases.c.scenario_id == report.scenario_id)
        ):
            created = from_db_time(r.created_at)
            n += created is not None and start <= created < end
        report.outputs_released = max(report.outputs_released, n)
    else:
        report.notes.append("egress releases table not installed: releases counted from jobs")
    ledger = next((tables[t] for t in _LEDGER_TABLES if t in tables), None)
    cols = ledger.c if ledger is not None else None
    if ledger is None or cols is None or "scenario_id" not in cols or "epsilon" not in cols:
        report.notes.append(
            "no privacy ledger table installed: budget spent is not reported (the ledger "
            "belongs to egress.dp_tables)"
        )
        return
    eps = 0.0
    delta = 0.0
    time_col = next((cols[c] for c in ("created_at", "charged_at", "ts") if c in cols), None)
    query = sa.select(ledger).where(cols["scenario_id"] == report.scenario_id)
    for r in conn.execute(query):
        m = r._mapping
        if time_col is not None:
            ts = from_db_time(m[time_col.name])
            if ts is None or not start <= ts < end:
                continue
        eps += float(m["epsilon"] or 0)
        delta += float(m["delta"] or 0) if "delta" in cols else 0.0
    report.epsilon_spent = eps
    report.delta_spent = delta


# --- public disclosure ------------------------------------------------------------------


@dataclass(frozen=True)
class DisclosureEntry:
    """One current authorization as published (R6.5): who, what, which data, how long."""

    scenario_id: str
    title: str
    operator_org: str
    purpose: str
    use_class: str
    datasets: dict[str, list[str]]
    providers: list[str]
    valid_from: str
    valid_until: str
    state: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def disclosure_list(domain: Domain, now: datetime | None = None) -> list[DisclosureEntry]:
    """Every authorization in force (active or suspended, within its term); public."""
    now = now or datetime.now(UTC)
    out: list[DisclosureEntry] = []
    with domain.engine.connect() as conn:
        records = domain.scenarios.list_scenarios(conn=conn)
        for rec in records:
            state = rec.effective_state(now)
            if state not in ("active", "suspended"):
                continue
            s = rec.scenario
            rows = dataset_rows(conn, s.datasets)
            out.append(
                DisclosureEntry(
                    scenario_id=s.id,
                    title=s.title,
                    operator_org=s.operator_org,
                    purpose=s.purpose,
                    use_class=s.use_class,
                    datasets={k: list(v.columns) for k, v in sorted(s.datasets.items())},
                    providers=sorted({r.owner_org for r in rows.values()}),
                    valid_from=s.validity.starts_at.astimezone(DOMAIN_TZ).date().isoformat(),
                    valid_until=s.validity.last_day,
                    state=state,
                )
            )
    return out
