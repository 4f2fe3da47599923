"""ASGI middleware: request id, request size limit, access log and request metrics.

Plain ASGI rather than ``BaseHTTPMiddleware``, so server-sent event streams pass through
untouched and a client disconnect still reaches the route.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from policies.errors import ShuyuError
from shuyu.api.errors import error_response
from shuyu.api.logging import request_id_var
from shuyu.api.metrics import ApiMetrics

__all__ = ["RequestContextMiddleware", "new_request_id"]

log = logging.getLogger("shuyu.api.access")

# An incoming X-Request-ID is kept only if it is short and plain, so it cannot forge log
# lines or carry a payload.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def new_request_id() -> str:
    return "R-" + uuid.uuid4().hex[:20]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _too_large(max_bytes: int) -> ShuyuError:
    return ShuyuError(
        f"the request body is larger than {max_bytes} bytes",
        code="api.request_too_large",
        kind="too_large",
        hint="send a smaller body; large datasets are imported on the domain host, not uploaded",
    )


class RequestContextMiddleware:
    """Names each request, enforces ``max_request_bytes``, logs it, counts it."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, max_request_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        rid = incoming if incoming and _SAFE_ID.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        ctx = request_id_var.set(rid)
        started = time.perf_counter()
        first_byte: list[float] = []
        status: list[int] = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                first_byte.append(time.perf_counter())
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            replay = await self._read_body(scope, receive)
            if replay is None:
                await error_response(_too_large(self.max_request_bytes), rid)(
                    scope, receive, send_with_id
                )
            else:
                await self.app(scope, replay, send_with_id)
        finally:
            elapsed = (first_byte[0] if first_byte else time.perf_counter()) - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status[0], elapsed)
            log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status[0],
                extra={"status": status[0], "route": route, "ms": round(elapsed * 1000, 2)},
            )
            request_id_var.reset(ctx)

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive | None:
        """Read the whole body up to the limit; None if it is larger.

        The declared Content-Length is checked first (no byte is read from a client that
        announces too much), then the bytes actually sent are counted, because a chunked
        body declares nothing.
        """
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_request_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away before sending its body; let the app see that.
                pending: list[Message] = [message]
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_request_bytes:
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
                break

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return dict(await receive())

        return replay
