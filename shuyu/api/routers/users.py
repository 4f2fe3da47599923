"""Users, personnel steps and API tokens (R4): the authority manages; everyone sees itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from enclave.identity import PersonnelSteps, TokenInfo, User
from shuyu.api.deps import Caller, DomainDep, allow
from shuyu.api.schemas import (
    ActivateUser,
    AddUser,
    CreateToken,
    DisableUser,
    IssuedTokenView,
    Me,
    TokenView,
    UserView,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["users"])

EVERYONE = allow()
AUTHORITY = allow("authority")
USER_READERS = allow("authority", "auditor")


def user_view(user: User) -> dict[str, Any]:
    return user.to_dict(datetime.now(UTC))


def token_view(info: TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "user_id": info.user_id,
        "label": info.label,
        "created_at": info.created_at.isoformat(),
        "expires_at": info.expires_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
        "state": info.state(datetime.now(UTC)),
    }


@router.get("/me", response_model=Me)
def me(caller: Annotated[Caller, Depends(EVERYONE)]) -> Any:
    """Who this token belongs to."""
    return {"user_id": caller.user_id, "roles": list(caller.roles), "org": caller.org}


@router.get("/users", response_model=list[UserView])
def list_users(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(USER_READERS)],
    org: Annotated[str | None, Query(max_length=128)] = None,
) -> Any:
    """Every user (of one organisation), with roles and missing personnel steps."""
    return [user_view(u) for u in domain.identity.list_users(caller.user_id, org=org)]


@router.post("/users", response_model=UserView, status_code=status.HTTP_201_CREATED)
def add_user(
    domain: DomainDep, caller: Annotated[Caller, Depends(AUTHORITY)], body: AddUser
) -> Any:
    """Register a user with roles in an organisation (an operator opens only after R4.1)."""
    user = domain.identity.add_user(
        caller.user_id, body.id, org=body.org, roles=body.roles, display_name=body.display_name
    )
    return user_view(user)


@router.post("/users/{user_id}/activate", response_model=UserView)
def activate_user(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(AUTHORITY)],
    user_id: str,
    body: ActivateUser,
) -> Any:
    """Record personnel steps (training, real-name check, agreement) and re-enable."""
    steps = PersonnelSteps(**body.model_dump())
    return user_view(domain.identity.activate(caller.user_id, user_id, steps))


@router.post("/users/{user_id}/disable", response_model=UserView)
def disable_user(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(AUTHORITY)],
    user_id: str,
    body: DisableUser,
) -> Any:
    """Close an account at once; its tokens stop working."""
    return user_view(domain.identity.disable(caller.user_id, user_id, body.reason))


@router.get("/tokens", response_model=list[TokenView])
def list_tokens(
    domain: DomainDep,
    caller: Annotated[Caller, Depends(EVERYONE)],
    user_id: Annotated[str | None, Query(max_length=128)] = None,
) -> Any:
    """Your tokens (an authority may name another user); never the secrets."""
    return [token_view(t) for t in domain.identity.list_tokens(caller.user_id, user_id)]


@router.post("/tokens", response_model=IssuedTokenView, status_code=status.HTTP_201_CREATED)
def create_token(
    domain: DomainDep, caller: Annotated[Caller, Depends(EVERYONE)], body: CreateToken
) -> Any:
    """A new token for yourself (an authority: for anyone). The secret is shown once."""
    issued = domain.identity.create_token(
        caller.user_id, body.user_id, ttl_days=body.ttl_days, label=body.label
    )
    return {
        "id": issued.id,
        "user_id": issued.user_id,
        "token": issued.secret,
        "expires_at": issued.expires_at.isoformat(),
    }


@router.post("/tokens/{token_id}/revoke", response_model=TokenView)
def revoke_token(
    domain: DomainDep, caller: Annotated[Caller, Depends(EVERYONE)], token_id: str
) -> Any:
    """Revoke a token (your own; an authority: any)."""
    return token_view(domain.identity.revoke_token(caller.user_id, token_id))
