"""The privacy ledger: every DP charge of a scenario, and the check that it can pay.

A charge is one transaction that

1. locks the scenario's budget row (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the
   transaction's ``BEGIN IMMEDIATE`` already holds the write lock),
2. answers a repeat from ``dp_releases`` (same query key: normalized SQL, dataset versions,
   privacy parameters) without charging,
3. checks the cost against what is left, refusing with :class:`~egress.errors.BudgetExhausted`
   that says what is left,
4. inserts the charge, updates the totals, stores the noisy result and writes the audit
   entry.

So the noisy values exist in the database if and only if they were paid for: two jobs that
race for the last of a budget are checked one after the other, and the loser's noisy values
are dropped with its rolled-back transaction, never seen. A job refused, or failed before
:func:`~egress.dp.apply_noise`, never reaches this and charges nothing. A job charged twice
(a retry after a crash) finds its own charge and gets its release back.

Spent budget is accounted in approximate zCDP and shown as (ε, δ) at the scenario's δ; see
:mod:`egress.dp.accountant`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from egress.dp.accountant import Cost, SpentBudget
from egress.dp.compiler import CompiledQuery
from egress.dp.release import NoisyResult
from egress.dp_tables import dp_budgets, dp_charges, dp_releases
from egress.errors import BudgetExhausted, EgressError
from egress.sealing import open_sealed, seal
from enclave.audit import AuditLog
from enclave.errors import KeyMaterialError
from enclave.keys import KeyService, data_key_id

__all__ = ["Budget", "BudgetStatus", "Charge", "Ledger", "Release", "charge_model"]

log = logging.getLogger(__name__)

_RETRIES = 8
_KEY = ("dp", "releases")  # data key id "dp.releases" seals stored answers
T = TypeVar("T")

# Built once: a DP job runs most of them (statement building cost more than running them).
_BUDGET = sa.select(dp_budgets).where(dp_budgets.c.scenario_id == sa.bindparam("scenario_id"))
_LOCK = _BUDGET.with_for_update()
_RELEASE = sa.select(dp_releases).where(
    dp_releases.c.scenario_id == sa.bindparam("scenario_id"),
    dp_releases.c.query_key == sa.bindparam("query_key"),
)
# This job's own charge (a retry after a crash) and a release of the same query (a repeat),
# in one round trip.
_EARLIER = sa.union_all(
    sa.select(
        sa.literal("job").label("what"),
        dp_charges.c.scenario_id.label("scenario_id"),
        dp_charges.c.query_key.label("ref"),
    ).where(dp_charges.c.job_id == sa.bindparam("job_id")),
    sa.select(
        sa.literal("repeat").label("what"),
        dp_releases.c.scenario_id.label("scenario_id"),
        dp_releases.c.job_id.label("ref"),
    ).where(
        dp_releases.c.scenario_id == sa.bindparam("scenario_id"),
        dp_releases.c.query_key == sa.bindparam("query_key"),
    ),
)
_BOOK = dp_budgets.update().where(dp_budgets.c.scenario_id == sa.bindparam("budget_scenario"))
_INSERT_CHARGE = dp_charges.insert()
_INSERT_RELEASE = dp_releases.insert()


@dataclass(frozen=True)
class Budget:
    """A scenario's total privacy budget, and optional caps on any one job."""

    epsilon: float
    delta: float
    per_job_epsilon: float | None = None
    per_job_delta: float | None = None

    @classmethod
    def of(cls, policy: Any) -> Budget:
        """From any object with ``epsilon``/``delta`` (e.g. ``policies.scenario.PrivacyBudget``)."""
        return cls(
            float(policy.epsilon),
            float(policy.delta),
            getattr(policy, "per_job_epsilon", None),
            getattr(policy, "per_job_delta", None),
        )


