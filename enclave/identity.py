"""Users, roles, personnel records and API tokens (R4).

Who may do what is policy (:mod:`policies.roles`); when an operator's account opens is
policy too (:func:`policies.personnel.personnel_gaps`). This service stores the facts,
checks them on every action, and audits every change in the same transaction.

**The root of trust.** Someone must create the first authority. That is the local
administrator: a person with a shell on the domain's host who can read ``$SHUYU_HOME`` —
and so already holds the master key. :meth:`IdentityService.add_user` with
``as_user=None`` is that path; it is only reachable from the local CLI and may only create
authorities. Everything else is done *as* a user who holds the right role. A remote API
must never call it with ``as_user=None``.

**Tokens.** A token is ``sy_`` followed by 32 random bytes (256 bits, URL-safe base64),
shown once at creation. The domain keeps only its SHA-256. A slow password hash (bcrypt,
argon2) exists to make guessing *low-entropy* secrets expensive; a 256-bit random token
cannot be guessed whatever the hash costs, so a fast hash loses nothing, and it lets each
request find its token with one indexed lookup instead of trying a slow hash against every
row. A stolen database yields no usable token. Tokens expire, and can be revoked by their
owner or an authority.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from enclave.audit import AuditLog
from enclave.authz_tables import (
    api_tokens,
    from_db_time,
    personnel,
    to_db_time,
    user_roles,
    users,
)
from enclave.errors import AuthenticationError, IdentityError, PermissionDenied
from policies.decision import Actor
from policies.personnel import PersonnelRecord, personnel_gaps
from policies.reasons import Reason
from policies.roles import ROLES, may, parse_roles, roles_allowed
from policies.terms import end_instant, start_instant

__all__ = [
    "LOCAL_ADMIN",
    "MAX_TOKEN_TTL_DAYS",
    "TOKEN_PREFIX",
    "IdentityService",
    "IssuedToken",
    "PersonnelSteps",
    "TokenInfo",
    "User",
    "hash_token",
]

log = logging.getLogger(__name__)

TOKEN_PREFIX = "sy_"  # noqa: S105 - a public prefix, not a secret
MAX_TOKEN_TTL_DAYS = 366
_USER_ID = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


LOCAL_ADMIN = "local-admin"


def local_admin_actor() -> str:
    """How the local administrator appears in the audit log: ``local-admin:<os user>``."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        who = "unknown"
    return f"{LOCAL_ADMIN}:{who}"


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256 hex of its UTF-8 text."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    """A user as stored, with the personnel record the gate is applied to."""

    id: str
    org: str
    roles: tuple[str, ...]
    status: str  # active | disabled
    display_name: str = ""
    personnel: PersonnelRecord = field(default_factory=PersonnelRecord)
    created_at: datetime | None = None

    @property
    def enabled(self) -> bool:
        return self.status == "active"

    def has(self, role: str) -> bool:
        return role in self.roles

    def gaps(self, now: datetime) -> list[Reason]:
        """Personnel steps still missing (operators only; other roles have none)."""
        if not self.has("operator"):
            return []
        return personnel_gaps(self.id, self.personnel, now)

    def actor(self) -> Actor:
        """The user as :func:`policies.decision.decide` sees them."""
        return Actor(self.id, self.org, frozenset(self.roles), self.enabled, self.personnel)

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "display_name": self.display_name,
            "org": self.org,
            "roles": list(self.roles),
            "status": self.status,
        }
        if now is not None and self.has("operator"):
            out["missing_steps"] = [g.message for g in self.gaps(now)]
        return out


@dataclass(frozen=True)
class PersonnelSteps:
    """Steps to record for a person; None leaves a step as it is."""

    real_name_ref: str | None = None  # e.g. the reference of the identity check
    real_name_verified_on: date | None = None
    training_ref: str | None = None
    trained_on: date | None = None
    agreement_ref: str | None = None
    agreement_signed_on: date | None = None
    agreement_valid_from: date | None = None
    agreement_valid_until: date | None = None  # last day covered (inclusive)


@dataclass(frozen=True)
class IssuedToken:
    """A new token. ``secret`` is shown once and never stored."""

    id: str
    user_id: str
    secret: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user_id: str
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "valid"


# Built once: every authenticated request reads these.
_GET_ROLES = sa.select(user_roles.c.role).where(user_roles.c.user_id == sa.bindparam("user_id"))
_GET_PERSONNEL = sa.select(personnel).where(personnel.c.user_id == sa.bindparam("user_id"))
# A user, their personnel record and every role in one statement (one row per role; the
# personnel columns are prefixed p_): the hot path reads the submitter twice per job.
_GET_USER_FULL = (
    sa.select(
        users,
        user_roles.c.role.label("role"),
        *(c.label(f"p_{c.name}") for c in personnel.c),
    )
    .select_from(
        users.outerjoin(user_roles, user_roles.c.user_id == users.c.id).outerjoin(
            personnel, personnel.c.user_id == users.c.id
        )
    )
    .where(users.c.id == sa.bindparam("user_id"))
)
_GET_TOKEN = sa.select(api_tokens).where(api_tokens.c.token_sha256 == sa.bindparam("digest"))


class IdentityService:
    """Adds, activates, disables and authenticates users; every change is audited."""

    def __init__(self, engine: Engine, audit: AuditLog, clock: Clock = _utc_now) -> None:
        self._engine = engine
        self._audit = audit
        self._clock = clock

    # --- reading --------------------------------------------------------------------
    def get(self, user_id: str, conn: Connection | None = None) -> User:
        if conn is None:
            with self._engine.connect() as c:
                return self.get(user_id, c)
        rows = conn.execute(_GET_USER_FULL, {"user_id": user_id}).all()
        if not rows:
            raise IdentityError(
                f"no user `{user_id}`",
                code="enclave.user_unknown",
                kind="not_found",
                hint="check the name with `shuyu user list`",
            )
        row = rows[0]
        roles = [r.role for r in rows if r.role is not None]
        p = None
        if row.p_user_id is not None:
            p = SimpleNamespace(**{c.name: getattr(row, f"p_{c.name}") for c in personnel.c})
        return self._user(row, roles, p)

    def _build(self, conn: Connection, row: Any) -> User:
        roles = [r.role for r in conn.execute(_GET_ROLES, {"user_id": row.id})]
        p = conn.execute(_GET_PERSONNEL, {"user_id": row.id}).first()
        return self._user(row, roles, p)

    @staticmethod
    def _user(row: Any, role_names: list[str], p: Any) -> User:
        roles = tuple(sorted(role_names, key=ROLES.index))
        record = PersonnelRecord()
        if p is not None:
            record = PersonnelRecord(
                real_name_verified_at=from_db_time(p.real_name_verified_at),
                real_name_ref=p.real_name_ref,
                trained_at=from_db_time(p.trained_at),
                training_ref=p.training_ref,
                agreement_ref=p.agreement_ref,
                agreement_signed_at=from_db_time(p.agreement_signed_at),
                agreement_valid_from=from_db_time(p.agreement_valid_from),
                agreement_valid_until=from_db_time(p.agreement_valid_until),
            )
        return User(
            id=row.id,
            org=row.org,
            roles=roles,
            status=row.status,
            display_name=row.display_name,
            personnel=record,
            created_at=from_db_time(row.created_at),
        )

    def list_users(self, as_user: str, *, org: str | None = None) -> list[User]:
        with self._engine.connect() as conn:
            self.require(conn, as_user, "user.list")
            q = sa.select(users).order_by(users.c.org, users.c.id)
            if org:
                q = q.where(users.c.org == org)
            return [self._build(conn, r) for r in conn.execute(q)]

    def require(self, conn: Connection, user_id: str, action: str) -> User:
        """The enabled user ``user_id`` holding a role that may do ``action``, or an error."""
        user = self.get(user_id, conn)
        if not user.enabled:
            raise PermissionDenied(
                f"user `{user_id}` is disabled",
                code="enclave.user_disabled",
                hint="an authority re-enables the account with `shuyu user activate`",
            )
        if not may(user.roles, action):
            need = " or ".join(sorted(roles_allowed(action))) or "no role"
            raise PermissionDenied(
                f"user `{user_id}` (roles: {', '.join(user.roles)}) may not {action}; "
                f"it needs the {need} role",
                code="enclave.role_required",
                hint="act as a user who holds that role (--as)",
            )
        return user

    def require_open_operator(self, user: User) -> None:
        """Refuse a data action by an operator whose personnel steps are not all recorded."""
        gaps = user.gaps(self._clock())
        if gaps:
            raise PermissionDenied(
                f"the account of `{user.id}` is not open for data: "
                + "; ".join(g.message for g in gaps),
                code="enclave.personnel_incomplete",
                hint="an authority records the missing steps with `shuyu user activate` "
                "(R4.1: training, real-name verification, confidentiality agreement)",
                details={"reasons": [g.to_dict() for g in gaps]},
            )

    # --- changing -------------------------------------------------------------------
    def add_user(
        self,
        as_user: str | None,
        user_id: str,
        *,
        org: str,
        roles: Iterable[str],
        display_name: str = "",
    ) -> User:
        """Register a user. ``as_user=None`` is the local administrator (authorities only)."""
        if not _USER_ID.match(user_id):
            raise IdentityError(
                f"`{user_id}` is not a valid user name",
                code="enclave.user_name",
                hint="2-64 characters: lower-case letters, digits, '.', '_', '-', "
                "starting with a letter",
            )
        try:
            parsed = parse_roles(roles)
        except ValueError as exc:
            raise IdentityError(str(exc), code="enclave.role_unknown") from exc
        org = org.strip()
        if not org:
            raise IdentityError(
                "a user needs an organisation", code="enclave.user_org", hint="give --org CODE"
            )
        with self._engine.begin() as conn:
            if as_user is None:
                if parsed != ("authority",):
                    raise PermissionDenied(
                        "without --as, only an authority can be created (the local "
                        "administrator bootstraps the first authority)",
                        code="enclave.bootstrap_only_authority",
                        hint="create an authority first, then add others with --as <authority>",
                    )
                actor = local_admin_actor()
            else:
                self.require(conn, as_user, "user.add")
                actor = as_user
            exists = conn.execute(sa.select(users.c.id).where(users.c.id == user_id)).first()
            if exists is not None:
                raise IdentityError(
                    f"user `{user_id}` already exists",
                    code="enclave.user_exists",
                    kind="conflict",
                    hint="choose another name, or change the user with `shuyu user activate`",
                )
            now = self._clock()
            conn.execute(
                users.insert().values(
                    id=user_id,
                    display_name=display_name,
                    org=org,
                    status="active",
                    created_at=to_db_time(now),
                    created_by=actor,
                )
            )
            conn.execute(user_roles.insert(), [{"user_id": user_id, "role": r} for r in parsed])
            self._audit.record(
                conn,
                actor=actor,
                action="user.add",
                target=user_id,
                details={"org": org, "roles": list(parsed)},
            )
            return self.get(user_id, conn)

    def activate(self, as_user: str, user_id: str, steps: PersonnelSteps) -> User:
        """Record personnel steps (R4.1) and (re-)enable the account; audited."""
        self._check_steps(steps)
        with self._engine.begin() as conn:
            self.require(conn, as_user, "user.activate")
            user = self.get(user_id, conn)
            now = self._clock()
            values: dict[str, Any] = {}
            if steps.real_name_ref is not None:
                values["real_name_ref"] = steps.real_name_ref
                values["real_name_verified_at"] = to_db_time(
                    start_instant(steps.real_name_verified_on)
                    if steps.real_name_verified_on
                    else now
                )
            if steps.training_ref is not None:
                values["training_ref"] = steps.training_ref
                values["trained_at"] = to_db_time(
                    start_instant(steps.trained_on) if steps.trained_on else now
                )
            if steps.agreement_ref is not None:
                assert steps.agreement_valid_until is not None  # _check_steps
                values["agreement_ref"] = steps.agreement_ref
                values["agreement_signed_at"] = to_db_time(
                    start_instant(steps.agreement_signed_on) if steps.agreement_signed_on else now
                )
                values["agreement_valid_from"] = to_db_time(
                    start_instant(
                        steps.agreement_valid_from or steps.agreement_signed_on or now.date()
                    )
                )
                values["agreement_valid_until"] = to_db_time(
                    end_instant(steps.agreement_valid_until)
                )
            values["updated_at"] = to_db_time(now)
            values["updated_by"] = as_user
            existing = conn.execute(
                sa.select(personnel.c.user_id).where(personnel.c.user_id == user_id)
            ).first()
            if existing is None:
                conn.execute(personnel.insert().values(user_id=user_id, **values))
            else:
                conn.execute(
                    personnel.update().where(personnel.c.user_id == user_id).values(**values)
                )
            if not user.enabled:
                conn.execute(
                    users.update()
                    .where(users.c.id == user_id)
                    .values(status="active", disabled_at=None, disabled_reason=None)
                )
            updated = self.get(user_id, conn)
            recorded = sorted(k for k in values if k.endswith("_ref"))
            self._audit.record(
                conn,
                actor=as_user,
                action="user.activate",
                target=user_id,
                details={
                    "recorded": recorded,
                    "re_enabled": not user.enabled,
                    "missing": [g.code for g in updated.gaps(now)],
                },
            )
            return updated

    @staticmethod
    def _check_steps(steps: PersonnelSteps) -> None:
        problems: list[str] = []
        if steps.real_name_verified_on and not steps.real_name_ref:
            problems.append("a verification date needs --verified-ref")
        if steps.trained_on and not steps.training_ref:
            problems.append("a training date needs --training-ref")
        agreement_dates = (
            steps.agreement_signed_on,
            steps.agreement_valid_from,
            steps.agreement_valid_until,
        )
        if steps.agreement_ref is None and any(agreement_dates):
            problems.append("agreement dates need --agreement-ref")
        if steps.agreement_ref is not None:
            if steps.agreement_valid_until is None:
                problems.append(
                    "a confidentiality agreement must state its term (004 §4(1)): give "
                    "--agreement-until"
                )
            else:
                start = steps.agreement_valid_from or steps.agreement_signed_on
                if start is not None and steps.agreement_valid_until < start:
                    problems.append("the agreement ends before it starts")
        for ref in (steps.real_name_ref, steps.training_ref, steps.agreement_ref):
            if ref is not None and not ref.strip():
                problems.append("references may not be empty")
        if problems:
            raise IdentityError(
                "personnel record refused: " + "; ".join(problems),
                code="enclave.personnel_invalid",
                hint="see `shuyu user activate --help`",
            )

    def disable(self, as_user: str, user_id: str, reason: str) -> User:
        """Close an account at once; its tokens stop working with it."""
        if not reason.strip():
            raise IdentityError("give a reason for disabling", code="enclave.reason_required")
        with self._engine.begin() as conn:
            self.require(conn, as_user, "user.disable")
            user = self.get(user_id, conn)
            if user.has("authority") and as_user == user_id:
                raise PermissionDenied(
                    "an authority may not disable itself",
                    code="enclave.self_disable",
                    hint="ask another authority",
                )
            now = self._clock()
            conn.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(status="disabled", disabled_at=to_db_time(now), disabled_reason=reason)
            )
            self._audit.record(
                conn,
                actor=as_user,
                action="user.disable",
                target=user_id,
                details={"reason": reason},
            )
            return self.get(user_id, conn)

    # --- tokens ---------------------------------------------------------------------
    def create_token(
        self,
        as_user: str,
        user_id: str | None = None,
        *,
        ttl_days: int = 90,
        label: str = "",
    ) -> IssuedToken:
        """A new token for ``user_id`` (default: yourself; for others you must be authority)."""
        user_id = user_id or as_user
        if not 1 <= ttl_days <= MAX_TOKEN_TTL_DAYS:
            raise IdentityError(
                f"a token lives 1 to {MAX_TOKEN_TTL_DAYS} days, not {ttl_days}",
                code="enclave.token_ttl",
                hint="give --ttl-days within that range",
            )
        with self._engine.begin() as conn:
            me = self.get(as_user, conn)
            if not me.enabled:
                raise PermissionDenied(
                    f"user `{as_user}` is disabled", code="enclave.user_disabled"
                )
            if user_id != as_user and not me.has("authority"):
                raise PermissionDenied(
                    f"`{as_user}` may create tokens only for itself",
                    code="enclave.role_required",
                    hint="an authority can create tokens for other users",
                )
            target = self.get(user_id, conn)
            if not target.enabled:
                raise PermissionDenied(
                    f"user `{user_id}` is disabled", code="enclave.user_disabled"
                )
            now = self._clock()
            token_id = f"tok_{secrets.token_hex(8)}"
            secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
            expires = now + timedelta(days=ttl_days)
            conn.execute(
                api_tokens.insert().values(
                    id=token_id,
                    user_id=user_id,
                    token_sha256=hash_token(secret),
                    label=label,
                    created_at=to_db_time(now),
                    created_by=as_user,
                    expires_at=to_db_time(expires),
                )
            )
            self._audit.record(
                conn,
                actor=as_user,
                action="token.create",
                target=token_id,
                details={"user": user_id, "expires_at": expires.isoformat(), "label": label},
            )
        return IssuedToken(token_id, user_id, secret, expires)

    def revoke_token(self, as_user: str, token_id: str) -> TokenInfo:
        with self._engine.begin() as conn:
            me = self.get(as_user, conn)
            row = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id)).first()
            if row is None:
                raise AuthenticationError(
                    f"no token `{token_id}`",
                    code="enclave.token_unknown",
                    kind="not_found",
                    hint="token ids start with tok_; see `shuyu token list`",
                )
            if row.user_id != as_user and not me.has("authority"):
                raise PermissionDenied(
                    f"`{as_user}` may revoke only its own tokens",
                    code="enclave.role_required",
                    hint="an authority can revoke any token",
                )
            if row.revoked_at is None:
                now = self._clock()
                conn.execute(
                    api_tokens.update()
                    .where(api_tokens.c.id == token_id)
                    .values(revoked_at=to_db_time(now), revoked_by=as_user)
                )
                self._audit.record(
                    conn,
                    actor=as_user,
                    action="token.revoke",
                    target=token_id,
                    details={"user": row.user_id},
                )
            return self._token_info(
                conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id)).one()
            )

    def list_tokens(self, as_user: str, user_id: str | None = None) -> list[TokenInfo]:
        user_id = user_id or as_user
        with self._engine.connect() as conn:
            me = self.get(as_user, conn)
            if user_id != as_user and not me.has("authority"):
                raise PermissionDenied(
                    f"`{as_user}` may list only its own tokens", code="enclave.role_required"
                )
            rows = conn.execute(
                sa.select(api_tokens)
                .where(api_tokens.c.user_id == user_id)
                .order_by(api_tokens.c.created_at)
            )
            return [self._token_info(r) for r in rows]

    @staticmethod
    def _token_info(row: Any) -> TokenInfo:
        created = from_db_time(row.created_at)
        expires = from_db_time(row.expires_at)
        assert created is not None and expires is not None
        return TokenInfo(
            row.id, row.user_id, row.label, created, expires, from_db_time(row.revoked_at)
        )

    def authenticate(self, token: str) -> User:
        """The user a token belongs to, or :class:`AuthenticationError` saying why not.

        Refusals of a *known* token (expired, revoked, user disabled) are audited. Unknown
        tokens are only logged: anyone can send garbage, and writing each attempt into the
        hash-chained log would let them stall every writer of the domain.
        """
        if not token.startswith(TOKEN_PREFIX):
            raise AuthenticationError(
                "that is not a shuyu token",
                code="enclave.token_unknown",
                hint=f"tokens start with {TOKEN_PREFIX}; create one with `shuyu token create`",
            )
        digest = hash_token(token)
        now = self._clock()
        with self._engine.connect() as conn:
            row = conn.execute(_GET_TOKEN, {"digest": digest}).first()
            if row is None:
                log.warning("authentication with an unknown token")
                raise AuthenticationError(
                    "unknown token",
                    code="enclave.token_unknown",
                    hint="check the token, or create a new one with `shuyu token create`",
                )
            info = self._token_info(row)
            user = self.get(info.user_id, conn)
        failure: AuthenticationError | None = None
        if info.revoked_at is not None:
            failure = AuthenticationError(
                f"token {info.id} was revoked on {info.revoked_at:%Y-%m-%d}",
                code="enclave.token_revoked",
                hint="create a new token with `shuyu token create`",
            )
        elif now >= info.expires_at:
            failure = AuthenticationError(
                f"token {info.id} expired on {info.expires_at:%Y-%m-%d %H:%M} UTC",
                code="enclave.token_expired",
                hint="create a new token with `shuyu token create`",
            )
        elif not user.enabled:
            failure = AuthenticationError(
                f"user `{user.id}` is disabled",
                code="enclave.user_disabled",
                hint="ask an authority",
            )
        if failure is not None:
            self._audit.record_now(
                self._engine,
                actor=info.user_id,
                action="token.authenticate",
                target=info.id,
                result="denied",
                details={"code": failure.code},
            )
            raise failure
        return user

    # --- helpers for other enclave services -----------------------------------------
    def users_with_role(self, conn: Connection, role: str) -> Sequence[str]:
        rows = conn.execute(sa.select(user_roles.c.user_id).where(user_roles.c.role == role))
        return [r.user_id for r in rows]
