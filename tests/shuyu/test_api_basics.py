"""The service surface every route shares: errors, request ids, limits, health, metrics."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from shuyu.api import create_app
from shuyu.api.logging import JsonFormatter, redact, request_id_var
from shuyu.api.ratelimit import check_rate, token_key
from shuyu.context import Domain
from shuyu.errors import RateLimited
from shuyu.settings import Settings
from tests.shuyu.api_support import Api

ERROR_KEYS = {"code", "message", "kind", "request_id"}


def assert_error(r: object, status: int, code: str | None = None) -> dict[str, object]:
    from httpx import Response

    assert isinstance(r, Response)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= ERROR_KEYS, body
    assert body["request_id"] == r.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code, body
    return dict(body)


def test_health_answers_with_the_database_state(api: Api) -> None:
    r = api.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "version": "0.1.0"}


def test_no_token_is_401_in_the_error_shape(api: Api) -> None:
    body = assert_error(api.client.get("/v1/me"), 401, "api.no_token")
    assert "Bearer" in str(body["hint"])


def test_unknown_token_is_401(api: Api) -> None:
    r = api.client.get("/v1/me", headers={"Authorization": "Bearer sy_not-a-real-token"})
    assert_error(r, 401, "enclave.token_unknown")
    assert r.headers["www-authenticate"] == "Bearer"


def test_me_names_the_user_roles_and_org(api: Api) -> None:
    r = api.client.get("/v1/me", headers=api.as_role("operator"))
    assert r.status_code == 200
    assert r.json() == {"user_id": "op.wang", "roles": ["operator"], "org": "OP-ACME"}


def test_unknown_route_and_method_use_the_error_shape(api: Api) -> None:
    assert_error(api.client.get("/v1/nothing-here"), 404, "api.no_route")
    r = api.client.delete("/healthz")
    assert_error(r, 405, "api.method_not_allowed")


def test_validation_errors_name_each_field_without_echoing_input(api: Api) -> None:
    r = api.client.post(
        "/v1/users",
        headers=api.as_role("authority"),
        json={"id": "x", "org": "", "roles": ["wizard"], "secret": "sy_leak"},
    )
    body = assert_error(r, 422, "api.invalid_request")
    fields = {e["field"] for e in body["details"]["errors"]}  # type: ignore[index]
    assert {"body.id", "body.org", "body.roles.0", "body.secret"} <= fields
    assert "sy_leak" not in r.text


def test_a_client_request_id_is_kept_only_if_plain(api: Api) -> None:
    r = api.client.get("/healthz", headers={"X-Request-ID": "trace-0123456789"})
    assert r.headers["x-request-id"] == "trace-0123456789"
    r = api.client.get("/healthz", headers={"X-Request-ID": "bad id\nforged: line"})
    assert r.headers["x-request-id"].startswith("R-")


def test_a_body_over_the_limit_is_413_before_it_is_read(domain: Domain) -> None:
    domain.settings.max_request_bytes = 2048
    with TestClient(create_app(domain, console=False)) as client:
        r = client.post(
            "/v1/users", content=b"x" * 4096, headers={"Content-Type": "application/json"}
        )
        assert_error(r, 413, "api.request_too_large")


def test_a_chunked_body_over_the_limit_is_413(domain: Domain) -> None:
    domain.settings.max_request_bytes = 2048

    def chunks():  # no Content-Length: the middleware must count
        for _ in range(8):
            yield b"y" * 1024

    with TestClient(create_app(domain, console=False)) as client:
        r = client.post("/v1/users", content=chunks(), headers={"Content-Type": "application/json"})
        assert_error(r, 413, "api.request_too_large")


def test_the_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    api.domain.settings.rate_per_token_per_min = 3
    headers = api.as_role("auditor")
    for _ in range(3):
        assert api.client.get("/v1/me", headers=headers).status_code == 200
    r = api.client.get("/v1/me", headers=headers)
    body = assert_error(r, 429, "service.rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert body["details"] == {"retry_after_s": int(r.headers["retry-after"])}
    # another token is counted on its own
    assert api.client.get("/v1/me", headers=api.as_role("operator")).status_code == 200


def test_rate_windows_reset_each_minute_and_never_store_the_token(any_domain: Domain) -> None:
    domain = any_domain
    key = token_key("sy_secret")
    assert key != "sy_secret" and len(key) == 64
    assert check_rate(domain.engine, key, 2, now_s=120.0) == 1
    assert check_rate(domain.engine, key, 2, now_s=150.0) == 2
    with pytest.raises(RateLimited) as exc:
        check_rate(domain.engine, key, 2, now_s=170.0)
    assert exc.value.retry_after_s == 10
    check_rate(domain.engine, token_key("sy_other"), 2, now_s=175.0)
    assert check_rate(domain.engine, key, 2, now_s=181.0) == 1  # new window
    with domain.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT token_key, window_start FROM rate_windows").all()
    assert rows == [(key, 180)]  # every earlier window was pruned, other tokens' too


def test_metrics_expose_requests_and_jobs_by_state(api: Api) -> None:
    api.client.get("/healthz")
    text = api.client.get("/metrics").text
    assert 'shuyu_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'shuyu_jobs{state="running"} 0.0' in text
    assert "shuyu_job_queue_depth 0.0" in text
    assert "shuyu_database_up 1.0" in text
    assert "shuyu_sandbox_pool_size 1.0" in text
    assert 'shuyu_gate_findings{severity="block"} 0.0' in text


def test_metrics_show_a_started_pool_and_never_start_one(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    text = api.client.get("/metrics").text
    assert "shuyu_sandbox_pool_idle" not in text
    assert api.domain.sandboxes.started_pool is None  # the scrape started nothing
    started = SimpleNamespace(
        idle_count=1, spare_count=1, sessions=lambda: [("op", "S")], close=lambda: None
    )
    monkeypatch.setattr(api.domain.sandboxes, "_pool", started)
    text = api.client.get("/metrics").text
    assert "shuyu_sandbox_pool_idle 1.0" in text
    assert "shuyu_sandbox_spares 1.0" in text
    assert "shuyu_sandbox_sessions 1.0" in text


def test_metrics_report_budget_spent_per_scenario(api: Api) -> None:
    from tests.shuyu.api_support import pending_review_job

    pending_review_job(api)
    text = api.client.get("/metrics").text
    assert 'shuyu_budget_epsilon_spent{scenario="S-2026-001"} 0.0' in text
    assert 'shuyu_budget_epsilon_left{scenario="S-2026-001"} 1.0' in text


def test_logs_are_json_with_request_id_and_redacted(caplog: pytest.LogCaptureFixture) -> None:
    token = request_id_var.set("R-test")
    try:
        record = logging.makeLogRecord(
            {
                "name": "t",
                "levelname": "INFO",
                "msg": "auth with Authorization: Bearer sy_abc123 and token=sy_zzz",
                "api_key": "k",
                "details": {"token": "sy_q", "scenario": "S-2026-001"},
            }
        )
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "R-test"
    text = json.dumps(line)
    for secret in ("sy_abc123", "sy_zzz", "sy_q"):
        assert secret not in text
    assert line["api_key"] == "[redacted]"
    assert line["details"]["scenario"] == "S-2026-001"
    assert redact("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----") == ("[redacted]")


def test_the_openapi_document_names_the_error_shape(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    assert "ErrorBody" in doc["components"]["schemas"]
    me = doc["paths"]["/v1/me"]["get"]
    assert me["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_two_processes_share_one_limit_and_lease_to_write_less(settings: Settings) -> None:
    from enclave.db import make_engine
    from shuyu.context import init_domain

    init_domain(settings).close()
    url = settings.resolved_database_url
    one, two = make_engine(url), make_engine(url)  # two server processes' engines
    key = token_key("sy_shared")
    allowed = 0
    for i in range(60):
        try:
            check_rate(one if i % 2 else two, key, 40, now_s=600.0 + i / 100)
            allowed += 1
        except RateLimited:
            pass
    assert allowed == 40  # never more than the limit, across both
    # with the default limit a request does not write: 30 requests, one lease
    other = token_key("sy_busy")
    for _ in range(30):
        check_rate(one, other, 600, now_s=700.0)
    with one.connect() as conn:
        count = conn.exec_driver_sql(
            "SELECT count FROM rate_windows WHERE token_key = ?", (other,)
        ).scalar_one()
    assert count == 30
    one.dispose()
    two.dispose()