@dataclass(frozen=True)
class BudgetStatus:
    scenario_id: str
    epsilon_total: float
    delta_total: float
    epsilon_spent: float
    delta_spent: float  # δ of partition selection (the zCDP part converts at the total δ)
    rho_spent: float
    charges: int

    @property
    def epsilon_left(self) -> float:
        return max(0.0, self.epsilon_total - self.epsilon_spent)

    @property
    def delta_left(self) -> float:
        return max(0.0, self.delta_total - self.delta_spent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario_id": self.scenario_id,
            "epsilon_total": self.epsilon_total,
            "delta_total": self.delta_total,
            "epsilon_spent": self.epsilon_spent,
            "delta_spent": self.delta_spent,
            "rho_spent": self.rho_spent,
            "epsilon_left": self.epsilon_left,
            "delta_left": self.delta_left,
            "charges": self.charges,
        }


@dataclass(frozen=True)
class Charge:
    job_id: str
    query_key: str
    epsilon: float
    delta: float
    rho: float
    delta_approx: float
    pure: bool
    created_at: datetime


@dataclass(frozen=True)
class Release:
    """What :meth:`Ledger.charge_and_record` gives back."""

    result: NoisyResult
    charged: bool  # False: a repeat, answered from an earlier release
    paid_by: str  # the job whose charge paid for these values
    status: BudgetStatus


def _spent(row: Any) -> SpentBudget:
    if row is None:
        return SpentBudget()
    return SpentBudget(
        rho=float(row.rho_spent),
        delta_approx=float(row.delta_approx_spent),
        epsilon_basic=float(row.epsilon_basic_spent),
        delta_basic=float(row.delta_basic_spent),
        charges=int(row.charges),
    )


def _status(scenario_id: str, spent: SpentBudget, budget: Budget) -> BudgetStatus:
    return BudgetStatus(
        scenario_id=scenario_id,
        epsilon_total=budget.epsilon,
        delta_total=budget.delta,
        epsilon_spent=spent.epsilon_spent(budget.delta),
        delta_spent=spent.delta_approx,
        rho_spent=spent.rho,
        charges=spent.charges,
    )


def _exhausted(scenario_id: str, status: BudgetStatus, cost: Cost, why: str) -> BudgetExhausted:
    return BudgetExhausted(
        f"scenario {scenario_id!r} cannot pay for this query ({why}): it has "
        f"epsilon {status.epsilon_left:.4g} of {status.epsilon_total:g} left "
        f"(delta {status.delta_left:.3g} of {status.delta_total:.3g}); the query costs "
        f"epsilon {cost.epsilon:.4g}, delta {cost.delta:.3g}",
        hint="spend less (a smaller epsilon or a looser accuracy target), reuse an earlier "
        "release of the same query, or ask the authority for a larger budget",
        details={
            "epsilon_left": status.epsilon_left,
            "delta_left": status.delta_left,
            "epsilon_total": status.epsilon_total,
            "delta_total": status.delta_total,
            "epsilon_cost": cost.epsilon,
            "delta_cost": cost.delta,
        },
    )


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    """Lost races: a unique key taken by a concurrent writer (the audit head, a job's
    charge), a serialization failure or a deadlock. The whole transaction is retried."""
    if isinstance(exc, sa.exc.IntegrityError):
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in ("40001", "40P01")


