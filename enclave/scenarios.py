"""Granted scenarios and their life: grant, suspend, resume, revoke, expire (R2, R6).

States::

    grant ─► active ──suspend──► suspended ──resume──► active
               │  ▲                  │
               │  └──────────────────┘
               ├──revoke──► revoked     (for good; retained data crypto-shredded)
               └──term ends─► expired   (for good; retained data crypto-shredded)

Suspension closes access at once — running jobs included — and keeps everything, so the
scenario can resume after rectification (R6.2). Revocation and expiry end it for good
(R6.3): jobs are refused, and the data retained for it is deleted irreversibly by
destroying its keys (crypto-shredding): the scenario's own keys (the pseudonym key of its
sample views, the key for its unreleased results) and the keys of every derived table it
kept; unreleased results stored in ``jobs.result`` are cleared. Logs are kept.

**Hooks.** Closing access "at once" needs the parts that hold open sessions — the
orchestrator's running jobs, the warm sandbox pool — to act. They register callbacks on
:class:`ScenarioHooks` (``hooks.on_scenario_closed(fn)``); the service calls them after the
state change has committed, so a hook that fails cannot undo the closing, and every failure
is audited. Hooks are in-process: a suspension made by the CLI in another process reaches
the server through the database, so the orchestrator also checks :meth:`ScenarioService.
is_open` at every job transition, and every decision re-reads the state.

Expiry happens by the clock: a decision refuses a job the moment the term ends, whether or
not :meth:`ScenarioService.expire_due` has run yet; that sweep (``shuyu scenario sweep``,
run daily) is what records the expiry, shreds, and calls the hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from enclave.audit import AuditLog
from enclave.authz_tables import from_db_time, fusion_approvals, scenarios, to_db_time
from enclave.errors import ScenarioError
from enclave.identity import IdentityService
from enclave.keys import KeyService, data_key_id
from enclave.tables import datasets, jobs
from policies.decision import ScenarioGrant
from policies.desensitize import (
    DesensitizeRules,
    SampleColumn,
    SampleView,
    load_desensitize_rules,
    sample_view,
)
from policies.disclosure import EffectiveDisclosure, disclosure_problems, effective_disclosure
from policies.errors import ScenarioFileError
from policies.grades import GradePolicy, load_grades
from policies.scenario import Scenario

__all__ = [
    "PSEUDONYM_KEY_GROUP",
    "RESULTS_KEY_GROUP",
    "DatasetRow",
    "ScenarioClosed",
    "ScenarioHooks",
    "ScenarioRecord",
    "ScenarioService",
    "dataset_rows",
    "pseudonym_key_id",
]

log = logging.getLogger(__name__)

PSEUDONYM_KEY_GROUP = "pseudonym"  # data key "<scenario id>.pseudonym": sample-view HMAC key
RESULTS_KEY_GROUP = "results"  # data key "<scenario id>.results": for unreleased results
_RELEASED_STATES = ("released", "auto_released")
Clock = Callable[[], datetime]
_VERB = {"suspended": "suspended", "active": "resumed", "revoked": "revoked"}


def _utc_now() -> datetime:
    return datetime.now(UTC)


def pseudonym_key_id(scenario_id: str) -> str:
    """The data key id of a scenario's sample-view HMAC key (released to its sandboxes)."""
    return data_key_id(scenario_id, PSEUDONYM_KEY_GROUP)


# --- catalog facts --------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRow:
    """The catalog row a name resolves to: its newest active version (or a deleted one)."""

    id: str
    name: str
    version: int
    status: str
    kind: str
    owner_org: str
    grade: str
    scenario_id: str | None
    meta: dict[str, Any]
    lineage: dict[str, Any] | None = None
    created_at: datetime | None = None  # when this version was imported (acquisition date)

    @property
    def column_names(self) -> frozenset[str]:
        cols = self.meta.get("columns") if isinstance(self.meta, dict) else None
        if not isinstance(cols, list):
            return frozenset()
        return frozenset(c["name"] for c in cols if isinstance(c, dict) and "name" in c)

    def column_grades(self) -> dict[str, str]:
        cols = self.meta.get("columns") if isinstance(self.meta, dict) else None
        out: dict[str, str] = {}
        for c in cols if isinstance(cols, list) else []:
            if isinstance(c, dict) and "name" in c:
                out[str(c["name"])] = str(c.get("grade") or self.grade)
        return out


