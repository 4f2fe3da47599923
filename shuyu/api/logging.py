"""Structured JSON logs with the request and job in context, and secrets redacted.

Every record is one JSON object on one line: UTC time, level, logger, message, the current
``request_id`` and ``job_id`` (from contextvars, so a log line deep in the domain code still
names the request that caused it), and any ``extra`` fields. Before anything is written,
:func:`redact` removes bearer tokens, cookies and anything that looks like a key — a log is
an output of the domain too, and is read by people who may not see secrets.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "JsonFormatter",
    "bind_job",
    "configure_logging",
    "job_id_var",
    "redact",
    "request_id_var",
]

request_id_var: ContextVar[str] = ContextVar("shuyu_request_id", default="")
job_id_var: ContextVar[str] = ContextVar("shuyu_job_id", default="")

REDACTED = "[redacted]"

# Field names whose values are never logged, whatever they hold.
_SECRET_FIELDS = re.compile(
    r"(token|secret|password|passwd|authorization|cookie|api[_-]?key|private|wrapped|"
    r"master|credential|csrf)",
    re.IGNORECASE,
)
# Secrets embedded in free text: "Bearer <x>", "token=<x>", "key: <x>", JSON "token": "<x>".
_TEXT_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(
        r"(?i)((?:token|secret|password|api[_-]?key|authorization|cookie|shuyu_session)"
        r"\"?\s*[:=]\s*\"?)[^\s\",;&]+"
    ),
    # PEM blocks (private keys) anywhere in a message.
    re.compile(r"-----BEGIN [A-Z ]+-----[\s\S]*?-----END [A-Z ]+-----"),
)
# Attributes every record has, and uvicorn's terminal-colour copy of the message.
_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message",
    "asctime",
    "color_message",
}


def redact(value: Any, field: str = "") -> Any:
    """Return ``value`` with secrets replaced by ``[redacted]`` (recursing into dicts/lists)."""
    if field and _SECRET_FIELDS.search(field):
        return REDACTED
    if isinstance(value, str):
        for pattern in _TEXT_PATTERNS:
            value = pattern.sub(
                lambda m: (m.group(1) if m.groups() else "") + REDACTED,
                value,
            )
        return value
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line; context from contextvars; secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if rid := request_id_var.get():
            out["request_id"] = rid
        if jid := job_id_var.get():
            out["job_id"] = jid
        for key, val in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = val
        if record.exc_info:
            # The exception type and where it happened, never its arguments' values in
            # full: a failing query's message might quote data.
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(redact(out), default=str, ensure_ascii=False)


@contextmanager
def bind_job(job_id: str) -> Iterator[None]:
    """Name ``job_id`` on every log line written inside the block."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


def configure_logging(level: str = "info") -> None:
    """Send shuyu's and uvicorn's logs to stderr as JSON lines (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.set_name("shuyu-json")
    for name in ("", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if h.get_name() != "shuyu-json"]
        if name:
            logger.handlers.clear()
            logger.propagate = True
        else:
            logger.addHandler(handler)
    logging.getLogger().setLevel(level.upper())
    # uvicorn's access log would print query strings; the API logs each request itself.
    logging.getLogger("uvicorn.access").disabled = True