class Ledger:
    """Charges DP jobs against a scenario's budget and keeps what they released."""

    def __init__(self, audit: AuditLog | None = None, keys: KeyService | None = None) -> None:
        self._audit = audit
        self._keys = keys

    # -- transactions ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self, bind: Engine | Connection) -> Iterator[Connection]:
        """Where the read-only methods read: the caller's transaction, or a read of their own.

        A read of its own is a snapshot (a deferred transaction on SQLite): it neither takes
        nor waits for the write lock, which writers (a job's charge, a submit) hold.
        """
        if isinstance(bind, Connection):
            yield bind
            return
        with bind.connect() as conn:
            yield conn

    def _run(self, bind: Engine | Connection, fn: Callable[[Connection], T]) -> T:
        """`fn` in one transaction; on an Engine, retried when it lost a race."""
        if isinstance(bind, Connection):
            return fn(bind)
        for attempt in range(_RETRIES):
            try:
                with bind.begin() as conn:
                    return fn(conn)
            except sa.exc.DBAPIError as exc:
                if not _retryable(exc) or attempt == _RETRIES - 1:
                    raise
                time.sleep(random.uniform(0.001, 0.02) * (attempt + 1))  # noqa: S311
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reading --------------------------------------------------------------------------
    def status(self, bind: Engine | Connection, scenario_id: str, budget: Budget) -> BudgetStatus:
        with self._tx(bind) as conn:
            row = conn.execute(_BUDGET, {"scenario_id": scenario_id}).first()
        return _status(scenario_id, _spent(row), budget)

    def stored_budget(self, bind: Engine | Connection, scenario_id: str) -> Budget | None:
        """The total budget last recorded for a scenario (None before its first charge)."""
        with self._tx(bind) as conn:
            row = conn.execute(
                sa.select(dp_budgets.c.epsilon_total, dp_budgets.c.delta_total).where(
                    dp_budgets.c.scenario_id == scenario_id
                )
            ).first()
        return None if row is None else Budget(float(row.epsilon_total), float(row.delta_total))

    def charges(self, bind: Engine | Connection, scenario_id: str) -> list[Charge]:
        with self._tx(bind) as conn:
            rows = conn.execute(
                sa.select(dp_charges)
                .where(dp_charges.c.scenario_id == scenario_id)
                .order_by(dp_charges.c.id)
            ).all()
        return [
            Charge(
                r.job_id,
                r.query_key,
                float(r.epsilon),
                float(r.delta),
                float(r.rho),
                float(r.delta_approx),
                bool(r.pure),
                r.created_at,
            )
            for r in rows
        ]

    def check(
        self, bind: Engine | Connection, scenario_id: str, cost: Cost, budget: Budget
    ) -> BudgetStatus:
        """Refuse early (before the sandbox runs) when the cost cannot fit; not a reservation:
        :meth:`charge_and_record` checks again atomically."""
        with self._tx(bind) as conn:
            row = conn.execute(_BUDGET, {"scenario_id": scenario_id}).first()
        spent = _spent(row)
        status = _status(scenario_id, spent, budget)
        self._check_fits(scenario_id, status, spent, cost, budget)
        return status

    def dry_run(
        self, bind: Engine | Connection, scenario_id: str, compiled: CompiledQuery, budget: Budget
    ) -> CompiledQuery:
        """`compiled` with its report's ``budget_left_after`` filled in from this ledger."""
        with self._tx(bind) as conn:
            row = conn.execute(_BUDGET, {"scenario_id": scenario_id}).first()
        return compiled.with_budget(_spent(row), budget.epsilon, budget.delta)

    def lookup(
        self, bind: Engine | Connection, scenario_id: str, query_key: str
    ) -> NoisyResult | None:
        """An earlier release of the same query in this scenario, or None."""
        with self._tx(bind) as conn:
            return self._lookup(conn, scenario_id, query_key)

    def _lookup(self, conn: Connection, scenario_id: str, query_key: str) -> NoisyResult | None:
        row = conn.execute(_RELEASE, {"scenario_id": scenario_id, "query_key": query_key}).first()
        if row is None:
            return None
        blob = bytes(row.result)
        if row.sealed:
            if self._keys is None:
                raise EgressError(
                    "a stored DP release is sealed and this ledger has no key service",
                    code="egress.ledger_keys",
                    hint="build the Ledger with the domain's key service",
                )
            blob = open_sealed(self._keys.get(conn, row.key_id), blob, _aad(scenario_id, query_key))
        return NoisyResult.from_bytes(blob)

    # -- charging -------------------------------------------------------------------------
    def _check_fits(
        self, scenario_id: str, status: BudgetStatus, spent: SpentBudget, cost: Cost, budget: Budget
    ) -> None:
        if budget.per_job_epsilon is not None and cost.epsilon > budget.per_job_epsilon * (
            1 + 1e-9
        ):
            raise _exhausted(
                scenario_id,
                status,
                cost,
                f"one job may spend at most epsilon {budget.per_job_epsilon:g}",
            )
        if (
            budget.per_job_delta is not None
            and budget.per_job_delta > 0
            and cost.delta > budget.per_job_delta * (1 + 1e-9)
        ):
            raise _exhausted(
                scenario_id,
                status,
                cost,
                f"one job may spend at most delta {budget.per_job_delta:g}",
            )
        if not spent.plus(cost).fits(budget.epsilon, budget.delta):
            raise _exhausted(scenario_id, status, cost, "not enough budget left")

    def _lock(self, conn: Connection, scenario_id: str, budget: Budget) -> Any:
        now = datetime.now(UTC)
        values = {
            "scenario_id": scenario_id,
            "epsilon_total": budget.epsilon,
            "delta_total": budget.delta,
            "rho_spent": 0.0,
            "delta_approx_spent": 0.0,
            "epsilon_basic_spent": 0.0,
            "delta_basic_spent": 0.0,
            "charges": 0,
            "updated_at": now,
        }
        row = conn.execute(_LOCK, {"scenario_id": scenario_id}).first()
        if row is not None:
            return row
        # first charge of this scenario: create the row; a concurrent creator's row wins
        dialect = conn.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(pg_insert(dp_budgets).values(**values).on_conflict_do_nothing())
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            conn.execute(sqlite_insert(dp_budgets).values(**values).on_conflict_do_nothing())
        else:  # pragma: no cover - other databases: a lost race is retried
            conn.execute(dp_budgets.insert().values(**values))
        return conn.execute(_LOCK, {"scenario_id": scenario_id}).one()

    def charge_and_record(
        self,
        bind: Engine | Connection,
        *,
        scenario_id: str,
        job_id: str,
        compiled: CompiledQuery,
        result: NoisyResult,
        budget: Budget,
        actor: str = "system",
    ) -> Release:
        """Charge `compiled.cost` and store `result`, atomically; see the module docstring.

        On an Engine this opens (and on a lost race retries) its own transaction and audits
        a refusal in a separate one. On a Connection it works inside the caller's
        transaction (so the caller can move its job in the same commit); the caller then
        rolls back on :class:`BudgetExhausted` and may audit it with :meth:`record_denial`.
        """
        if result.query_key != compiled.query_key:
            raise EgressError(
                "the noisy result is not the result of this compiled query",
                code="egress.ledger_mismatch",
                hint="pass the NoisyResult that apply_noise returned for this CompiledQuery",
            )

        def tx(conn: Connection) -> Release:
            return self._charge(conn, scenario_id, job_id, compiled, result, budget, actor)

        try:
            return self._run(bind, tx)
        except BudgetExhausted as exc:
            if isinstance(bind, Engine):
                self.record_denial(bind, exc, scenario_id=scenario_id, job_id=job_id, actor=actor)
            raise

    def record_denial(
        self,
        engine: Engine,
        exc: BudgetExhausted,
        *,
        scenario_id: str,
        job_id: str,
        actor: str = "system",
    ) -> None:
        if self._audit is None:
            return
        self._audit.record_now(
            engine,
            actor=actor,
            action="dp.charge",
            target=scenario_id,
            result="denied",
            details={"job": job_id, **exc.details},
        )

    def _charge(
        self,
        conn: Connection,
        scenario_id: str,
        job_id: str,
        compiled: CompiledQuery,
        result: NoisyResult,
        budget: Budget,
        actor: str,
    ) -> Release:
        row = self._lock(conn, scenario_id, budget)
        spent = _spent(row)
        # One round trip for both early answers: this job's own earlier charge (a retry
        # after a crash gets back what it paid for), or a release of the same query (a
        # repeat, answered free).
        found = conn.execute(
            _EARLIER,
            {"job_id": job_id, "scenario_id": scenario_id, "query_key": compiled.query_key},
        ).all()
        mine = next((r for r in found if r.what == "job"), None)
        if mine is not None:
            earlier = self._lookup(conn, str(mine.scenario_id), str(mine.ref))
            if earlier is None:  # pragma: no cover - charges and releases commit together
                raise EgressError(
                    f"job {job_id} was charged but its release is missing",
                    code="egress.ledger_broken",
                    hint="run Ledger.verify and report it",
                )
            return Release(earlier, False, job_id, _status(scenario_id, spent, budget))
        earlier_row = next((r for r in found if r.what == "repeat"), None)
        if earlier_row is not None:
            earlier = self._lookup(conn, scenario_id, compiled.query_key)
            assert earlier is not None
            if self._audit is not None:
                self._audit.record(
                    conn,
                    actor=actor,
                    action="dp.repeat",
                    target=scenario_id,
                    details={
                        "job": job_id,
                        "paid_by": earlier_row.ref,
                        "query_key": compiled.query_key,
                    },
                )
            return Release(
                earlier, False, str(earlier_row.ref), _status(scenario_id, spent, budget)
            )
        cost = compiled.cost
        status = _status(scenario_id, spent, budget)
        self._check_fits(scenario_id, status, spent, cost, budget)
        now = datetime.now(UTC)
        after = _book(conn, scenario_id, job_id, compiled.query_key, cost, spent, budget, now)
        blob = result.to_bytes()
        key_id: str | None = None
        if self._keys is not None:
            key_id, key = self._release_key(conn)
            blob = seal(key, blob, _aad(scenario_id, compiled.query_key))
        conn.execute(
            _INSERT_RELEASE,
            {
                "scenario_id": scenario_id,
                "query_key": compiled.query_key,
                "job_id": job_id,
                "normalized_sql": compiled.normalized_sql,
                "sealed": key_id is not None,
                "key_id": key_id,
                "result": blob,
                "created_at": now,
            },
        )
        if self._audit is not None:
            self._audit.record(
                conn,
                actor=actor,
                action="dp.charge",
                target=scenario_id,
                details={
                    "job": job_id,
                    "query_key": compiled.query_key,
                    "epsilon": cost.epsilon,
                    "delta": cost.delta,
                    "rho": cost.rho,
                    "delta_approx": cost.delta_approx,
                },
            )
        return Release(result, True, job_id, _status(scenario_id, after, budget))

    def _release_key(self, conn: Connection) -> tuple[str, bytes]:
        assert self._keys is not None
        key_id = data_key_id(*_KEY)
        try:
            return key_id, self._keys.get(conn, key_id)
        except KeyMaterialError as exc:
            if exc.code != "enclave.key_unknown":
                raise
        with contextlib.suppress(sa.exc.IntegrityError), conn.begin_nested():
            self._keys.create(conn, *_KEY)
        return key_id, self._keys.get(conn, key_id)

    def report(
        self, bind: Engine | Connection, scenario_id: str, budget: Budget | None
    ) -> dict[str, Any]:
        """The scenario's budget and every charge, as plain data (for the CLI and the API).

        `budget` is the scenario's; None falls back to the total last recorded by a charge.
        """
        budget = budget or self.stored_budget(bind, scenario_id)
        if budget is None:
            raise EgressError(
                f"no scenario {scenario_id!r} and no DP charges for it",
                code="egress.unknown_scenario",
                kind="not_found",
                hint="check the id with `shuyu scenario list`",
            )
        status = self.status(bind, scenario_id, budget)
        return {
            **status.to_dict(),
            "per_job_epsilon": budget.per_job_epsilon,
            "per_job_delta": budget.per_job_delta,
            "charges": [
                {
                    "job_id": c.job_id,
                    "epsilon": c.epsilon,
                    "delta": c.delta,
                    "rho": c.rho,
                    "delta_approx": c.delta_approx,
                    "pure": c.pure,
                    "query_key": c.query_key,
                    "created_at": c.created_at.isoformat(),
                }
                for c in self.charges(bind, scenario_id)
            ],
        }

    # -- integrity ------------------------------------------------------------------------
    def verify(self, bind: Engine | Connection, scenario_id: str) -> bool:
        """The budget row's totals equal the sum of the scenario's charges."""
        with self._tx(bind) as conn:
            row = conn.execute(_BUDGET, {"scenario_id": scenario_id}).first()
        total = SpentBudget()
        for c in self.charges(bind, scenario_id):
            total = total.plus(Cost(c.epsilon, c.delta, c.rho, c.delta_approx, c.pure))
        stored = _spent(row)
        return stored.charges == total.charges and all(
            abs(a - b) <= 1e-9 * max(1.0, abs(b))
            for a, b in (
                (stored.rho, total.rho),
                (stored.delta_approx, total.delta_approx),
                (stored.epsilon_basic, total.epsilon_basic),
                (stored.delta_basic, total.delta_basic),
            )
        )


