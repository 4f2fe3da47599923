"""The Python SDK and the CLI's remote mode, against the in-process app."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shuyu.cli import app as cli
from shuyu.cli.remote import load_credentials, remote_client, save_credentials
from shuyu.client import Client
from shuyu.errors import (
    RemoteError,
    RemoteForbidden,
    RemoteInvalid,
    RemoteNotFound,
    RemoteUnauthenticated,
    RemoteUnavailable,
    SettingsError,
)
from tests.shuyu.api_support import Api

URL = "http://testserver"


def client_for(api: Api, role: str) -> Client:
    token = api.as_role(role)["Authorization"].removeprefix("Bearer ")
    return Client(URL, token, http=api.client)


def test_me_is_typed(api: Api) -> None:
    me = client_for(api, "reviewer").me()
    assert (me.user_id, me.roles, me.org) == ("rev.zhao", ["reviewer"], "GOV-DATA")


def test_errors_are_typed_by_kind_and_carry_the_server_code(api: Api) -> None:
    operator = client_for(api, "operator")
    with pytest.raises(RemoteForbidden) as exc:
        operator._post(type(operator.me()), "/v1/scenarios/S-2026-001/revoke", {"reason": "r"})
    err = exc.value
    assert isinstance(err, RemoteError)
    assert err.code == "api.forbidden_role"
    assert err.status == 403
    assert err.request_id.startswith("R-")
    assert "ask the authority" in err.hint
    with pytest.raises(RemoteNotFound) as nf:
        client_for(api, "auditor")._get(type(operator.me()), "/v1/scenarios/S-2099-999")
    assert nf.value.code == "enclave.scenario_unknown"


def test_validation_errors_raise_remote_invalid_with_the_fields(api: Api) -> None:
    authority = client_for(api, "authority")
    with pytest.raises(RemoteInvalid) as exc:
        authority._post(type(authority.me()), "/v1/users", {"id": "x"})
    assert exc.value.code == "api.invalid_request"
    fields = {e["field"] for e in exc.value.details["errors"]}
    assert "body.org" in fields


def test_a_bad_token_raises_unauthenticated(api: Api) -> None:
    with pytest.raises(RemoteUnauthenticated) as exc:
        Client(URL, "sy_wrong", http=api.client).me()
    assert exc.value.code == "enclave.token_unknown"


def test_an_unreachable_server_is_unavailable_and_the_token_never_shows() -> None:
    client = Client("http://127.0.0.1:9", "sy_secret-token", timeout_s=2)
    assert "sy_secret" not in repr(client)
    with pytest.raises(RemoteUnavailable) as exc:
        client.me()
    assert exc.value.code == "client.unreachable"
    assert "sy_secret" not in str(exc.value)


# --- credentials and `shuyu login` -------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SHUYU_TOKEN", raising=False)
    monkeypatch.delenv("SHUYU_URL", raising=False)
    return tmp_path


def test_credentials_are_written_0600_and_a_wider_mode_is_refused(home: Path) -> None:
    path = save_credentials("https://sy.example/", "sy_abc")
    assert path == home / ".shuyu" / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_credentials() == {"url": "https://sy.example", "token": "sy_abc"}
    os.chmod(path, 0o644)
    with pytest.raises(SettingsError) as exc:
        load_credentials()
    assert exc.value.code == "service.credentials_mode"
    assert "chmod 600" in exc.value.hint
    save_credentials("https://sy.example", "sy_new")  # login again repairs the mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_token_saved_for_one_server_is_not_sent_to_another(home: Path) -> None:
    save_credentials("https://a.example", "sy_a")
    client = remote_client("https://a.example/")
    assert client is not None and client.url == "https://a.example"
    with pytest.raises(Exception) as exc:
        remote_client("https://evil.example")
    assert getattr(exc.value, "code", "") == "service.credentials_other_server"
    assert remote_client(None) is None  # no URL: the command runs locally


def test_shuyu_token_env_wins_over_the_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_credentials("https://a.example", "sy_file")
    monkeypatch.setenv("SHUYU_TOKEN", "sy_env")
    client = remote_client("https://b.example")
    assert client is not None
    assert client._headers["Authorization"] == "Bearer sy_env"


def test_login_checks_the_token_then_saves_it(
    home: Path, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Route the CLI's client to the in-process app.
    import shuyu.cli.remote as remote

    monkeypatch.setattr(remote, "Client", lambda url, token: Client(url, token, http=api.client))
    token = api.tokens["rev.zhao"]
    result = CliRunner().invoke(cli, ["login", "--url", URL, "--token", token])
    assert result.exit_code == 0, result.output
    assert "rev.zhao" in result.output
    assert token not in result.output
    assert load_credentials() == {"url": URL, "token": token}

    result = CliRunner().invoke(cli, ["login", "--url", URL, "--token", "sy_bad"])
    assert result.exit_code != 0
    assert load_credentials() == {"url": URL, "token": token}  # unchanged


def test_review_commands_run_against_a_remote_server(
    home: Path, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shuyu.cli.remote as remote
    from tests.shuyu.api_support import pending_review_job

    monkeypatch.setattr(remote, "Client", lambda url, token: Client(url, token, http=api.client))
    job = pending_review_job(api)
    env = {"SHUYU_URL": URL, "SHUYU_TOKEN": api.tokens["rev.zhao"]}
    result = CliRunner().invoke(cli, ["review", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert job in result.output
    no = ["--scope", "no", "--exposure", "no", "--model-risk", "no", "--other-risk", "no"]
    result = CliRunner().invoke(cli, ["review", "approve", job, *no, "--reason", "ok"], env=env)
    assert result.exit_code == 0, result.output
    assert "released" in result.output and "release R-" in result.output
