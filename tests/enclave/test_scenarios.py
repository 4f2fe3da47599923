"""Scenario grants, states, hooks, shredding; data requests; audited decisions; derived data."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from enclave.errors import (
    DataRequestError,
    KeyMaterialError,
    PermissionDenied,
    ScenarioError,
)
from enclave.scenarios import ScenarioClosed
from enclave.tables import data_keys, datasets, jobs
from policies.decision import JobAccess
from policies.errors import AccessDenied, ScenarioFileError
from shuyu.context import Domain
from tests.policies.factories import (
    HEALTH_ORG,
    OP_ORG,
    SID,
    VISIT_COLUMNS,
    World,
    build_world,
    insert_dataset,
    make_scenario,
    open_operator_steps,
    scenario_dict,
)

JOB = JobAccess(
    columns={"residents": {"birth_year", "district_code"}, "clinic_visits": {"diagnosis_code"}},
    kind="sql",
    output_mode="dp_aggregate",
)


@pytest.fixture
def world(domain: Domain) -> World:
    return build_world(domain)


def _audit(domain: Domain, action: str) -> list[tuple[str, str, dict[str, object]]]:
    with domain.engine.connect() as conn:
        return [
            (e.target, e.result, e.details)
            for e in domain.audit.entries(conn)
            if e.action == action
        ]


# --- granting -------------------------------------------------------------------------


def test_grant_stores_the_policy_and_creates_the_scenario_keys(any_domain: Domain) -> None:
    w = build_world(any_domain, approve=False)
    rec = w.scenarios.get(SID)
    assert rec.state == "active"
    assert rec.policy_hash == make_scenario().policy_hash
    assert rec.scenario == make_scenario()
    with any_domain.engine.connect() as conn:
        assert sorted(any_domain.keys.key_ids(conn, SID)) == [f"{SID}.pseudonym", f"{SID}.results"]
        assert len(any_domain.keys.get(conn, f"{SID}.pseudonym")) == 32
    [(target, result, details)] = _audit(any_domain, "scenario.grant")
    assert (target, result, details["policy_hash"]) == (SID, "ok", rec.policy_hash)
    assert [r.id for r in w.scenarios.list_scenarios(operator_org=OP_ORG)] == [SID]


def test_only_an_authority_grants_and_an_id_is_granted_once(world: World) -> None:
    with pytest.raises(PermissionDenied, match="needs the authority role"):
        world.scenarios.grant("op", make_scenario(id="S-2026-015"))
    with pytest.raises(ScenarioError, match="already exists") as info:
        world.scenarios.grant("auth", make_scenario())
    assert "new id" in info.value.hint


def test_grant_checks_datasets_columns_and_thresholds_against_the_catalog(world: World) -> None:
    with world.domain.engine.begin() as conn:
        insert_dataset(conn, "rival_data", owner_org="ORG-RIVAL", kind="social")
    bad = make_scenario(
        id="S-2026-016",
        datasets={
            "residents": {"columns": ["person_id", "favourite_colour"]},
            "taxes": {"columns": ["amount"]},
            "rival_data": {"columns": ["person_id"]},
        },
        disclosure={"min_cell_size": 2},
    )
    with pytest.raises(ScenarioFileError) as info:
        world.scenarios.grant("auth", bad)
    fields = {e["field"]: e["message"] for e in info.value.details["errors"]}
    assert fields["datasets.residents.columns"].startswith(
        "`favourite_colour` is not a column of `residents`"
    )
    assert fields["datasets.taxes"] == "no dataset `taxes` in the catalog"
    assert "operator-owned data of `ORG-RIVAL`" in fields["datasets.rival_data"]
    assert "below 10, the minimum of grade L4" in fields["disclosure.min_cell_size"]
    assert world.scenarios.find("S-2026-016") is None


def test_effective_disclosure_defaults_from_the_datasets_grade(world: World) -> None:
    eff = world.scenarios.disclosure(SID)
    assert eff.grade == "L4" and eff.min_cell_size == 10


# --- decisions through the enclave ------------------------------------------------------


def test_decisions_are_audited_allowed_and_denied_with_every_reason(world: World) -> None:
    d = world.access.authorize_job("op", SID, JOB, job_id="J-1")
    assert d.allowed and d.policy_hash == world.scenarios.get(SID).policy_hash
    bad = JobAccess(columns={"residents": {"id_number"}}, kind="python", output_mode="model")
    with pytest.raises(AccessDenied) as info:
        world.access.authorize_job("op", SID, bad, job_id="J-2")
    assert {r["code"] for r in info.value.details["reasons"]} == {
        "scope.column",
        "purpose.job_kind",
        "purpose.output_mode",
    }
    entries = _audit(world.domain, "access.decide")
    assert [(t, r, d["job_id"]) for t, r, d in entries] == [
        (SID, "allowed", "J-1"),
        (SID, "denied", "J-2"),
    ]
    assert entries[1][2]["datasets"] == {"residents": ["id_number"]}


def test_no_job_reads_a_dataset_before_its_provider_approves(domain: Domain) -> None:
    w = build_world(domain, approve=False)
    d = w.access.decide_job("op", SID, JOB)
    assert sorted(r.code for r in d.reasons) == ["approval.provider", "approval.provider"]
    r1 = w.requests.create("op", SID, "residents", note="district prevalence")
    w.requests.refuse("prov", r1.id, "the district codes are being corrected this month")
    r2 = w.requests.create("op", SID, "clinic_visits")
    w.requests.approve("prov", r2.id)
    d = w.access.decide_job("op", SID, JOB)
    assert [r.message for r in d.reasons] == [
        f"provider `{HEALTH_ORG}` has not approved a data request for `residents` in "
        f"scenario `{SID}`"
    ]
    r3 = w.requests.create("op", SID, "residents")
    w.requests.approve("prov", r3.id, "ok")
    assert w.access.decide_job("op", SID, JOB).allowed


def test_an_unknown_user_is_denied_and_audited(world: World) -> None:
    d = world.access.decide_job("ghost", SID, JOB)
    assert {r.code for r in d.reasons} >= {"identity.disabled", "identity.not_operator"}


# --- data requests ----------------------------------------------------------------------


def test_data_requests_go_to_the_datasets_provider(any_domain: Domain) -> None:
    w = build_world(any_domain, approve=False)
    w.identity.add_user("auth", "other_prov", org="ORG-TAX", roles=["provider"])
    r = w.requests.create("op", SID, "residents")
    assert (r.state, r.provider_org) == ("pending", HEALTH_ORG)
    with pytest.raises(PermissionDenied, match="provided by `ORG-HEALTH`"):
        w.requests.approve("other_prov", r.id)
    with pytest.raises(PermissionDenied, match="needs the provider role"):
        w.requests.approve("op", r.id)
    with pytest.raises(DataRequestError, match="needs a reason"):
        w.requests.refuse("prov", r.id, "")
    with pytest.raises(DataRequestError, match="already pending"):
        w.requests.create("op", SID, "residents")
    done = w.requests.approve("prov", r.id, "as agreed")
    assert (done.state, done.decided_by) == ("approved", "prov")
    with pytest.raises(DataRequestError, match="already approved"):
        w.requests.refuse("prov", r.id, "changed my mind")
    assert [x.id for x in w.requests.list_requests("prov")] == [r.id]
    assert w.requests.list_requests("other_prov") == []
    assert [x.id for x in w.requests.list_requests("op", state="approved")] == [r.id]
    assert [t for t, _, _ in _audit(any_domain, "request.approve")] == [r.id]


def test_requests_need_an_open_operator_of_the_scenario_and_a_dataset_in_it(world: World) -> None:
    world.identity.add_user("auth", "newbie", org=OP_ORG, roles=["operator"])
    with pytest.raises(PermissionDenied) as info:
        world.requests.create("newbie", SID, "residents")
    assert "has not completed the authorized-operation training" in info.value.message
    world.identity.add_user("auth", "rival", org="ORG-RIVAL", roles=["operator"])
    world.identity.activate("auth", "rival", open_operator_steps())
    with pytest.raises(PermissionDenied, match="not to `ORG-OPERATOR-01`"):
        world.requests.create("rival", SID, "residents")
    with world.domain.engine.begin() as conn:
        insert_dataset(conn, "taxes", owner_org="ORG-TAX")
    with pytest.raises(DataRequestError, match="not in scenario") as out:
        world.requests.create("op", SID, "taxes")
    assert out.value.code == "enclave.request_out_of_scope"


# --- suspension, revocation, expiry ----------------------------------------------------


def test_suspend_closes_access_at_once_and_calls_the_hooks_resume_reopens(world: World) -> None:
    seen: list[ScenarioClosed] = []
    world.scenarios.hooks.on_scenario_closed(seen.append)
    world.scenarios.suspend("auth", SID, "over-scope calls in October")
    assert [(e.scenario_id, e.state, e.final) for e in seen] == [(SID, "suspended", False)]
    assert not world.scenarios.is_open(SID)
    d = world.access.decide_job("op", SID, JOB)
    assert [r.code for r in d.reasons] == ["scenario.suspended"]
    assert "over-scope calls in October" in d.reasons[0].message
    with pytest.raises(ScenarioError, match="is suspended; it cannot be suspended"):
        world.scenarios.suspend("auth", SID, "again")
    world.scenarios.resume("auth", SID, "rectified, report R-17 accepted")
    assert world.access.decide_job("op", SID, JOB).allowed
    with world.domain.engine.connect() as conn:  # suspension kept the keys
        assert len(world.domain.keys.key_ids(conn, SID)) == 2
    with pytest.raises(ScenarioError, match="needs a reason"):
        world.scenarios.suspend("auth", SID, " ")
    with pytest.raises(PermissionDenied):
        world.scenarios.suspend("prov", SID, "I do not like it")


def _derive(w: World, name: str = "visits_by_person") -> str:
    with w.domain.engine.begin() as conn:
        plan = w.derived.plan(
            conn,
            scenario_id=SID,
            name=name,
            sources=["residents", "clinic_visits"],
            columns={"person_id": "string", "n_visits": "int"},
            job_id="J-9",
            code_sha256="ab" * 32,
        )
        for group in (plan.grade, "footer"):
            w.domain.keys.create(conn, plan.dataset_id, group)  # what the store will do
        return w.derived.register(
            conn,
            plan,
            path=f"{plan.dataset_id}/v1",
            num_rows=3,
            num_bytes=10,
            content_sha256="0" * 64,
        )


def test_revocation_shreds_keys_calls_hooks_refuses_jobs_and_keeps_every_log(
    any_domain: Domain,
) -> None:
    w = build_world(any_domain)
    derived_id = _derive(w)
    with any_domain.engine.begin() as conn:
        for jid, state in (("J-a", "pending_review"), ("J-b", "released")):
            conn.execute(
                jobs.insert().values(
                    id=jid,
                    scenario_id=SID,
                    submitter="op",
                    kind="sql",
                    output_mode="dp_aggregate",
                    code="select 1",
                    code_sha256="0" * 64,
                    params={},
                    state=state,
                    result=b"ciphertext",
                    created_at=w.clock(),
                    updated_at=w.clock(),
                )
            )
    w.access.decide_job("op", SID, JOB)
    with any_domain.engine.connect() as conn:
        before = [e.hash for e in any_domain.audit.entries(conn)]
    seen: list[ScenarioClosed] = []
    w.scenarios.hooks.on_scenario_closed(seen.append)

    rec = w.scenarios.revoke("auth", SID, "terminated after failed rectification")

    assert rec.state == "revoked" and rec.shredded_at is not None
    assert [(e.state, e.final) for e in seen] == [("revoked", True)]
    with any_domain.engine.connect() as conn:
        for key_id in (f"{SID}.pseudonym", f"{SID}.results", f"{derived_id}.L4"):
            with pytest.raises(KeyMaterialError) as gone:
                any_domain.keys.get(conn, key_id)
            assert gone.value.code == "enclave.key_destroyed"
        live = conn.execute(
            sa.select(sa.func.count())
            .select_from(data_keys)
            .where(
                data_keys.c.dataset_id.in_([SID, derived_id]), data_keys.c.wrapped_key.is_not(None)
            )
        ).scalar_one()
        assert live == 0
        status = conn.execute(sa.select(datasets.c.status).where(datasets.c.id == derived_id))
        assert status.scalar_one() == "deleted"
        results = dict(conn.execute(sa.select(jobs.c.id, jobs.c.result)).all())
        assert results == {"J-a": None, "J-b": b"ciphertext"}  # released products stay
        entries = list(any_domain.audit.entries(conn))
        assert [e.hash for e in entries[: len(before)]] == before  # every entry still there
        assert any_domain.audit.verify(conn).ok
    [(_, _, details)] = _audit(any_domain, "scenario.revoke")
    assert details["shredded"] == {
        "scenario_keys": 2,
        "derived_tables": 1,
        "derived_keys": 2,
        "unreleased_results": 1,
    }
    d = w.access.decide_job("op", SID, JOB)
    assert [r.code for r in d.reasons] == ["scenario.revoked"]
    with pytest.raises(ScenarioError, match="is revoked; it cannot be resumed"):
        w.scenarios.resume("auth", SID, "please")


def test_a_failing_hook_does_not_undo_the_closing_and_is_audited(world: World) -> None:
    def broken(event: ScenarioClosed) -> None:
        raise RuntimeError("pool gone")

    calls: list[str] = []
    world.scenarios.hooks.on_scenario_closed(broken)
    world.scenarios.hooks.on_scenario_closed(lambda e: calls.append(e.scenario_id))
    world.scenarios.suspend("auth", SID, "incident 42")
    assert calls == [SID]
    assert world.scenarios.get(SID).state == "suspended"
    [(target, result, details)] = _audit(world.domain, "scenario.hook_failed")
    assert (target, result, details["error"]) == (SID, "error", "RuntimeError")


def test_expiry_refuses_at_once_and_the_sweep_shreds(world: World) -> None:
    seen: list[ScenarioClosed] = []
    world.scenarios.hooks.on_scenario_closed(seen.append)
    world.clock.advance(days=700)
    assert world.scenarios.get(SID).effective_state(world.clock()) == "expired"
    d = world.access.decide_job("op", SID, JOB)
    assert "scenario.expired" in [r.code for r in d.reasons]
    assert not world.scenarios.is_open(SID)
    assert world.scenarios.expire_due() == [SID]
    assert world.scenarios.expire_due() == []
    assert [e.state for e in seen] == ["expired"]
    with world.domain.engine.connect() as conn:
        assert world.domain.keys.key_ids(conn, SID) == []
    with pytest.raises(ScenarioError, match="is expired"):
        world.scenarios.revoke("auth", SID, "late")


# --- fusion (R2.6) and derived tables --------------------------------------------------


def test_fusion_of_operator_data_needs_the_authoritys_approval(domain: Domain) -> None:
    w = build_world(domain, grant=False)
    with domain.engine.begin() as conn:
        insert_dataset(
            conn,
            "bank_defaults",
            owner_org=OP_ORG,
            kind="social",
            grade="L3",
            columns=[
                ("person_id", "string", "identifier", "L3"),
                ("defaulted", "bool", "attribute", "L3"),
            ],
        )
    data = scenario_dict()
    data["datasets"]["bank_defaults"] = {"columns": ["person_id", "defaulted"]}
    w.scenarios.grant("auth", make_scenario(datasets=data["datasets"]))
    r = w.requests.create("op", SID, "residents")
    w.requests.approve("prov", r.id)
    with pytest.raises(DataRequestError, match="needs no data request"):
        w.requests.create("op", SID, "bank_defaults")
    fused = JobAccess(
        columns={"residents": {"person_id"}, "bank_defaults": {"person_id", "defaulted"}},
        kind="sql",
        output_mode="dp_aggregate",
    )
    assert [x.code for x in w.access.decide_job("op", SID, fused).reasons] == ["approval.fusion"]
    with pytest.raises(ScenarioError, match="public data needs no fusion approval"):
        w.scenarios.approve_fusion("auth", SID, "residents", "not social")
    with pytest.raises(PermissionDenied):
        w.scenarios.approve_fusion("op", SID, "bank_defaults", "self-approval")
    w.scenarios.approve_fusion("auth", SID, "bank_defaults", "reviewed import under 004 §4(3)")
    assert w.access.decide_job("op", SID, fused).allowed
    with pytest.raises(ScenarioError, match="already approved"):
        w.scenarios.approve_fusion("auth", SID, "bank_defaults", "again please")


def test_derived_tables_inherit_the_highest_grade_and_stay_in_their_scenario(world: World) -> None:
    derived_id = _derive(world)
    with world.domain.engine.connect() as conn:
        row = conn.execute(sa.select(datasets).where(datasets.c.id == derived_id)).one()
    assert (row.kind, row.scenario_id, row.grade, row.owner_org) == ("derived", SID, "L4", OP_ORG)
    assert [s["name"] for s in row.lineage["sources"]] == ["clinic_visits", "residents"]
    assert {c["name"]: c["role"] for c in row.meta["columns"]} == {
        "person_id": "identifier",  # inherited from the sources
        "n_visits": "sensitive",  # unknown origin: the careful default
    }
    mine = JobAccess(
        columns={"visits_by_person": {"n_visits"}}, kind="sql", output_mode="dp_aggregate"
    )
    assert world.access.decide_job("op", SID, mine).allowed
    # another scenario of the same operator may not read it, nor be granted it
    other = make_scenario(id="S-2026-020", datasets={"clinic_visits": {"columns": ["person_id"]}})
    world.scenarios.grant("auth", other)
    d = world.access.decide_job("op", "S-2026-020", mine)
    assert "scope.derived_other_scenario" in [r.code for r in d.reasons]
    with pytest.raises(ScenarioFileError, match="derived tables are never granted"):
        world.scenarios.grant(
            "auth",
            make_scenario(
                id="S-2026-021", datasets={"visits_by_person": {"columns": ["n_visits"]}}
            ),
        )
    # a new version supersedes the old one; both are shredded when the scenario ends
    second = _derive(world)
    with world.domain.engine.connect() as conn:
        assert world.derived.of_scenario(conn, SID) == ["visits_by_person"]
    world.scenarios.revoke("auth", SID, "ended")
    with world.domain.engine.connect() as conn:
        assert world.domain.keys.key_ids(conn, derived_id) == []
        assert world.domain.keys.key_ids(conn, second) == []


def test_derived_tables_refuse_foreign_sources_and_taken_names(world: World) -> None:
    with world.domain.engine.begin() as conn:
        insert_dataset(conn, "taxes", owner_org="ORG-TAX", columns=VISIT_COLUMNS)
        with pytest.raises(ScenarioError, match="source `taxes` is not in scenario"):
            world.derived.plan(
                conn,
                scenario_id=SID,
                name="t1",
                sources=["taxes"],
                columns={"a": "int"},
                job_id="J",
                code_sha256="0" * 64,
            )
        with pytest.raises(ScenarioError, match="taken by another dataset"):
            world.derived.plan(
                conn,
                scenario_id=SID,
                name="residents",
                sources=["residents"],
                columns={"a": "int"},
                job_id="J",
                code_sha256="0" * 64,
            )
    world.scenarios.suspend("auth", SID, "incident")
    with world.domain.engine.begin() as conn, pytest.raises(ScenarioError, match="suspended"):
        world.derived.plan(
            conn,
            scenario_id=SID,
            name="t2",
            sources=["residents"],
            columns={"a": "int"},
            job_id="J",
            code_sha256="0" * 64,
        )


def test_scenario_records_keep_their_state_history_in_the_audit_log(world: World) -> None:
    world.scenarios.suspend("auth", SID, "a")
    world.scenarios.resume("auth", SID, "b")
    world.scenarios.revoke("auth", SID, "c")
    with world.domain.engine.connect() as conn:
        actions = [e.action for e in world.domain.audit.entries(conn) if e.target == SID]
    assert actions[-3:] == ["scenario.suspend", "scenario.resume", "scenario.revoke"]
    assert world.scenarios.get(SID).grant.state_reason == "c"
    assert world.clock() - world.scenarios.get(SID).granted_at < timedelta(minutes=5)


def test_keep_writes_a_derived_table_encrypted_through_the_store_and_revocation_shreds_it(
    domain: Domain,
) -> None:
    import pyarrow as pa

    from enclave.derived import DerivedTables

    w = build_world(domain)
    derived = DerivedTables(
        domain.audit,
        w.scenarios,
        clock=w.clock,
        engine=domain.engine,
        keys=domain.keys,
        store=domain.store,
    )
    batch = pa.record_batch({"person_id": ["a", "b", "c"], "n_visits": [1, 4, 2]})
    ds_id = derived.keep(
        scenario_id=SID,
        name="visits_by_person",
        sources=["residents", "clinic_visits"],
        columns={"person_id": "string", "n_visits": "int"},
        batches=[batch],
        job_id="J-7",
        code_sha256="cd" * 32,
    )
    record = domain.store.get("visits_by_person")
    assert (record.id, record.kind, record.grade, record.num_rows) == (ds_id, "derived", "L4", 3)
    assert record.meta.privacy_unit == "person_id"  # inherited from residents
    table = domain.store.open_dataset_for_trusted_read("visits_by_person")
    assert table.column("n_visits").to_pylist() == [1, 4, 2]
    files = domain.store.files(record)
    assert files and all(f.read_bytes()[-4:] == b"PARE" for f in files)  # encrypted footer
    w.scenarios.revoke("auth", SID, "ended")
    with pytest.raises(Exception) as gone:
        domain.store.open_dataset_for_trusted_read("visits_by_person", version=1)
    assert getattr(gone.value, "code", "") in {"enclave.dataset_deleted", "enclave.key_destroyed"}


def _residents_duckdb():  # type: ignore[no-untyped-def]
    import duckdb

    con = duckdb.connect()
    con.execute(
        """
        CREATE TABLE residents AS
        SELECT 'P' || CAST(i AS VARCHAR) AS person_id, '43010119800101' || CAST(i AS VARCHAR)
               AS id_number, 1950 + i % 60 AS birth_year, '4301' || CAST(10 + i % 9 AS VARCHAR)
               AS district_code, 100.0 * i AS income, CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END
               AS sex
        FROM range(3000) t(i)
        """
    )
    return con


def test_sample_views_use_each_scenarios_own_key_and_die_with_it(world: World) -> None:
    from enclave.scenarios import pseudonym_key_id

    world.scenarios.grant("auth", make_scenario(id="S-2026-015"))
    pseudonyms: dict[str, set[str]] = {}
    for sid in (SID, "S-2026-015", SID):
        view = world.scenarios.sample_view(sid, "residents")
        assert view.actions["id_number"] == "drop"  # not in the scenario
        assert view.actions["person_id"] == "pseudonymize"
        with world.domain.engine.connect() as conn:
            key = world.domain.keys.get(conn, pseudonym_key_id(sid))
        con = _residents_duckdb()
        for sql, params in view.statements(key):
            con.execute(sql, params)
        rows = con.execute("SELECT person_id FROM residents_sample").fetchall()
        got = {r[0] for r in rows}
        assert 150 < len(got) < 450  # rate 0.1 of 3000 units
        if sid in pseudonyms:
            assert got == pseudonyms[sid]  # stable within a scenario
        pseudonyms[sid] = got
    assert pseudonyms[SID].isdisjoint(pseudonyms["S-2026-015"])
    world.scenarios.revoke("auth", "S-2026-015", "ended")
    with world.domain.engine.connect() as conn, pytest.raises(KeyMaterialError) as gone:
        world.domain.keys.get(conn, pseudonym_key_id("S-2026-015"))
    assert gone.value.code == "enclave.key_destroyed"
    with pytest.raises(ScenarioError, match="not in scenario"):
        world.scenarios.sample_view(SID, "taxes")