def _aad(scenario_id: str, query_key: str) -> str:
    return f"dp_releases|{scenario_id}|{query_key}"


def _book(
    conn: Connection,
    scenario_id: str,
    job_id: str,
    query_key: str,
    cost: Cost,
    spent: SpentBudget,
    budget: Budget,
    now: datetime,
) -> SpentBudget:
    """Add ``cost`` to the scenario's (locked) budget row and record the charge; the spent
    budget after. The caller holds the row's lock and has checked that the cost fits."""
    after = spent.plus(cost)
    conn.execute(
        _BOOK,
        {
            "budget_scenario": scenario_id,
            "epsilon_total": budget.epsilon,
            "delta_total": budget.delta,
            "rho_spent": after.rho,
            "delta_approx_spent": after.delta_approx,
            "epsilon_basic_spent": after.epsilon_basic,
            "delta_basic_spent": after.delta_basic,
            "charges": after.charges,
            "updated_at": now,
        },
    )
    conn.execute(
        _INSERT_CHARGE,
        {
            "scenario_id": scenario_id,
            "job_id": job_id,
            "query_key": query_key,
            "epsilon": cost.epsilon,
            "delta": cost.delta,
            "rho": cost.rho,
            "delta_approx": cost.delta_approx,
            "pure": cost.pure,
            "created_at": now,
        },
    )
    return after


