"""The one place where errors become HTTP responses.

Every error the API returns has the same JSON body, :class:`ErrorBody`:
``{code, message, hint, kind, request_id}`` (plus ``details`` where the error has some).
A :class:`~policies.errors.ShuyuError` maps to a status by its ``kind`` through
:func:`shuyu.errors.http_status_of`; FastAPI's validation errors, Starlette's routing
errors (404, 405) and our own bugs (500, message without data) take the same shape, so a
client needs one parser. Domain code never sees HTTP.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from policies.errors import ErrorKind, ShuyuError
from shuyu.errors import RateLimited, http_status_of

__all__ = [
    "ERROR_RESPONSES",
    "ERROR_RESPONSES_FOR_FILES",
    "ErrorBody",
    "error_response",
    "install_error_handlers",
    "request_id_of",
]

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """What every failed request answers."""

    code: str = Field(description="Stable dotted code, e.g. `egress.budget_exhausted`.")
    message: str = Field(description="What was wrong, for people.")
    hint: str = Field(default="", description="What to do about it.")
    kind: str = Field(description="The error's kind; decides the HTTP status.")
    request_id: str = Field(description="Quote this when reporting a problem.")
    details: dict[str, Any] | None = Field(
        default=None, description="Structured extras (field errors, refusal reasons)."
    )


def _desc(text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


# Declared on every router so the OpenAPI document names the error shape for each status.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _desc("No, unknown, expired or revoked token."),
    403: _desc("The token's user may not do this."),
    404: _desc("No such object."),
    409: _desc("The object's state does not allow this now, or a budget is spent."),
    413: _desc("The request body is larger than the limit."),
    422: _desc("The request is invalid; `details.errors` names each field."),
    429: _desc("Too many requests or running jobs; see the Retry-After header."),
    503: _desc("A dependency (database, Docker, KMS) is unavailable."),
}

# The same, for routes whose success is not JSON (a stream, a file): FastAPI would give a
# "model" response the route's own media type, but errors are always application/json.
ERROR_RESPONSES_FOR_FILES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": r["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for code, r in ERROR_RESPONSES.items()
}

_KIND_OF_STATUS: dict[int, ErrorKind] = {
    404: "not_found",
    405: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    413: "too_large",
}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def error_response(exc: ShuyuError, request_id: str) -> JSONResponse:
    """The JSON response for one error; used by the handler and by the ASGI middleware."""
    body = ErrorBody(
        code=exc.code,
        message=exc.message,
        hint=exc.hint,
        kind=exc.kind,
        request_id=request_id,
        details=exc.details or None,
    )
    headers = {"X-Request-ID": request_id} if request_id else {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
    if exc.kind == "unauthenticated":
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=http_status_of(exc), headers=headers
    )


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


async def _on_shuyu_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ShuyuError)
    if exc.kind == "internal":
        log.error("internal error %s: %s", exc.code, exc.message)
    return _respond(request, exc)


def _respond(request: Request, exc: ShuyuError) -> Response:
    # The console shows the same error as a page; the status comes from the same map.
    html = getattr(request.app.state, "html_errors", None)
    if html is not None and request.url.path.startswith("/console"):
        response: Response = html(request, exc)
        return response
    return error_response(exc, request_id_of(request))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The offending input is left out on purpose: it might be a token or a data value.
    errors = [
        {"field": _field(e.get("loc", ())), "message": str(e.get("msg", "")), "type": e["type"]}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "request", "message": "invalid"}
    err = ShuyuError(
        f"{first['field']}: {first['message']}"
        + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
        code="api.invalid_request",
        kind="invalid",
        hint="fix the fields named in details.errors; /openapi.json describes every route",
        details={"errors": errors},
    )
    return error_response(err, request_id_of(request))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _KIND_OF_STATUS.get(exc.status_code, "invalid")
    if exc.status_code == 404:
        err = ShuyuError(
            f"no route {request.method} {request.url.path}",
            code="api.no_route",
            kind=kind,
            hint="see /openapi.json for the routes; API routes start with /v1",
        )
    elif exc.status_code == 405:
        err = ShuyuError(
            f"{request.method} is not allowed on {request.url.path}",
            code="api.method_not_allowed",
            kind=kind,
            hint="see /openapi.json for the methods of this route",
        )
    else:
        err = ShuyuError(str(exc.detail), code=f"api.http_{exc.status_code}", kind=kind)
    response = error_response(err, request_id_of(request))
    # Keep the framework's status (405 stays 405) and headers (Allow).
    response.status_code = exc.status_code
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Our bug. The message names no data; the traceback goes to the (redacted) log.
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    err = ShuyuError(
        "internal error",
        code="api.internal",
        kind="internal",
        hint="this is a bug in shuyu; report it with the request id",
    )
    return _respond(request, err)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ShuyuError, _on_shuyu_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