# Built once: every access decision reads these (twice per job).
_DATASET_ROWS = (
    sa.select(datasets)
    .where(datasets.c.name.in_(sa.bindparam("names", expanding=True)))
    .order_by(datasets.c.name, datasets.c.version.desc())
)
_DATASET_ROW = (  # one name, the usual case
    sa.select(datasets)
    .where(datasets.c.name == sa.bindparam("name"))
    .order_by(datasets.c.name, datasets.c.version.desc())
)
# The scenario and its fusion approvals in one statement (one row per approved dataset):
# every access decision reads it.
_FIND_FULL = (
    sa.select(scenarios, fusion_approvals.c.dataset.label("fusion_dataset"))
    .select_from(
        scenarios.outerjoin(fusion_approvals, fusion_approvals.c.scenario_id == scenarios.c.id)
    )
    .where(scenarios.c.id == sa.bindparam("scenario_id"))
)
_FUSION = sa.select(fusion_approvals.c.dataset).where(
    fusion_approvals.c.scenario_id == sa.bindparam("scenario_id")
)


def dataset_rows(conn: Connection, names: Iterable[str]) -> dict[str, DatasetRow]:
    """Resolve dataset names: newest active version, else newest deleted; unknown left out."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    if len(wanted) == 1:  # the usual case: no expanding IN to render per call
        rows = conn.execute(_DATASET_ROW, {"name": wanted[0]})
    else:
        rows = conn.execute(_DATASET_ROWS, {"names": wanted})
    out: dict[str, DatasetRow] = {}
    for r in rows:
        current = out.get(r.name)
        if current is not None and not (current.status != "active" and r.status == "active"):
            continue
        out[r.name] = DatasetRow(
            id=r.id,
            name=r.name,
            version=int(r.version),
            status=r.status,
            kind=r.kind,
            owner_org=r.owner_org,
            grade=r.grade,
            scenario_id=r.scenario_id,
            meta=r.meta if isinstance(r.meta, dict) else {},
            lineage=r.lineage,
            created_at=r.created_at,
        )
    return out


# --- hooks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioClosed:
    """What a hook is told: which scenario closed, how, and why."""

    scenario_id: str
    state: str  # suspended | revoked | expired
    reason: str
    at: datetime

    @property
    def final(self) -> bool:
        """True for revocation and expiry: the scenario never reopens; drop its state."""
        return self.state in ("revoked", "expired")


ClosedHook = Callable[[ScenarioClosed], None]


class ScenarioHooks:
    """Callbacks the orchestrator and sandbox pool register; no dependencies, in-process."""

    def __init__(self) -> None:
        self._closed: list[ClosedHook] = []

    def on_scenario_closed(self, fn: ClosedHook) -> ClosedHook:
        """Register ``fn``; usable as a decorator. Called after the closing has committed."""
        self._closed.append(fn)
        return fn

    def remove(self, fn: ClosedHook) -> None:
        self._closed.remove(fn)

    def fire_closed(self, event: ScenarioClosed) -> list[tuple[str, str]]:
        """Call every hook; returns (hook name, error type) for those that raised."""
        failures: list[tuple[str, str]] = []
        for fn in list(self._closed):
            try:
                fn(event)
            except Exception as exc:  # a broken hook must not stop the others
                name = getattr(fn, "__qualname__", repr(fn))
                log.exception("scenario-closed hook %s failed for %s", name, event.scenario_id)
                failures.append((name, type(exc).__name__))
        return failures


# --- records --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioRecord:
    """A stored scenario: the file, its state, who granted it and when."""

    grant: ScenarioGrant
    granted_by: str
    granted_at: datetime
    shredded_at: datetime | None = None
    fusion_approved: frozenset[str] = field(default_factory=frozenset)

    @property
    def scenario(self) -> Scenario:
        return self.grant.scenario

    @property
    def id(self) -> str:
        return self.grant.scenario.id

    @property
    def state(self) -> str:
        return self.grant.state

    @property
    def policy_hash(self) -> str:
        return self.grant.policy_hash

    def effective_state(self, now: datetime) -> str:
        """The stored state, or ``expired`` once the term has ended (before any sweep)."""
        if self.state in ("active", "suspended") and now >= self.scenario.validity.ends_at:
            return "expired"
        return self.state

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        s = self.scenario
        return {
            "id": s.id,
            "title": s.title,
            "operator_org": s.operator_org,
            "use_class": s.use_class,
            "state": self.effective_state(now) if now else self.state,
            "state_since": self.grant.state_since,
            "state_reason": self.grant.state_reason,
            "valid_from": s.validity.starts_at.isoformat(),
            "valid_until": s.validity.last_day,
            "policy_hash": self.policy_hash,
            "granted_by": self.granted_by,
            "granted_at": self.granted_at.isoformat(),
            "fusion_approved": sorted(self.fusion_approved),
            "spec": s.model_dump(mode="json"),
        }


def _record(row: Any, fusion: frozenset[str]) -> ScenarioRecord:
    grant = ScenarioGrant(
        scenario=Scenario.model_validate(row.spec),
        state=row.state,
        policy_hash=row.policy_hash,
        state_since=from_db_time(row.state_since),
        state_reason=row.state_reason or "",
    )
    granted_at = from_db_time(row.granted_at)
    assert granted_at is not None
    return ScenarioRecord(grant, row.granted_by, granted_at, from_db_time(row.shredded_at), fusion)


class ScenarioService:
    """Grants scenarios and moves them through their states; audits and shreds."""

    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        keys: KeyService,
        identity: IdentityService,
        hooks: ScenarioHooks | None = None,
        grades: GradePolicy | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self._engine = engine
        self._audit = audit
        self._keys = keys
        self._identity = identity
        self.hooks = hooks or ScenarioHooks()
        self._grades = grades or load_grades()
        self._clock = clock

    # --- reading --------------------------------------------------------------------
    def get(self, scenario_id: str, conn: Connection | None = None) -> ScenarioRecord:
        rec = self.find(scenario_id, conn)
        if rec is None:
            raise ScenarioError(
                f"no scenario `{scenario_id}`",
                code="enclave.scenario_unknown",
                kind="not_found",
                hint="see `shuyu scenario list`",
            )
        return rec

    def find(self, scenario_id: str, conn: Connection | None = None) -> ScenarioRecord | None:
        """The scenario, or None; what the orchestrator calls to look one up."""
        if conn is None:
            with self._engine.connect() as c:
                return self.find(scenario_id, c)
        rows = conn.execute(_FIND_FULL, {"scenario_id": scenario_id}).all()
        if not rows:
            return None
        fusion = frozenset(r.fusion_dataset for r in rows if r.fusion_dataset is not None)
        return _record(rows[0], fusion)

    def list_scenarios(
        self,
        *,
        state: str | None = None,
        operator_org: str | None = None,
        conn: Connection | None = None,
    ) -> list[ScenarioRecord]:
        if conn is None:
            with self._engine.connect() as c:
                return self.list_scenarios(state=state, operator_org=operator_org, conn=c)
        q = sa.select(scenarios).order_by(scenarios.c.id)
        if state:
            q = q.where(scenarios.c.state == state)
        if operator_org:
            q = q.where(scenarios.c.operator_org == operator_org)
        return [_record(r, self.fusion_approved(conn, r.id)) for r in conn.execute(q)]

    def is_open(self, scenario_id: str, conn: Connection | None = None) -> bool:
        """True while jobs may run: active and within its term. Cheap; call it often."""
        rec = self.find(scenario_id, conn)
        return rec is not None and rec.effective_state(self._clock()) == "active"

    def fusion_approved(self, conn: Connection, scenario_id: str) -> frozenset[str]:
        rows = conn.execute(_FUSION, {"scenario_id": scenario_id})
        return frozenset(r.dataset for r in rows)

    def disclosure(self, scenario_id: str) -> EffectiveDisclosure:
        """The thresholds the egress gate applies: the scenario's, else its grades' defaults."""
        with self._engine.connect() as conn:
            rec = self.get(scenario_id, conn)
            rows = dataset_rows(conn, rec.scenario.datasets)
        grades = [r.grade for r in rows.values()] or [self._grades.levels[-1]]
        return effective_disclosure(rec.scenario.disclosure, grades, self._grades)

    def sample_view(
        self,
        scenario_id: str,
        dataset: str,
        *,
        rules: DesensitizeRules | None = None,
        conn: Connection | None = None,
    ) -> SampleView:
        """The desensitized sample view of ``dataset`` in this scenario (R1.5).

        The trusted agent runs ``view.statements(key)`` with the key
        :func:`pseudonym_key_id` names, before any operator code gets the session.
        """
        if conn is None:
            with self._engine.connect() as c:
                return self.sample_view(scenario_id, dataset, rules=rules, conn=c)
        rec = self.get(scenario_id, conn)
        row = dataset_rows(conn, [dataset]).get(dataset)
        own = row is not None and row.kind == "derived" and row.scenario_id == scenario_id
        if row is None or row.status != "active" or not (own or dataset in rec.scenario.datasets):
            raise ScenarioError(
                f"dataset `{dataset}` is not in scenario `{scenario_id}`",
                code="enclave.sample_scope",
                kind="invalid",
                hint="see `shuyu scenario show`",
            )
        cols = [
            SampleColumn(
                str(c["name"]),
                str(c.get("type", "string")),
                str(c.get("role", "")),
                str(c.get("grade") or row.grade),
            )
            for c in row.meta.get("columns", [])
            if isinstance(c, dict) and "name" in c
        ]
        scope = row.column_names if own else rec.scenario.columns_of(dataset)
        unit = row.meta.get("privacy_unit")
        return sample_view(
            source=dataset,
            columns=cols,
            scope=scope,
            settings=rec.scenario.sample,
            rules=rules or load_desensitize_rules(grades=self._grades),
            unit_column=str(unit) if unit else None,
        )

    # --- granting -------------------------------------------------------------------
    def grant(self, as_user: str, scenario: Scenario) -> ScenarioRecord:
        """Grant a scenario (authority only), checked against the catalog and the grades."""
        with self._engine.begin() as conn:
            self._identity.require(conn, as_user, "scenario.grant")
            if self.find(scenario.id, conn) is not None:
                raise ScenarioError(
                    f"scenario `{scenario.id}` already exists",
                    code="enclave.scenario_exists",
                    hint="a changed authorization is a new scenario (一场景一审定): give it a "
                    "new id, and revoke the old one if it ends",
                )
            self._check_against_catalog(conn, scenario)
            now = self._clock()
            conn.execute(
                scenarios.insert().values(
                    id=scenario.id,
                    operator_org=scenario.operator_org,
                    use_class=scenario.use_class,
                    state="active",
                    spec=scenario.model_dump(mode="json"),
                    policy_hash=scenario.policy_hash,
                    valid_from=to_db_time(scenario.validity.starts_at),
                    valid_until=to_db_time(scenario.validity.ends_at),
                    granted_by=as_user,
                    granted_at=to_db_time(now),
                    state_since=to_db_time(now),
                    state_by=as_user,
                )
            )
            self._keys.create(conn, scenario.id, PSEUDONYM_KEY_GROUP)
            self._keys.create(conn, scenario.id, RESULTS_KEY_GROUP)
            self._audit.record(
                conn,
                actor=as_user,
                action="scenario.grant",
                target=scenario.id,
                details={
                    "policy_hash": scenario.policy_hash,
                    "operator_org": scenario.operator_org,
                    "use_class": scenario.use_class,
                    "datasets": {k: list(v.columns) for k, v in scenario.datasets.items()},
                    "valid_from": scenario.validity.starts_at.isoformat(),
                    "valid_until": scenario.validity.last_day,
                    "term_exception": scenario.validity.exception_reason,
                },
            )
            return self.get(scenario.id, conn)

    def _check_against_catalog(self, conn: Connection, scenario: Scenario) -> None:
        rows = dataset_rows(conn, scenario.datasets)
        problems: list[dict[str, str]] = []
        grades: list[str] = []
        for name, scope in scenario.datasets.items():
            path = f"datasets.{name}"
            row = rows.get(name)
            if row is None or row.status != "active":
                problems.append({"field": path, "message": f"no dataset `{name}` in the catalog"})
                continue
            if row.kind == "derived":
                problems.append(
                    {
                        "field": path,
                        "message": f"`{name}` is a derived table of scenario "
                        f"`{row.scenario_id}`; derived tables are never granted",
                    }
                )
                continue
            if row.kind == "social" and row.owner_org != scenario.operator_org:
                problems.append(
                    {
                        "field": path,
                        "message": f"`{name}` is operator-owned data of `{row.owner_org}`; only "
                        "its owner's scenarios may use it",
                    }
                )
            known = row.column_names
            for col in scope.columns:
                if known and col not in known:
                    problems.append(
                        {
                            "field": f"{path}.columns",
                            "message": f"`{col}` is not a column of `{name}` "
                            f"(columns: {', '.join(sorted(known))})",
                        }
                    )
            col_grades = row.column_grades()
            grades.extend(col_grades.get(c, row.grade) for c in scope.columns)
            grades.append(row.grade)
        for g in sorted(set(grades)):
            if g in self._grades.levels and not self._grades.get(g).authorized_operation:
                problems.append(
                    {
                        "field": "datasets",
                        "message": f"grade {g} may not enter authorized operation",
                    }
                )
        known_grades = [g for g in grades if g in self._grades.levels]
        if known_grades:
            for fld, msg in disclosure_problems(scenario.disclosure, known_grades, self._grades):
                problems.append({"field": fld, "message": msg})
        if problems:
            listed = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            raise ScenarioFileError(
                f"scenario {scenario.id} does not fit the catalog: {listed}",
                code="policy.scenario_catalog",
                hint="grant only datasets and columns that exist; import missing datasets first",
                details={"errors": problems},
            )

    # --- state changes --------------------------------------------------------------
    def suspend(self, as_user: str, scenario_id: str, reason: str) -> ScenarioRecord:
        """Close access at once (R6.2); everything is kept for a resumption."""
        return self._transition(as_user, scenario_id, "scenario.suspend", "suspended", reason)

    def resume(self, as_user: str, scenario_id: str, reason: str) -> ScenarioRecord:
        """Reopen a suspended scenario after rectification."""
        return self._transition(as_user, scenario_id, "scenario.resume", "active", reason)

    def revoke(self, as_user: str, scenario_id: str, reason: str) -> ScenarioRecord:
        """End for good (R6.3): refuse jobs, crypto-shred retained data, keep the logs."""
        return self._transition(as_user, scenario_id, "scenario.revoke", "revoked", reason)

    def _transition(
        self, as_user: str, scenario_id: str, action: str, to: str, reason: str
    ) -> ScenarioRecord:
        if not reason.strip():
            raise ScenarioError(
                f"{action.split('.')[1]} needs a reason",
                code="enclave.reason_required",
                kind="invalid",
                hint="give --reason: it is recorded and shown in the supervision report",
            )
        with self._engine.begin() as conn:
            self._identity.require(conn, as_user, action)
            # Row lock on PostgreSQL (SQLite's BEGIN IMMEDIATE already serialises writers):
            # two concurrent revocations must not both see "active" and both shred.
            conn.execute(
                sa.select(scenarios.c.id).where(scenarios.c.id == scenario_id).with_for_update()
            )
            rec = self.get(scenario_id, conn)
            now = self._clock()
            current = rec.effective_state(now)
            allowed_from = {
                "suspended": ("active",),
                "active": ("suspended",),
                "revoked": ("active", "suspended"),
            }[to]
            if current not in allowed_from:
                raise ScenarioError(
                    f"scenario `{scenario_id}` is {current}; it cannot be {_VERB[to]}",
                    code="enclave.scenario_state",
                    hint="see `shuyu scenario show` for its state"
                    + (
                        "; an expired scenario ends with `shuyu scenario sweep`"
                        if current == "expired"
                        else ""
                    ),
                )
            self._set_state(conn, scenario_id, to, as_user, reason, now)
            details: dict[str, Any] = {"reason": reason, "from": current}
            if to == "revoked":
                details["shredded"] = self._shred(conn, scenario_id, now)
            self._audit.record(
                conn, actor=as_user, action=action, target=scenario_id, details=details
            )
            updated = self.get(scenario_id, conn)
        if to != "active":
            self._fire(ScenarioClosed(scenario_id, to, reason, now))
        return updated

    def expire_due(self, as_user: str = "system") -> list[str]:
        """Record the expiry of every scenario whose term has ended; shred; call hooks."""
        now = self._clock()
        ended: list[str] = []
        with self._engine.begin() as conn:
            rows = conn.execute(
                sa.select(scenarios.c.id).where(
                    scenarios.c.state.in_(("active", "suspended")),
                    scenarios.c.valid_until <= to_db_time(now),
                )
            ).all()
            for r in rows:
                reason = "term ended"
                self._set_state(conn, r.id, "expired", as_user, reason, now)
                shredded = self._shred(conn, r.id, now)
                self._audit.record(
                    conn,
                    actor=as_user,
                    action="scenario.expire",
                    target=r.id,
                    details={"reason": reason, "shredded": shredded},
                )
                ended.append(r.id)
        for sid in ended:
            self._fire(ScenarioClosed(sid, "expired", "term ended", now))
        return ended

    def _set_state(
        self, conn: Connection, sid: str, to: str, by: str, reason: str, now: datetime
    ) -> None:
        conn.execute(
            scenarios.update()
            .where(scenarios.c.id == sid)
            .values(state=to, state_since=to_db_time(now), state_by=by, state_reason=reason)
        )

    def _shred(self, conn: Connection, sid: str, now: datetime) -> dict[str, int]:
        """Irreversibly delete what the domain retained for the scenario (R6.3, 002 §62)."""
        scenario_keys = self._keys.destroy(conn, sid)
        # Every version, superseded ones included: all of it was retained for the scenario.
        derived = conn.execute(
            sa.select(datasets.c.id, datasets.c.status).where(
                datasets.c.kind == "derived", datasets.c.scenario_id == sid
            )
        ).all()
        derived_keys = 0
        for d in derived:
            derived_keys += self._keys.destroy(conn, d.id)
        active = [d.id for d in derived if d.status == "active"]
        if active:
            conn.execute(
                datasets.update()
                .where(datasets.c.id.in_(active))
                .values(status="deleted", deleted_at=to_db_time(now))
            )
        cleared = conn.execute(
            jobs.update()
            .where(
                jobs.c.scenario_id == sid,
                jobs.c.state.not_in(_RELEASED_STATES),
                jobs.c.result.is_not(None),
            )
            .values(result=None)
        ).rowcount
        conn.execute(
            scenarios.update().where(scenarios.c.id == sid).values(shredded_at=to_db_time(now))
        )
        return {
            "scenario_keys": scenario_keys,
            "derived_tables": len(derived),
            "derived_keys": derived_keys,
            "unreleased_results": int(cleared or 0),
        }

    def _fire(self, event: ScenarioClosed) -> None:
        for name, error in self.hooks.fire_closed(event):
            self._audit.record_now(
                self._engine,
                actor="system",
                action="scenario.hook_failed",
                target=event.scenario_id,
                result="error",
                details={"hook": name, "error": error, "state": event.state},
            )

    # --- fusion approvals (R2.6) ----------------------------------------------------
    def approve_fusion(
        self, as_user: str, scenario_id: str, dataset: str, reason: str
    ) -> ScenarioRecord:
        """Approve fusing operator-owned ``dataset`` with public data in this scenario."""
        if len(reason.strip()) < 5:
            raise ScenarioError(
                "a fusion approval needs a reason",
                code="enclave.reason_required",
                kind="invalid",
                hint="give --reason: what was reviewed and why the fusion is allowed",
            )
        with self._engine.begin() as conn:
            self._identity.require(conn, as_user, "scenario.fusion_approve")
            rec = self.get(scenario_id, conn)
            now = self._clock()
            if rec.effective_state(now) != "active":
                raise ScenarioError(
                    f"scenario `{scenario_id}` is {rec.effective_state(now)}",
                    code="enclave.scenario_state",
                    hint="fusion can be approved only for an active scenario",
                )
            if dataset not in rec.scenario.datasets:
                raise ScenarioError(
                    f"dataset `{dataset}` is not in scenario `{scenario_id}`",
                    code="enclave.fusion_not_in_scenario",
                    kind="invalid",
                    hint="only datasets the scenario lists can be fused",
                )
            row = dataset_rows(conn, [dataset]).get(dataset)
            if row is None or row.kind != "social":
                raise ScenarioError(
                    f"`{dataset}` is not operator-owned (social) data; public data needs no "
                    "fusion approval",
                    code="enclave.fusion_not_social",
                    kind="invalid",
                )
            if dataset in rec.fusion_approved:
                raise ScenarioError(
                    f"fusion of `{dataset}` is already approved for `{scenario_id}`",
                    code="enclave.fusion_exists",
                )
            conn.execute(
                fusion_approvals.insert().values(
                    scenario_id=scenario_id,
                    dataset=dataset,
                    approved_by=as_user,
                    approved_at=to_db_time(now),
                    reason=reason,
                )
            )
            self._audit.record(
                conn,
                actor=as_user,
                action="scenario.fusion_approve",
                target=scenario_id,
                details={"dataset": dataset, "reason": reason},
            )
            return self.get(scenario_id, conn)