def charge_model(
    ledger: Ledger,
    conn: Connection,
    *,
    scenario_id: str,
    job_id: str,
    model_sha256: str,
    epsilon: float,
    budget: Budget,
    actor: str = "system",
) -> BudgetStatus:
    """Charge a pure ε-DP model (issue 7) inside the caller's transaction; the status after.

    The model job calls this in the gate's transaction that keeps the model output
    (``Gate.submit(on_hold=...)``), so a model is held if and only if it was paid for.
    Cost: pure ε-DP, i.e. ρ = ε²/2 in the zCDP ledger and (ε, 0) in basic composition. The
    charge's ``query_key`` is the model file's sha256. A job charged before (a retried
    gate) is not charged again. Raises :class:`BudgetExhausted` (over the per-job cap, or
    not enough left); the caller's transaction then rolls back and may be audited with
    :meth:`Ledger.record_denial`.
    """
    cost = Cost(epsilon, 0.0, epsilon * epsilon / 2.0, 0.0, True)
    row = ledger._lock(conn, scenario_id, budget)
    spent = _spent(row)
    status = _status(scenario_id, spent, budget)
    paid = conn.execute(sa.select(dp_charges.c.id).where(dp_charges.c.job_id == job_id)).first()
    if paid is not None:
        return status
    ledger._check_fits(scenario_id, status, spent, cost, budget)
    now = datetime.now(UTC)
    after = _book(conn, scenario_id, job_id, model_sha256, cost, spent, budget, now)
    if ledger._audit is not None:
        ledger._audit.record(
            conn,
            actor=actor,
            action="dp.charge",
            target=scenario_id,
            details={
                "job": job_id,
                "model_sha256": model_sha256,
                "epsilon": cost.epsilon,
                "delta": cost.delta,
                "rho": cost.rho,
            },
        )
    return _status(scenario_id, after, budget)
