"""The five roles and what each may do (REQUIREMENTS "Roles").

A user holds one or more roles and belongs to exactly one organisation. Roles are checked
here, as data, so the enclave services and the decision function share one table of who
may do what, and a test can read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

__all__ = ["ACTIONS_BY_ROLE", "ROLES", "Role", "may", "parse_roles", "roles_allowed"]

Role = Literal["authority", "provider", "operator", "reviewer", "auditor"]
ROLES: tuple[Role, ...] = ("authority", "provider", "operator", "reviewer", "auditor")

# Action -> the roles that may perform it. An action not listed here is refused to all.
ACTIONS_BY_ROLE: dict[str, frozenset[Role]] = {
    # identity: the authority registers and activates personnel (004 §4(1))
    "user.add": frozenset({"authority"}),
    "user.activate": frozenset({"authority"}),
    "user.disable": frozenset({"authority"}),
    "user.list": frozenset({"authority", "auditor"}),
    # scenarios: granted, suspended, resumed and revoked by the authority (R2, R6)
    "scenario.grant": frozenset({"authority"}),
    "scenario.suspend": frozenset({"authority"}),
    "scenario.resume": frozenset({"authority"}),
    "scenario.revoke": frozenset({"authority"}),
    "scenario.read": frozenset({"authority", "provider", "operator", "reviewer", "auditor"}),
    "scenario.fusion_approve": frozenset({"authority"}),
    # data requests: the operator asks, the dataset's provider answers (004 §4(2))
    "request.create": frozenset({"operator"}),
    "request.decide": frozenset({"provider"}),
    "request.read": frozenset({"authority", "provider", "operator", "auditor"}),
    # computing on data is the operator's alone
    "job.submit": frozenset({"operator"}),
    # reports: supervision is the authority's and the auditor's; disclosure is public
    "report.supervision": frozenset({"authority", "auditor"}),
    "report.quarterly": frozenset({"authority", "auditor", "operator"}),
    "report.disclosure": frozenset({"authority", "provider", "operator", "reviewer", "auditor"}),
    # egress review and release (000 §14, 004 §4(4)); receiving a product is recorded (R4.2)
    "review.read": frozenset({"reviewer", "authority", "auditor"}),
    "review.decide": frozenset({"reviewer"}),
    "release.create": frozenset({"reviewer", "authority"}),
    "release.download": frozenset({"operator", "authority", "reviewer", "auditor"}),
}


def roles_allowed(action: str) -> frozenset[Role]:
    """The roles that may perform ``action`` (empty when the action is unknown)."""
    return ACTIONS_BY_ROLE.get(action, frozenset())


def may(roles: Iterable[str], action: str) -> bool:
    """True when any of ``roles`` may perform ``action``."""
    allowed = roles_allowed(action)
    return any(r in allowed for r in roles)


def parse_roles(values: Iterable[str]) -> tuple[Role, ...]:
    """Validate role names; raises ValueError naming the unknown ones and the known ones."""
    out: list[Role] = []
    unknown: list[str] = []
    for v in values:
        name = v.strip().lower()
        if name in ROLES:
            if name not in out:
                out.append(name)
        else:
            unknown.append(v)
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(ROLES)}")
    if not out:
        raise ValueError(f"give at least one role; roles are {', '.join(ROLES)}")
    return tuple(out)
