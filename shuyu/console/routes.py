"""The reviewer web console at ``/console``: server-rendered pages with a little HTMX.

Pages call the same domain functions as the JSON API, as the logged-in user, so the
console can do nothing the API would not let that user do. Reviewers, auditors and the
authority may log in; only reviewers see the approve and reject forms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

import shuyu
from egress import review
from enclave.audit import AuditLog
from policies.errors import ShuyuError
from shuyu.api.deps import Caller, authenticate_token
from shuyu.api.errors import request_id_of
from shuyu.api.routers.budgets import budget_of
from shuyu.api.routers.releases import list_releases
from shuyu.api.routers.reviews import table_preview
from shuyu.console.i18n import Lang, translate
from shuyu.console.session import (
    LANG_COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    check_csrf,
    clear_session,
    csrf_for,
    language_of,
    new_login_csrf,
    session_token,
    set_cookie,
)
from shuyu.context import Domain
from shuyu.errors import http_status_of

__all__ = ["CONSOLE_ROLES", "mount_console", "router"]

HERE = Path(__file__).parent
CONSOLE_ROLES = ("reviewer", "auditor", "authority")
AUDIT_PAGE_ROWS = 50
CONSOLE_ROWS = 200  # rows of an output shown on the page
CHART_BARS = 30  # bars in the chart of an output
# The four questions of R1.3, in the order the form asks them (keys of egress.review).
QUESTION_KEYS: tuple[str, ...] = tuple(review.QUESTIONS)

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)

# Sent with every console page: no framing, no third-party anything, no caching of pages
# that show outputs under review.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    """No valid session: the page redirects to the login form."""


def _domain(request: Request) -> Domain:
    domain: Domain = request.app.state.domain
    return domain


def _caller(request: Request) -> Caller:
    token = session_token(request)
    if token is None:
        raise LoginRequired
    try:
        caller = authenticate_token(_domain(request), token)
    except ShuyuError as exc:
        if exc.kind == "unauthenticated":
            raise LoginRequired from exc
        raise
    if not any(r in CONSOLE_ROLES for r in caller.roles):
        raise LoginRequired
    return caller


def _require_csrf(request: Request, given: str | None) -> None:
    token = session_token(request) or ""
    header = request.headers.get("x-csrf-token")
    if not (check_csrf(csrf_for(token), given) or check_csrf(csrf_for(token), header)):
        raise ShuyuError(
            "the form's CSRF token is missing or wrong",
            code="console.csrf",
            kind="forbidden",
            hint="reload the page and submit the form again",
        )


def render(
    request: Request,
    name: str,
    *,
    page: str = "",
    caller: Caller | None = None,
    status_code: int = 200,
    flashes: list[tuple[str, str]] | None = None,
    **context: Any,
) -> HTMLResponse:
    lang: Lang = language_of(request)

    def t(key: str, **values: object) -> str:
        return translate(lang, key, **values)

    def url(name: str, **params: Any) -> str:
        return str(request.url_for(f"console_{name}", **params).path)

    def static(path: str) -> str:
        return str(request.url_for("console_static", path=path).path)

    token = session_token(request)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "t": t,
            "url": url,
            "static": static,
            "lang": lang,
            "page": page,
            "me": caller,
            "csrf": csrf_for(token) if (caller and token) else "",
            "flashes": flashes or [],
            "version": shuyu.__version__,
            **context,
        },
        status_code=status_code,
        headers=SECURITY_HEADERS,
    )
    if request.query_params.get("lang") == lang:
        set_cookie(request, response, LANG_COOKIE, lang, max_age_s=365 * 86400, http_only=False)
    return response


def _flash_of(request: Request) -> list[tuple[str, str]]:
    lang = language_of(request)
    key = request.query_params.get("flash", "")
    return [("ok", translate(lang, key))] if key in {"review.decided"} else []


# --- login -------------------------------------------------------------------------------
@router.get("", name="console_home")
def home() -> RedirectResponse:
    return RedirectResponse("/console/queue", status_code=303)


@router.get("/login", name="console_login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    csrf = new_login_csrf()
    response = render(request, "login.html", login_csrf=csrf)
    set_cookie(request, response, LOGIN_CSRF_COOKIE, csrf, max_age_s=3600)
    return response


@router.post("/login", name="console_login_post", response_class=HTMLResponse)
def login(request: Request, token: str = Form(""), csrf: str = Form("")) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    failure: str | None = None
    caller: Caller | None = None
    if not expected or not check_csrf(expected, csrf):
        failure = translate(language_of(request), "login.failed") + ": CSRF"
    else:
        try:
            caller = authenticate_token(_domain(request), token.strip())
        except ShuyuError as exc:
            if exc.kind not in {"unauthenticated", "exhausted"}:
                raise
            failure = f"{translate(language_of(request), 'login.failed')}: {exc.message}"
        if caller is not None and not any(r in CONSOLE_ROLES for r in caller.roles):
            failure = translate(language_of(request), "login.role")
    if failure is not None:
        fresh = new_login_csrf()
        response = render(
            request, "login.html", login_csrf=fresh, flashes=[("error", failure)], status_code=401
        )
        set_cookie(request, response, LOGIN_CSRF_COOKIE, fresh, max_age_s=3600)
        return response
    redirect = RedirectResponse("/console/queue", status_code=303)
    set_cookie(request, redirect, SESSION_COOKIE, token.strip())
    redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return redirect


@router.post("/logout", name="console_logout")
def logout(request: Request, csrf: str = Form("")) -> RedirectResponse:
    _require_csrf(request, csrf)
    response = RedirectResponse("/console/login", status_code=303)
    clear_session(response)
    return response


# --- pages -------------------------------------------------------------------------------
@router.get("/audit", name="console_audit", response_class=HTMLResponse)
def audit_page(request: Request) -> HTMLResponse:
    caller = _caller(request)
    domain = _domain(request)
    with domain.engine.connect() as conn:
        verification = domain.audit.verify(conn)
        first = max(0, verification.entries - AUDIT_PAGE_ROWS)
        entries = list(AuditLog.entries(conn, after_seq=first))
    entries.reverse()
    return render(
        request,
        "audit.html",
        page="audit",
        caller=caller,
        verification=verification,
        entries=entries,
        shown=len(entries),
    )


@router.post("/audit/verify", name="console_audit_verify", response_class=HTMLResponse)
def audit_verify(request: Request, csrf: str = Form("")) -> HTMLResponse:
    """HTMX: re-run the verification and swap the status panel."""
    caller = _caller(request)
    _require_csrf(request, csrf)
    domain = _domain(request)
    with domain.engine.connect() as conn:
        verification = domain.audit.verify(conn)
    return render(request, "_audit_status.html", caller=caller, verification=verification)


@router.get("/queue", name="console_queue", response_class=HTMLResponse)
def queue_page(request: Request) -> HTMLResponse:
    caller = _caller(request)
    domain = _domain(request)
    items = review.review_queue(domain.gate, caller.user_id)
    return render(
        request, "queue.html", page="queue", caller=caller, items=items, flashes=_flash_of(request)
    )


def _chart(preview: dict[str, Any], measures: dict[str, str]) -> dict[str, Any] | None:
    """Bars of the first measure by the first other column, when the output has both."""
    columns: list[str] = preview["columns"]
    measure = next((c for c in columns if c in measures), None)
    label = next((c for c in columns if c not in measures), None)
    if measure is None or label is None or not preview["rows"]:
        return None
    mi, li = columns.index(measure), columns.index(label)
    rows = preview["rows"][:CHART_BARS]
    values = [float(r[mi]) if isinstance(r[mi], int | float) else 0.0 for r in rows]
    return {
        "shown": [f"{r[mi]:,.2f}" if isinstance(r[mi], float) else str(r[mi]) for r in rows],
        "labels": [str(r[li]) for r in rows],
        "amounts": values,
        "top": max([*values, 0.0]),
        "label_col": label,
        "value_col": measure,
    }


@router.get("/review/{job_id}", name="console_review", response_class=HTMLResponse)
def review_page(request: Request, job_id: str) -> HTMLResponse:
    caller = _caller(request)
    domain = _domain(request)
    shown = review.show(domain.gate, job_id, caller.user_id)
    job = shown["job"]
    scenario = shown["scenario"] or {}
    scenario_view = {
        **scenario,
        "datasets": [{"name": n, "columns": c} for n, c in scenario.get("datasets", {}).items()],
    }
    record = domain.scenarios.find(job["scenario_id"])
    scenario_view["use_class"] = record.scenario.use_class if record else ""
    report = shown["report"]
    findings = []
    for output in (report or {}).get("outputs", []):
        for f in output.get("findings", []):
            findings.append({**f, "output": output.get("name")})
    if report is not None:
        report = {**report, "findings": findings}
    tables = []
    for o in shown["outputs"]:
        preview = table_preview(o["table"], CONSOLE_ROWS)
        tables.append({"name": o["name"], **preview, "chart": _chart(preview, o["measures"])})
    reviews = [{**r, "created_at": r["at"]} for r in shown["reviews"]]
    cannot = ""
    if "reviewer" not in caller.roles:
        cannot = "review.readonly"
    elif job["submitter"] == caller.user_id:
        cannot = "review.self"
    elif caller.user_id in shown["approvals"] or job["state"] != "pending_review":
        cannot = "review.decided"
    return render(
        request,
        "review.html",
        page="queue",
        caller=caller,
        job=job,
        scenario=scenario_view,
        report=report,
        tables=tables,
        reviews=reviews,
        required=shown["required_reviewers"],
        approvals=len(shown["approvals"]),
        questions=QUESTION_KEYS,
        can_review=not cannot,
        cannot_review=cannot or "review.readonly",
    )


@router.post("/review/{job_id}", name="console_decide")
def decide(
    request: Request,
    job_id: str,
    csrf: str = Form(""),
    decision: str = Form(""),
    reason: str = Form(""),
    q_beyond_scope: str = Form(""),
    q_direct_exposure: str = Form(""),
    q_model_attack: str = Form(""),
    q_other_risk: str = Form(""),
    n_beyond_scope: str = Form(""),
    n_direct_exposure: str = Form(""),
    n_model_attack: str = Form(""),
    n_other_risk: str = Form(""),
) -> Response:
    """Approve or reject from the form; the answers and comment go to egress.review."""
    caller = _caller(request)
    _require_csrf(request, csrf)
    domain = _domain(request)
    answers = review.ReviewAnswers(
        beyond_scope=q_beyond_scope == "yes",
        direct_exposure=q_direct_exposure == "yes",
        model_attack=q_model_attack == "yes",
        other_risk=q_other_risk == "yes",
    )
    # The per-question notes travel in the decision's reason, each under its question.
    notes = {
        "beyond_scope": n_beyond_scope,
        "direct_exposure": n_direct_exposure,
        "model_attack": n_model_attack,
        "other_risk": n_other_risk,
    }
    reason = "\n".join(
        [reason.strip(), *(f"[{k}] {v.strip()}" for k, v in notes.items() if v.strip())]
    ).strip()
    if decision == "approve":
        review.approve(domain.gate, job_id, caller.user_id, answers, reason)
    elif decision == "reject":
        review.reject(domain.gate, job_id, caller.user_id, answers, reason)
    else:
        raise ShuyuError(
            f"unknown decision {decision!r}",
            code="console.decision",
            kind="invalid",
            hint="use the Approve or Reject button",
        )
    return RedirectResponse(
        str(request.url_for("console_queue").path) + "?flash=review.decided", status_code=303
    )


@router.get("/releases", name="console_releases", response_class=HTMLResponse)
def releases_page(request: Request) -> HTMLResponse:
    caller = _caller(request)
    domain = _domain(request)
    releases = list_releases(domain, caller, None)
    return render(request, "releases.html", page="releases", caller=caller, releases=releases)


@router.get("/budgets", name="console_budgets", response_class=HTMLResponse)
def budgets_page(request: Request) -> HTMLResponse:
    caller = _caller(request)
    domain = _domain(request)
    budgets = [budget_of(domain, r) for r in domain.scenarios.list_scenarios()]
    return render(request, "budgets.html", page="budgets", caller=caller, budgets=budgets)


def mount_console(app: FastAPI) -> None:
    """Serve the console pages, their static files, and HTML error pages under /console."""
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console_static")
    app.include_router(router)
    app.add_exception_handler(LoginRequired, _to_login)
    app.state.html_errors = _html_error


async def _to_login(request: Request, exc: Exception) -> Response:
    if request.headers.get("hx-request"):
        # An HTMX fragment request: make the browser load the login page itself.
        return Response(status_code=401, headers={"HX-Redirect": "/console/login"})
    response = RedirectResponse("/console/login", status_code=303)
    clear_session(response)
    return response


def _html_error(request: Request, exc: ShuyuError) -> Response:
    return render(
        request,
        "error.html",
        error=exc,
        request_id=request_id_of(request),
        status_code=http_status_of(exc),
    )
