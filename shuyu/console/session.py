"""The console's session: the token in a cookie, CSRF tokens, the language.

The reviewer's API token is kept in one cookie, ``shuyu_session``: HttpOnly (page scripts
cannot read it), SameSite=Strict (no other site's page can make the browser send it),
Secure when served over HTTPS, and scoped to ``/console``. Every form carries a CSRF token
derived from the session token with HMAC, so it needs no server-side state and cannot be
computed by anyone who does not already hold the token. The login form, before there is a
session, uses a random double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

from fastapi import Request
from fastapi.responses import Response

from shuyu.console.i18n import LANGS, Lang

__all__ = [
    "LANG_COOKIE",
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "check_csrf",
    "clear_session",
    "csrf_for",
    "language_of",
    "new_login_csrf",
    "session_token",
    "set_cookie",
]

SESSION_COOKIE = "shuyu_session"
LOGIN_CSRF_COOKIE = "shuyu_login_csrf"
LANG_COOKIE = "shuyu_lang"
COOKIE_PATH = "/console"
SESSION_MAX_AGE_S = 8 * 3600  # one working day; log in again after


def csrf_for(token: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 keyed by the session's API token."""
    return hmac.new(token.encode(), b"shuyu-console-csrf-v1", hashlib.sha256).hexdigest()


def check_csrf(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given or "")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def session_token(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


def set_cookie(
    request: Request,
    response: Response,
    name: str,
    value: str,
    *,
    max_age_s: int = SESSION_MAX_AGE_S,
    http_only: bool = True,
) -> None:
    samesite: Literal["strict"] = "strict"
    response.set_cookie(
        name,
        value,
        max_age=max_age_s,
        path=COOKIE_PATH,
        httponly=http_only,
        samesite=samesite,
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


def language_of(request: Request) -> Lang:
    """``?lang=`` first, then the language cookie, then the browser's preference; else zh."""
    for candidate in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LANGS:
            return candidate
    accept = request.headers.get("accept-language", "").lower()
    if accept.startswith("en"):
        return "en"
    return "zh"
