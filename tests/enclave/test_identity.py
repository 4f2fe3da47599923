"""Users, roles, the personnel gate and API tokens, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from enclave.authz_tables import api_tokens
from enclave.errors import AuthenticationError, IdentityError, PermissionDenied
from enclave.identity import IdentityService, PersonnelSteps, hash_token
from shuyu.context import Domain
from tests.policies.factories import TODAY, FakeClock, open_operator_steps


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ident(any_domain: Domain, clock: FakeClock) -> IdentityService:
    svc = IdentityService(any_domain.engine, any_domain.audit, clock)
    svc.add_user(None, "auth", org="ORG-BUREAU", roles=["authority"])
    return svc


def _actions(domain: Domain) -> list[tuple[str, str, str]]:
    with domain.engine.connect() as conn:
        return [(e.action, e.target, e.result) for e in domain.audit.entries(conn)]


def test_the_local_admin_bootstraps_authorities_only(
    any_domain: Domain, ident: IdentityService
) -> None:
    user = ident.get("auth")
    assert user.roles == ("authority",) and user.enabled
    with pytest.raises(PermissionDenied) as info:
        ident.add_user(None, "eve", org="ORG-X", roles=["operator"])
    assert info.value.code == "enclave.bootstrap_only_authority"
    with any_domain.engine.connect() as conn:
        first = next(e for e in any_domain.audit.entries(conn) if e.action == "user.add")
    assert first.actor.startswith("local-admin:")


def test_users_hold_several_roles_in_one_organisation(ident: IdentityService) -> None:
    u = ident.add_user("auth", "li", org="ORG-HEALTH", roles=["auditor", "provider"])
    assert u.roles == ("provider", "auditor")
    assert u.org == "ORG-HEALTH"
    with pytest.raises(IdentityError, match="already exists"):
        ident.add_user("auth", "li", org="ORG-HEALTH", roles=["provider"])
    with pytest.raises(IdentityError, match="unknown role"):
        ident.add_user("auth", "wu", org="ORG-HEALTH", roles=["admin"])
    with pytest.raises(IdentityError, match="not a valid user name"):
        ident.add_user("auth", "Bad Name", org="ORG-HEALTH", roles=["provider"])


def test_only_authorities_add_users(ident: IdentityService) -> None:
    ident.add_user("auth", "prov", org="ORG-HEALTH", roles=["provider"])
    with pytest.raises(PermissionDenied) as info:
        ident.add_user("prov", "x1", org="ORG-HEALTH", roles=["provider"])
    assert "needs the authority role" in info.value.message
    with pytest.raises(IdentityError) as unknown:
        ident.add_user("ghost", "x1", org="ORG-HEALTH", roles=["provider"])
    assert unknown.value.kind == "not_found"


def test_an_operator_account_opens_only_when_every_step_is_recorded(
    ident: IdentityService, clock: FakeClock
) -> None:
    op = ident.add_user("auth", "op", org="ORG-OP", roles=["operator"])
    assert [g.code for g in op.gaps(clock())] == [
        "personnel.not_verified",
        "personnel.not_trained",
        "personnel.no_agreement",
    ]
    with pytest.raises(PermissionDenied) as info:
        ident.require_open_operator(op)
    assert info.value.code == "enclave.personnel_incomplete"
    assert "not recorded as real-name verified" in info.value.message
    op = ident.activate("auth", "op", PersonnelSteps(real_name_ref="RN-1", training_ref="TR-1"))
    assert [g.code for g in op.gaps(clock())] == ["personnel.no_agreement"]
    op = ident.activate("auth", "op", open_operator_steps(until=TODAY + timedelta(days=10)))
    assert op.gaps(clock()) == []
    ident.require_open_operator(op)
    clock.advance(days=12)
    gaps = op.gaps(clock())
    assert [g.code for g in gaps] == ["personnel.agreement_expired"]
    assert "expired on" in gaps[0].message


def test_an_agreement_must_state_its_term(ident: IdentityService) -> None:
    ident.add_user("auth", "op", org="ORG-OP", roles=["operator"])
    with pytest.raises(IdentityError, match="must state its term"):
        ident.activate("auth", "op", PersonnelSteps(agreement_ref="NDA-1"))
    with pytest.raises(IdentityError, match="ends before it starts"):
        ident.activate(
            "auth",
            "op",
            PersonnelSteps(
                agreement_ref="NDA-1",
                agreement_valid_from=TODAY,
                agreement_valid_until=TODAY - timedelta(days=1),
            ),
        )
    with pytest.raises(PermissionDenied):
        ident.activate("op", "op", open_operator_steps())


def test_disable_closes_the_account_and_its_tokens(
    any_domain: Domain, ident: IdentityService
) -> None:
    ident.add_user("auth", "prov", org="ORG-HEALTH", roles=["provider"])
    tok = ident.create_token("auth", "prov")
    assert ident.authenticate(tok.secret).id == "prov"
    ident.disable("auth", "prov", "left the organisation")
    with pytest.raises(AuthenticationError) as info:
        ident.authenticate(tok.secret)
    assert info.value.code == "enclave.user_disabled"
    with any_domain.engine.connect() as conn, pytest.raises(PermissionDenied, match="disabled"):
        ident.require(conn, "prov", "request.decide")
    with pytest.raises(PermissionDenied, match="may not disable itself"):
        ident.disable("auth", "auth", "oops")
    ident.activate("auth", "prov", PersonnelSteps())
    assert ident.authenticate(tok.secret).enabled


def test_tokens_are_random_shown_once_stored_only_as_a_hash(
    any_domain: Domain, ident: IdentityService
) -> None:
    tok = ident.create_token("auth", ttl_days=30, label="laptop")
    other = ident.create_token("auth")
    assert tok.secret.startswith("sy_") and len(tok.secret) >= 40
    assert tok.secret != other.secret
    with any_domain.engine.connect() as conn:
        stored = conn.execute(sa.select(api_tokens)).all()
    dump = repr([tuple(r) for r in stored])
    assert tok.secret not in dump and tok.secret[3:] not in dump
    assert hash_token(tok.secret) in dump
    assert ident.authenticate(tok.secret).id == "auth"
    assert [t.id for t in ident.list_tokens("auth")] == [tok.id, other.id]


def test_unknown_expired_and_revoked_tokens_are_refused_with_their_reason(
    any_domain: Domain, ident: IdentityService, clock: FakeClock
) -> None:
    with pytest.raises(AuthenticationError) as info:
        ident.authenticate("sy_" + "A" * 43)
    assert info.value.code == "enclave.token_unknown" and info.value.kind == "unauthenticated"
    with pytest.raises(AuthenticationError, match="not a shuyu token"):
        ident.authenticate("Bearer nonsense")
    short = ident.create_token("auth", ttl_days=1)
    clock.advance(days=1, seconds=1)
    with pytest.raises(AuthenticationError) as expired:
        ident.authenticate(short.secret)
    assert expired.value.code == "enclave.token_expired"
    live = ident.create_token("auth")
    info_ = ident.revoke_token("auth", live.id)
    assert info_.state(clock()) == "revoked"
    with pytest.raises(AuthenticationError) as revoked:
        ident.authenticate(live.secret)
    assert revoked.value.code == "enclave.token_revoked"
    denied = [a for a in _actions(any_domain) if a[0] == "token.authenticate"]
    assert denied == [
        ("token.authenticate", short.id, "denied"),
        ("token.authenticate", live.id, "denied"),
    ]


def test_tokens_for_others_need_an_authority(ident: IdentityService) -> None:
    ident.add_user("auth", "op", org="ORG-OP", roles=["operator"])
    ident.add_user("auth", "op2", org="ORG-OP", roles=["operator"])
    mine = ident.create_token("op")
    assert mine.user_id == "op"
    with pytest.raises(PermissionDenied, match="only for itself"):
        ident.create_token("op", "op2")
    theirs = ident.create_token("auth", "op2")
    with pytest.raises(PermissionDenied, match="only its own"):
        ident.revoke_token("op", theirs.id)
    with pytest.raises(IdentityError, match="1 to 366 days"):
        ident.create_token("op", ttl_days=0)
    with pytest.raises(AuthenticationError, match="no token"):
        ident.revoke_token("auth", "tok_nope")


def test_every_change_is_audited(any_domain: Domain, ident: IdentityService) -> None:
    ident.add_user("auth", "op", org="ORG-OP", roles=["operator"])
    ident.activate("auth", "op", open_operator_steps())
    t = ident.create_token("auth", "op")
    ident.revoke_token("auth", t.id)
    ident.disable("auth", "op", "rectification")
    actions = [a[0] for a in _actions(any_domain)]
    for expected in ("user.add", "user.activate", "token.create", "token.revoke", "user.disable"):
        assert expected in actions
    with any_domain.engine.connect() as conn:
        assert any_domain.audit.verify(conn).ok
        text = " ".join(e.to_json() for e in any_domain.audit.entries(conn))
    assert t.secret not in text
