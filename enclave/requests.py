"""Data requests (R2.4, 004 §4(2)): the operator asks, the dataset's provider answers.

Within a granted scenario, an operator requests a dataset the scenario lists; the
provider — the organisation that owns the dataset (``datasets.owner_org``) — approves it,
or refuses it with a reason. No job reads a dataset before its provider approves (the
decision checks :meth:`RequestService.approved_datasets`). The regulation expects
providers not to refuse data the authorization agreement lists "in principle", so a
refusal must say why, and the reason is kept and shown.

Datasets the operator owns itself (social data) and derived tables of the scenario need no
request: there is no other provider to ask.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from enclave.audit import AuditLog
from enclave.authz_tables import data_requests, from_db_time, scenarios, to_db_time
from enclave.errors import DataRequestError, PermissionDenied
from enclave.identity import IdentityService, User
from enclave.scenarios import ScenarioService, dataset_rows

__all__ = ["REQUEST_STATES", "DataRequest", "RequestService"]

REQUEST_STATES = ("pending", "approved", "refused")
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


# Built once: every access decision reads it.
_APPROVED = sa.select(data_requests.c.dataset, data_requests.c.provider_org).where(
    data_requests.c.scenario_id == sa.bindparam("scenario_id"),
    data_requests.c.state == "approved",
)


@dataclass(frozen=True)
class DataRequest:
    id: str
    scenario_id: str
    dataset: str
    provider_org: str
    requested_by: str
    note: str
    state: str
    created_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scenario_id": self.scenario_id,
            "dataset": self.dataset,
            "provider_org": self.provider_org,
            "requested_by": self.requested_by,
            "note": self.note,
            "state": self.state,
            "created_at": self.created_at.isoformat(),
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "reason": self.reason,
        }


def _request(row: Any) -> DataRequest:
    created = from_db_time(row.created_at)
    assert created is not None
    return DataRequest(
        id=row.id,
        scenario_id=row.scenario_id,
        dataset=row.dataset,
        provider_org=row.provider_org,
        requested_by=row.requested_by,
        note=row.note,
        state=row.state,
        created_at=created,
        decided_by=row.decided_by,
        decided_at=from_db_time(row.decided_at),
        reason=row.reason,
    )


class RequestService:
    """Creates data requests and records providers' answers; every step audited."""

    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        identity: IdentityService,
        scenarios: ScenarioService,
        clock: Clock = _utc_now,
    ) -> None:
        self._engine = engine
        self._audit = audit
        self._identity = identity
        self._scenarios = scenarios
        self._clock = clock

    def get(self, request_id: str, conn: Connection | None = None) -> DataRequest:
        if conn is None:
            with self._engine.connect() as c:
                return self.get(request_id, c)
        row = conn.execute(sa.select(data_requests).where(data_requests.c.id == request_id)).first()
        if row is None:
            raise DataRequestError(
                f"no data request `{request_id}`",
                code="enclave.request_unknown",
                kind="not_found",
                hint="see `shuyu request list`",
            )
        return _request(row)

    def create(self, as_user: str, scenario_id: str, dataset: str, note: str = "") -> DataRequest:
        """An operator of the scenario's organisation asks for one of its datasets."""
        with self._engine.begin() as conn:
            user = self._identity.require(conn, as_user, "request.create")
            self._identity.require_open_operator(user)
            rec = self._scenarios.get(scenario_id, conn)
            s = rec.scenario
            if user.org != s.operator_org:
                raise PermissionDenied(
                    f"`{as_user}` belongs to `{user.org}`, not to `{s.operator_org}`, the "
                    f"operator of scenario `{scenario_id}`",
                    code="enclave.wrong_org",
                    hint="only the scenario's operator requests its data",
                )
            state = rec.effective_state(self._clock())
            if state != "active":
                raise DataRequestError(
                    f"scenario `{scenario_id}` is {state}; no data can be requested in it",
                    code="enclave.scenario_state",
                    hint="ask the authority about the scenario's state",
                )
            if dataset not in s.datasets:
                raise DataRequestError(
                    f"dataset `{dataset}` is not in scenario `{scenario_id}` "
                    f"(it lists: {', '.join(sorted(s.datasets))})",
                    code="enclave.request_out_of_scope",
                    kind="invalid",
                    hint="a dataset outside the scenario needs a new scenario authorization",
                )
            row = dataset_rows(conn, [dataset]).get(dataset)
            if row is None or row.status != "active":
                raise DataRequestError(
                    f"dataset `{dataset}` is not in the catalog",
                    code="enclave.dataset_unknown",
                    kind="not_found",
                )
            if row.owner_org == s.operator_org:
                raise DataRequestError(
                    f"`{dataset}` belongs to `{row.owner_org}`, the operator itself; it needs "
                    "no data request",
                    code="enclave.request_not_needed",
                    kind="invalid",
                    hint="fusing it with public data needs the authority's fusion approval",
                )
            open_ = conn.execute(
                sa.select(data_requests.c.id, data_requests.c.state).where(
                    data_requests.c.scenario_id == scenario_id,
                    data_requests.c.dataset == dataset,
                    data_requests.c.state.in_(("pending", "approved")),
                )
            ).first()
            if open_ is not None:
                raise DataRequestError(
                    f"request {open_.id} for `{dataset}` in `{scenario_id}` is already "
                    f"{open_.state}",
                    code="enclave.request_exists",
                    hint="see `shuyu request list`",
                )
            rid = f"R-{secrets.token_hex(6)}"
            now = self._clock()
            conn.execute(
                data_requests.insert().values(
                    id=rid,
                    scenario_id=scenario_id,
                    dataset=dataset,
                    provider_org=row.owner_org,
                    requested_by=as_user,
                    note=note,
                    state="pending",
                    created_at=to_db_time(now),
                )
            )
            self._audit.record(
                conn,
                actor=as_user,
                action="request.create",
                target=rid,
                details={
                    "scenario": scenario_id,
                    "dataset": dataset,
                    "provider_org": row.owner_org,
                },
            )
            return self.get(rid, conn)

    def approve(self, as_user: str, request_id: str, reason: str = "") -> DataRequest:
        return self._decide(as_user, request_id, "approved", reason)

    def refuse(self, as_user: str, request_id: str, reason: str) -> DataRequest:
        if len(reason.strip()) < 5:
            raise DataRequestError(
                "a refusal needs a reason",
                code="enclave.reason_required",
                kind="invalid",
                hint="give --reason: the operator and the authority see it",
            )
        return self._decide(as_user, request_id, "refused", reason)

    def _decide(self, as_user: str, request_id: str, to: str, reason: str) -> DataRequest:
        with self._engine.begin() as conn:
            user = self._identity.require(conn, as_user, "request.decide")
            req = self.get(request_id, conn)
            if user.org != req.provider_org:
                raise PermissionDenied(
                    f"`{as_user}` belongs to `{user.org}`; request {request_id} is for "
                    f"`{req.dataset}`, provided by `{req.provider_org}`",
                    code="enclave.wrong_org",
                    hint="only the dataset's provider answers its requests",
                )
            if req.state != "pending":
                raise DataRequestError(
                    f"request {request_id} is already {req.state}",
                    code="enclave.request_state",
                    hint="the operator can file a new request after a refusal",
                )
            now = self._clock()
            done = conn.execute(
                data_requests.update()
                .where(data_requests.c.id == request_id, data_requests.c.state == "pending")
                .values(state=to, decided_by=as_user, decided_at=to_db_time(now), reason=reason)
            ).rowcount
            if not done:  # another provider user answered it a moment ago
                raise DataRequestError(
                    f"request {request_id} was answered concurrently",
                    code="enclave.request_state",
                    hint="see `shuyu request list`",
                )
            self._audit.record(
                conn,
                actor=as_user,
                action="request.approve" if to == "approved" else "request.refuse",
                target=request_id,
                details={"scenario": req.scenario_id, "dataset": req.dataset, "reason": reason},
            )
            return self.get(request_id, conn)

    def list_requests(
        self,
        as_user: str,
        *,
        scenario_id: str | None = None,
        state: str | None = None,
    ) -> list[DataRequest]:
        """Providers see requests for their data, operators their organisation's, others all."""
        with self._engine.connect() as conn:
            user = self._identity.require(conn, as_user, "request.read")
            q = sa.select(data_requests).order_by(data_requests.c.created_at)
            q = self._visible(q, user, conn)
            if scenario_id:
                q = q.where(data_requests.c.scenario_id == scenario_id)
            if state:
                q = q.where(data_requests.c.state == state)
            return [_request(r) for r in conn.execute(q)]

    @staticmethod
    def _visible(q: sa.Select[Any], user: User, conn: Connection) -> sa.Select[Any]:
        if user.has("authority") or user.has("auditor"):
            return q
        own_scenarios = sa.select(scenarios.c.id).where(scenarios.c.operator_org == user.org)
        conds = []
        if user.has("provider"):
            conds.append(data_requests.c.provider_org == user.org)
        if user.has("operator"):
            conds.append(data_requests.c.scenario_id.in_(own_scenarios))
        return q.where(sa.or_(*conds)) if conds else q.where(sa.false())

    @staticmethod
    def approved_datasets(conn: Connection, scenario_id: str) -> dict[str, frozenset[str]]:
        """Dataset -> the provider organisations that approved it in this scenario.

        The decision counts an approval only from the dataset's *current* owner, so a
        dataset that changes hands needs its new provider's approval.
        """
        rows = conn.execute(_APPROVED, {"scenario_id": scenario_id})
        out: dict[str, set[str]] = {}
        for r in rows:
            out.setdefault(r.dataset, set()).add(r.provider_org)
        return {k: frozenset(v) for k, v in out.items()}
