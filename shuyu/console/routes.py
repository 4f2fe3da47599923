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
from enclave.audit import AuditLog
from policies.errors import ShuyuError
from shuyu.api.deps import Caller, authenticate_token
from shuyu.api.errors import request_id_of
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
