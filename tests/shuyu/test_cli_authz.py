"""The user, token, scenario, request and report commands, end to end on a local domain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from policies.errors import ShuyuError
from shuyu.cli import app
from shuyu.context import Domain
from tests.policies.factories import SID, VISIT_COLUMNS, insert_dataset, scenario_dict

runner = CliRunner()


def sy(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=True)


def ok(*args: str) -> str:
    result = sy(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def fails(code: str, *args: str) -> ShuyuError:
    result = sy(*args)
    assert isinstance(result.exception, ShuyuError), (result.output, result.exception)
    assert result.exception.code == code, result.exception
    return result.exception


@pytest.fixture
def setup(domain: Domain, tmp_path: Path) -> Path:
    """An authority, a provider, an operator (not yet open), two datasets, a scenario file."""
    ok("user", "add", "chen", "--org", "ORG-BUREAU", "--role", "authority")
    ok("user", "add", "prov", "--org", "ORG-HEALTH", "--role", "provider", "--as", "chen")
    ok("user", "add", "op", "--org", "ORG-OPERATOR-01", "--role", "operator", "--as", "chen")
    with domain.engine.begin() as conn:
        insert_dataset(conn, "residents")
        insert_dataset(conn, "clinic_visits", columns=VISIT_COLUMNS)
    f = tmp_path / "scenario.yaml"
    f.write_text(yaml.safe_dump(scenario_dict()))
    return f


def test_bootstrap_needs_no_actor_but_only_for_authorities(domain: Domain) -> None:
    ok("user", "add", "chen", "--org", "ORG-BUREAU", "--role", "authority")
    fails(
        "enclave.bootstrap_only_authority", "user", "add", "x1", "--org", "O", "--role", "operator"
    )
    fails("enclave.actor_required", "user", "list")
    out = ok("user", "list", "--as", "chen")
    assert "chen" in out and "authority" in out


def test_an_operator_is_refused_data_until_every_step_is_recorded(setup: Path) -> None:
    ok("scenario", "grant", str(setup), "--as", "chen")
    err = fails("enclave.personnel_incomplete", "request", "create", SID, "residents", "--as", "op")
    assert "not recorded as real-name verified" in err.message
    assert "training" in err.message and "confidentiality agreement" in err.message
    out = ok(
        "user", "activate", "op", "--verified-ref", "RN-1", "--training-ref", "TR-1", "--as", "chen"
    )
    assert "not open yet" in out and "confidentiality agreement" in out
    fails(
        "enclave.personnel_invalid",
        "user",
        "activate",
        "op",
        "--agreement-ref",
        "NDA-1",
        "--as",
        "chen",
    )
    out = ok(
        "user",
        "activate",
        "op",
        "--agreement-ref",
        "NDA-1",
        "--agreement-signed-on",
        "2026-01-05",
        "--agreement-until",
        "2099-12-31",
        "--as",
        "chen",
    )
    assert "operator account is open" in out
    assert "open" in ok("user", "list", "--as", "chen")
    ok("request", "create", SID, "residents", "--note", "prevalence", "--as", "op")


def test_scenario_and_request_flow_with_reports(setup: Path, domain: Domain) -> None:
    out = ok("scenario", "grant", str(setup), "--as", "chen")
    assert "policy hash" in out
    fails("enclave.role_required", "scenario", "grant", str(setup), "--as", "prov")
    ok(
        "user",
        "activate",
        "op",
        "--verified-ref",
        "RN-1",
        "--training-ref",
        "TR-1",
        "--agreement-ref",
        "NDA-1",
        "--agreement-until",
        "2099-12-31",
        "--as",
        "chen",
    )
    ok("request", "create", SID, "residents", "--as", "op")
    listed = json.loads(ok("request", "list", "--json", "--as", "prov"))
    [req] = listed
    assert req["state"] == "pending" and req["provider_org"] == "ORG-HEALTH"
    fails("enclave.reason_required", "request", "refuse", req["id"], "--reason", "", "--as", "prov")
    ok("request", "approve", req["id"], "--as", "prov")
    shown = json.loads(ok("scenario", "show", SID, "--json"))
    assert shown["state"] == "active" and shown["policy_hash"]
    disclosed = json.loads(ok("report", "disclosure", "--json"))
    assert [(d["scenario_id"], d["operator_org"]) for d in disclosed] == [(SID, "ORG-OPERATOR-01")]
    assert disclosed[0]["providers"] == ["ORG-HEALTH"]
    sup = json.loads(ok("report", "supervision", SID, "--json", "--as", "chen"))
    assert sup["decisions_denied"] == 0
    q = json.loads(ok("report", "quarterly", SID, "--quarter", "2026Q4", "--json", "--as", "op"))
    assert q["fee_cny"] == "0" and q["jobs_submitted"] == 0
    fails("policy.quarter_invalid", "report", "quarterly", SID, "--quarter", "Q5", "--as", "op")
    fails("enclave.role_required", "report", "supervision", SID, "--as", "op")
    sql = ok("scenario", "sample-sql", SID, "residents")
    assert "getvariable('shuyu_pseudonym_ipad')" in sql and "pseudonymize" in sql
    ok("scenario", "suspend", SID, "--reason", "over-scope calls", "--as", "chen")
    assert json.loads(ok("scenario", "list", "--json"))[0]["state"] == "suspended"
    ok("scenario", "resume", SID, "--reason", "rectified", "--as", "chen")
    assert "Aborted" in sy("scenario", "revoke", SID, "--reason", "end", "--as", "chen").output
    ok("scenario", "revoke", SID, "--reason", "terminated", "--yes", "--as", "chen")
    assert json.loads(ok("report", "disclosure", "--json")) == []
    assert "no scenario ended" in ok("scenario", "sweep")


def test_a_bad_scenario_file_names_its_fields(setup: Path) -> None:
    data = scenario_dict(job_kinds=["sql", "rust"])
    data["validity"] = {"start": "2026-01-01", "end": "2031-01-01"}
    setup.write_text(yaml.safe_dump(data))
    err = fails("policy.scenario_invalid", "scenario", "grant", str(setup), "--as", "chen")
    assert {e["field"] for e in err.details["errors"]} == {"job_kinds.1", "validity.end"}


def test_tokens_are_shown_once_and_can_be_revoked(setup: Path, domain: Domain) -> None:
    result = sy("token", "create", "--ttl-days", "7", "--label", "laptop", "--as", "op")
    assert result.exit_code == 0, result.output
    secret = next(line for line in result.stdout.splitlines() if line.startswith("sy_"))
    assert domain.identity.authenticate(secret).id == "op"
    listing = ok("token", "list", "--as", "op")
    assert "laptop" in listing and secret not in listing
    token_id = next(w for w in listing.split() if w.startswith("tok_"))
    ok("token", "revoke", token_id, "--as", "op")
    with pytest.raises(ShuyuError) as info:
        domain.identity.authenticate(secret)
    assert info.value.code == "enclave.token_revoked"
    fails("enclave.role_required", "token", "create", "--for", "prov", "--as", "op")
    ok("user", "disable", "prov", "--reason", "left", "--as", "chen")
    assert "disabled" in ok("user", "list", "--as", "chen")
