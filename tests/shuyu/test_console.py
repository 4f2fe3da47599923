"""The reviewer console without a browser: login, cookies, CSRF, roles, pages, decisions."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from shuyu.console.i18n import LABELS, LANGS, translate
from shuyu.console.session import SESSION_COOKIE, csrf_for
from tests.shuyu.api_support import Api, pending_review_job


def login(api: Api, user_id: str) -> TestClient:
    c = api.client
    c.cookies.clear()
    page = c.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    r = c.post(
        "/console/login",
        data={"token": api.tokens[user_id], "csrf": csrf.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert m is not None
    return m.group(1)


def test_every_label_exists_in_both_languages() -> None:
    for key, entry in LABELS.items():
        for lang in LANGS:
            assert entry.get(lang), f"{key} has no {lang} label"
    assert translate("en", "review.needs", n=2) == "Needs 2 reviewer(s)"


def test_pages_need_a_session(api: Api) -> None:
    r = api.client.get("/console/queue", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"


def test_login_sets_a_strict_httponly_cookie_scoped_to_the_console(api: Api) -> None:
    page = api.client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = api.client.post(
        "/console/login",
        data={"token": api.tokens["rev.zhao"], "csrf": csrf},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cookie = next(
        v for k, v in r.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    page = api.client.get("/console/queue")
    assert page.status_code == 200 and "rev.zhao" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-frame-options"] == "DENY"
    assert api.tokens["rev.zhao"] not in page.text  # the token never appears in a page


def test_login_refuses_a_missing_csrf_a_bad_token_and_an_operator(api: Api) -> None:
    r = api.client.post("/console/login", data={"token": api.tokens["rev.zhao"], "csrf": "x"})
    assert r.status_code == 401 and "CSRF" in r.text
    page = api.client.get("/console/login?lang=en")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = api.client.post("/console/login", data={"token": "sy_wrong", "csrf": csrf})
    assert r.status_code == 401 and "Login failed" in r.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
    r = api.client.post("/console/login", data={"token": api.tokens["op.wang"], "csrf": csrf})
    assert r.status_code == 401 and "reviewers, auditors" in r.text
    assert SESSION_COOKIE not in api.client.cookies


def test_a_decision_without_the_csrf_token_is_refused(api: Api) -> None:
    job = pending_review_job(api)
    c = login(api, "rev.zhao")
    r = c.post(f"/console/review/{job}", data={"decision": "approve", "reason": "x"})
    assert r.status_code == 403 and "console.csrf" in r.text
    r = c.post(
        f"/console/review/{job}",
        data={"decision": "approve", "reason": "x", "csrf": csrf_for("sy_other-token")},
    )
    assert r.status_code == 403
    assert c.get("/v1/reviews", headers=api.as_role("reviewer")).json()[0]["approvals"] == 0


def test_a_reviewer_approves_from_the_page_and_the_release_appears(api: Api) -> None:
    job = pending_review_job(api)
    c = login(api, "rev.zhao")
    queue = c.get("/console/queue?lang=en")
    assert job in queue.text
    page = c.get(f"/console/review/{job}")
    assert "SELECT district" in page.text and "<svg" in page.text
    assert "Approve release" in page.text  # the language stuck (cookie)
    r = c.post(
        f"/console/review/{job}",
        data={
            "csrf": csrf_of(page.text),
            "decision": "approve",
            "reason": "cells large enough",
            "n_beyond_scope": "within the stated purpose",
            "q_beyond_scope": "no",
            "q_direct_exposure": "no",
            "q_model_attack": "no",
            "q_other_risk": "no",
        },
        follow_redirects=True,
    )
    assert r.status_code == 200 and "Your review is recorded" in r.text
    releases = c.get("/console/releases")
    assert job in releases.text
    shown = c.get(f"/v1/reviews/{job}", headers=api.as_role("auditor")).json()
    assert shown["reviews"][0]["text"] == (
        "cells large enough\n[beyond_scope] within the stated purpose"
    )


def test_a_concern_cannot_be_approved_and_the_error_is_a_page(api: Api) -> None:
    job = pending_review_job(api)
    c = login(api, "rev.zhao")
    page = c.get(f"/console/review/{job}?lang=zh")
    r = c.post(
        f"/console/review/{job}",
        data={
            "csrf": csrf_of(page.text),
            "decision": "approve",
            "reason": "x",
            "q_beyond_scope": "no",
            "q_direct_exposure": "yes",
            "q_model_attack": "no",
            "q_other_risk": "no",
        },
    )
    assert r.status_code == 422
    assert "egress.review_risk" in r.text and "出错了" in r.text


def test_an_auditor_reads_but_gets_no_decision_form(api: Api) -> None:
    job = pending_review_job(api)
    c = login(api, "aud.qian")
    page = c.get(f"/console/review/{job}?lang=en")
    assert page.status_code == 200
    assert "may view this output but not review it" in page.text
    assert 'value="approve"' not in page.text


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_audit_page_shows_the_verification(api: Api, lang: str) -> None:
    c = login(api, "aud.qian")
    page = c.get(f"/console/audit?lang={lang}")
    assert translate(lang, "audit.verifies") in page.text  # type: ignore[arg-type]
    r = c.post("/console/audit/verify", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 200 and translate(lang, "audit.verifies") in r.text  # type: ignore[arg-type]


def test_logout_clears_the_session(api: Api) -> None:
    c = login(api, "rev.zhao")
    page = c.get("/console/queue")
    r = c.post("/console/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert c.get("/console/queue", follow_redirects=False).status_code == 303
