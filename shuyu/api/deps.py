"""Dependencies every route shares: the domain, the caller, and the role gate.

A route names the roles allowed to call it with ``Depends(allow("operator"))``; the gate
reads the bearer token, counts it against the per-token rate limit, authenticates it, and
refuses (403, audited) a caller holding none of the roles. The domain functions check again
with their own rules (a submitter may not review their own job, a provider decides only for
its own datasets): the route gate is the first line, not the only one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from policies.errors import ShuyuError
from policies.roles import ROLES
from shuyu.api.ratelimit import check_rate, token_key
from shuyu.context import Domain
from shuyu.errors import AuthError

__all__ = [
    "ANY_ROLE",
    "Caller",
    "DomainDep",
    "allow",
    "authenticate_token",
    "get_domain",
    "resolve_caller",
]

ANY_ROLE: tuple[str, ...] = tuple(ROLES)

_bearer = HTTPBearer(auto_error=False, description="A shuyu API token.")


@dataclass(frozen=True)
class Caller:
    """The authenticated user behind a request."""

    user_id: str
    roles: tuple[str, ...]
    org: str
    user: Any  # the identity service's own user object, handed on to domain functions


def get_domain(request: Request) -> Domain:
    domain: Domain = request.app.state.domain
    return domain


DomainDep = Annotated[Domain, Depends(get_domain)]


def resolve_caller(domain: Domain, token: str) -> Caller:
    """Resolve a token to its user with the identity service (AuthenticationError if not)."""
    user = domain.identity.authenticate(token)
    return Caller(user_id=user.id, roles=tuple(user.roles), org=user.org, user=user)


def authenticate_token(domain: Domain, token: str) -> Caller:
    """Count ``token`` against its rate limit, then resolve it to its user."""
    check_rate(domain.engine, token_key(token), domain.settings.rate_per_token_per_min)
    return resolve_caller(domain, token)


def bearer_token(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise AuthError(
            "this route needs a bearer token",
            code="api.no_token",
            hint="send `Authorization: Bearer <token>`; an authority issues tokens with "
            "`shuyu token issue`",
        )
    return creds.credentials


def deny(domain: Domain, caller: Caller, what: str, allowed: tuple[str, ...]) -> ShuyuError:
    """Audit a refused call and return the error to raise."""
    domain.audit.record_now(
        domain.engine,
        actor=caller.user_id,
        action="api.denied",
        target=what,
        result="denied",
        details={"roles": list(caller.roles), "allowed": list(allowed)},
    )
    return ShuyuError(
        f"{what} is for {', '.join(allowed)}; you are {', '.join(caller.roles) or 'no role'}",
        code="api.forbidden_role",
        kind="forbidden",
        hint="ask the authority for an account with the role this needs",
    )


def allow(*roles: str) -> Callable[..., Caller]:
    """A dependency that authenticates the caller and requires one of ``roles``."""
    allowed = tuple(roles) or ANY_ROLE
    unknown = set(allowed) - set(ROLES)
    assert not unknown, f"unknown roles {unknown}"

    def gate(
        request: Request,
        domain: DomainDep,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        caller = authenticate_token(domain, bearer_token(creds))
        if not any(r in allowed for r in caller.roles):
            route = getattr(request.scope.get("route"), "path", request.url.path)
            raise deny(domain, caller, f"{request.method} {route}", allowed)
        return caller

    return gate
