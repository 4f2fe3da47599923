"""The access decision: may this user run this job, on this data, in this scenario, now?

One pure function, :func:`decide`. Everything it needs comes in as plain values — the
user, the scenario and its state, the catalog facts of the datasets the job reads, the
approved data requests and fusion approvals, and the time — so it can be tested
exhaustively (including a property test over random scenarios) and the enclave only
gathers facts and records the outcome.

It returns **every** reason a job is refused, each specific enough to act on, never just
the first: an operator fixing one problem should not meet the next one on the next try,
and the supervision report counts over-scope and over-purpose attempts by category
(R6.1).

The rules, and where they come from:

* identity — the user is enabled, holds the operator role, and belongs to the scenario's
  operator organisation (R2.1: the authorization is to one operator);
* personnel — verified, trained, bound by a confidentiality agreement in force (R4.1);
* scenario — it exists, is active (not suspended, revoked or expired, R6.2, R6.3) and
  ``now`` lies in its term (R2.3); its stored policy still matches its hash;
* scope — every dataset read is in the scenario (or is a derived table of *this* scenario,
  R2.6), exists and is not deleted; every column read is listed for its dataset (R2.1);
* purpose — the job kind and output mode are allowed; the epsilon/delta the job asks for
  are within the per-job caps (R2.2);
* approval — the provider of every dataset the operator does not own approved a data
  request for it in this scenario (R2.4); operator-owned (social) data fused with public
  data has the authority's fusion approval for this scenario (R2.6).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from policies.errors import AccessDenied
from policies.personnel import PersonnelRecord, personnel_gaps
from policies.reasons import Reason
from policies.scenario import Scenario, policy_hash
from policies.terms import day_label

__all__ = [
    "SCENARIO_STATES",
    "Actor",
    "DatasetFacts",
    "Decision",
    "JobAccess",
    "ScenarioGrant",
    "ScenarioState",
    "decide",
]

ScenarioState = Literal["active", "suspended", "revoked", "expired"]
SCENARIO_STATES: tuple[str, ...] = ScenarioState.__args__  # type: ignore[attr-defined]
DatasetKind = Literal["public", "social", "derived"]


@dataclass(frozen=True)
class Actor:
    """The user asking, as the decision sees them."""

    user_id: str
    org: str
    roles: frozenset[str]
    enabled: bool = True
    personnel: PersonnelRecord | None = None


@dataclass(frozen=True)
class ScenarioGrant:
    """A granted scenario and its state, as stored by the enclave."""

    scenario: Scenario
    state: ScenarioState
    policy_hash: str  # stored at grant time; must still match the scenario
    state_since: datetime | None = None  # when it was suspended / revoked / expired
    state_reason: str = ""


@dataclass(frozen=True)
class DatasetFacts:
    """Catalog facts of one dataset (by name). ``columns`` None: not known to the caller."""

    name: str
    kind: DatasetKind
    owner_org: str
    status: str = "active"  # active | deleted
    scenario_id: str | None = None  # derived tables: the scenario that owns them
    columns: frozenset[str] | None = None


@dataclass(frozen=True)
class JobAccess:
    """What a job will read and do: dataset -> columns, kind, output mode, DP spend."""

    columns: Mapping[str, Collection[str]]
    kind: str
    output_mode: str
    epsilon: float | None = None
    delta: float | None = None


@dataclass(frozen=True)
class Decision:
    """Allow, or deny with every reason."""

    allowed: bool
    scenario_id: str
    reasons: tuple[Reason, ...] = ()
    policy_hash: str | None = None  # what the job and its key release bind to
    scope: Mapping[str, frozenset[str]] = field(default_factory=dict)  # allowed reads

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "scenario_id": self.scenario_id,
            "policy_hash": self.policy_hash,
            "reasons": [r.to_dict() for r in self.reasons],
        }

    def raise_if_denied(self) -> None:
        """Raise :class:`AccessDenied` carrying every reason when the decision is a denial."""
        denial = self.denial()
        if denial is not None:
            raise denial

    def denial(self) -> AccessDenied | None:
        """The :class:`AccessDenied` a denial raises (None when allowed), e.g. to record it
        on the job before raising."""
        if self.allowed:
            return None
        n = len(self.reasons)
        return AccessDenied(
            f"job refused in scenario {self.scenario_id} ({n} reason{'s' * (n != 1)}): "
            + "; ".join(r.message for r in self.reasons),
            hint=_hint(self.reasons),
            details={"reasons": [r.to_dict() for r in self.reasons]},
        )


_HINTS: dict[str, str] = {
    "identity": "run jobs as an enabled operator of the scenario's organisation",
    "personnel": "an authority records the missing steps with `shuyu user activate`",
    "scenario": "ask the authority about the scenario's state and term",
    "scope": "read only the datasets and columns the scenario lists "
    "(`shuyu scenario show`), or ask the authority for a new scenario",
    "purpose": "use a job kind, output mode and budget the scenario allows",
    "approval": "request the data with `shuyu request create` and wait for the provider; "
    "fusion with operator data needs `shuyu scenario fusion-approve` by the authority",
}


def _hint(reasons: tuple[Reason, ...]) -> str:
    seen: list[str] = []
    for r in reasons:
        if r.category not in seen:
            seen.append(r.category)
    return "; ".join(_HINTS[c] for c in seen)


def _identity(actor: Actor, s: Scenario, now: datetime) -> list[Reason]:
    out: list[Reason] = []
    if not actor.enabled:
        out.append(Reason("identity", "identity.disabled", f"user `{actor.user_id}` is disabled"))
    if "operator" not in actor.roles:
        out.append(
            Reason(
                "identity",
                "identity.not_operator",
                f"user `{actor.user_id}` does not hold the operator role; only operators run jobs",
            )
        )
    elif actor.org != s.operator_org:
        out.append(
            Reason(
                "identity",
                "identity.wrong_org",
                f"user `{actor.user_id}` belongs to `{actor.org}`, not to `{s.operator_org}`, "
                f"the operator of scenario `{s.id}`",
            )
        )
    if "operator" in actor.roles:
        out.extend(personnel_gaps(actor.user_id, actor.personnel, now))
    return out


def _scenario(grant: ScenarioGrant, now: datetime) -> list[Reason]:
    s = grant.scenario
    out: list[Reason] = []
    since = f" on {day_label(grant.state_since)}" if grant.state_since else ""
    why = f": {grant.state_reason}" if grant.state_reason else ""
    if grant.state == "suspended":
        out.append(
            Reason(
                "scenario",
                "scenario.suspended",
                f"scenario `{s.id}` was suspended{since}{why}",
            )
        )
    elif grant.state == "revoked":
        out.append(
            Reason("scenario", "scenario.revoked", f"scenario `{s.id}` was revoked{since}{why}")
        )
    if grant.state == "expired" or now >= s.validity.ends_at:
        out.append(
            Reason(
                "scenario",
                "scenario.expired",
                f"scenario `{s.id}` expired on {s.validity.last_day}",
            )
        )
    elif now < s.validity.starts_at:
        out.append(
            Reason(
                "scenario",
                "scenario.not_started",
                f"scenario `{s.id}` is valid only from {s.validity.starts_at.date().isoformat()}",
            )
        )
    if policy_hash(s) != grant.policy_hash:
        out.append(
            Reason(
                "scenario",
                "scenario.hash_mismatch",
                f"the stored policy of scenario `{s.id}` no longer matches its hash "
                f"{grant.policy_hash[:12]}…; it was altered after it was granted",
            )
        )
    return out


def _purpose(s: Scenario, job: JobAccess) -> list[Reason]:
    out: list[Reason] = []
    if job.kind not in s.job_kinds:
        out.append(
            Reason(
                "purpose",
                "purpose.job_kind",
                f"job kind `{job.kind}` is not allowed in scenario `{s.id}` "
                f"(allowed: {', '.join(s.job_kinds)})",
            )
        )
    if job.output_mode not in s.output_modes:
        out.append(
            Reason(
                "purpose",
                "purpose.output_mode",
                f"output mode `{job.output_mode}` is not allowed in scenario `{s.id}` "
                f"(allowed: {', '.join(s.output_modes)})",
            )
        )
    b = s.privacy_budget
    if job.epsilon is not None and not 0 <= job.epsilon <= b.per_job_epsilon:
        out.append(
            Reason(
                "purpose",
                "purpose.epsilon_cap",
                f"the job asks for epsilon {job.epsilon:g}; scenario `{s.id}` allows at most "
                f"{b.per_job_epsilon:g} per job",
            )
        )
    if job.delta is not None and not 0 <= job.delta <= b.per_job_delta:
        out.append(
            Reason(
                "purpose",
                "purpose.delta_cap",
                f"the job asks for delta {job.delta:g}; scenario `{s.id}` allows at most "
                f"{b.per_job_delta:g} per job",
            )
        )
    return out


def _data(
    s: Scenario,
    job: JobAccess,
    datasets: Mapping[str, DatasetFacts],
    approved: Collection[str],
    fusion_approved: Collection[str],
) -> tuple[list[Reason], dict[str, frozenset[str]]]:
    out: list[Reason] = []
    scope: dict[str, frozenset[str]] = {}
    social: list[str] = []
    non_social = False
    for name in sorted(job.columns):
        wanted = frozenset(job.columns[name])
        facts = datasets.get(name)
        if facts is None or facts.status == "deleted":
            state = "does not exist" if facts is None else "was deleted"
            out.append(
                Reason("scope", "scope.dataset_unknown", f"dataset `{name}` {state} in the catalog")
            )
            continue
        if facts.kind == "derived":
            if facts.scenario_id != s.id:
                out.append(
                    Reason(
                        "scope",
                        "scope.derived_other_scenario",
                        f"derived table `{name}` belongs to scenario `{facts.scenario_id}`, "
                        f"not to `{s.id}`",
                    )
                )
                continue
            allowed = facts.columns if facts.columns is not None else wanted
            non_social = True
        elif name not in s.datasets:
            out.append(
                Reason(
                    "scope",
                    "scope.dataset_not_in_scenario",
                    f"dataset `{name}` is not in scenario `{s.id}`",
                )
            )
            continue
        else:
            allowed = s.columns_of(name)
            if facts.kind == "social":
                social.append(name)
            else:
                non_social = True
            needs_approval = facts.owner_org != s.operator_org
            if needs_approval and name not in approved:
                out.append(
                    Reason(
                        "approval",
                        "approval.provider",
                        f"provider `{facts.owner_org}` has not approved a data request for "
                        f"`{name}` in scenario `{s.id}`",
                    )
                )
        for col in sorted(wanted - allowed):
            out.append(
                Reason(
                    "scope",
                    "scope.column",
                    f"column `{col}` of `{name}` is not in scenario `{s.id}`",
                )
            )
        scope[name] = wanted & allowed
    if social and non_social:
        for name in social:
            if name not in fusion_approved:
                out.append(
                    Reason(
                        "approval",
                        "approval.fusion",
                        f"fusing operator dataset `{name}` with public data needs the "
                        f"authority's fusion approval for scenario `{s.id}`",
                    )
                )
    return out, scope


def decide(
    *,
    actor: Actor,
    scenario_id: str,
    grant: ScenarioGrant | None,
    job: JobAccess,
    datasets: Mapping[str, DatasetFacts],
    approved_requests: Collection[str],
    fusion_approvals: Collection[str],
    now: datetime,
) -> Decision:
    """Allow the job, or deny it with every reason that applies.

    ``approved_requests`` and ``fusion_approvals`` are dataset names approved *for this
    scenario*; ``datasets`` holds the catalog facts of (at least) every dataset in
    ``job.columns``. ``now`` must be timezone-aware.
    """
    if grant is None:
        reason = Reason("scenario", "scenario.unknown", f"scenario `{scenario_id}` does not exist")
        return Decision(False, scenario_id, (reason,))
    s = grant.scenario
    reasons: list[Reason] = []
    reasons += _identity(actor, s, now)
    reasons += _scenario(grant, now)
    reasons += _purpose(s, job)
    data_reasons, scope = _data(s, job, datasets, approved_requests, fusion_approvals)
    reasons += data_reasons
    if reasons:
        return Decision(False, s.id, tuple(reasons), grant.policy_hash)
    return Decision(True, s.id, (), grant.policy_hash, scope)
