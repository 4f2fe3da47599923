"""The one exception the agent raises on purpose: it carries a code and nothing else."""

from __future__ import annotations

from .protocol import ERROR_CODES

__all__ = ["AgentError"]


class AgentError(Exception):
    """A failure reported to the host as a stable code; never a message with data in it."""

    def __init__(self, code: str) -> None:
        if code not in ERROR_CODES:
            code = "agent.internal"
        super().__init__(code)
        self.code = code
