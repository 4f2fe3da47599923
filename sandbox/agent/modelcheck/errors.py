"""Why a model could not be examined: plain exceptions, since this package runs in the
sandbox image and imports nothing of the host's.

The host (``egress.models``) turns them into ``egress.model_format`` and
``egress.model_check`` errors with the same message and hint; inside a check job they
become a blocking finding (a model the checks cannot examine does not leave).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CheckInputRefused", "FormatRefused", "ModelRefused"]


class ModelRefused(Exception):
    """A refusal with a message for people, a hint saying what to do, a kind and details."""

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        kind: str = "invalid",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.kind = kind
        self.details = dict(details or {})


class FormatRefused(ModelRefused):
    """The blob is not a skops file that loads under the allow-list (pickle, unknown types,
    too big, damaged)."""


class CheckInputRefused(ModelRefused):
    """The checks were given rows they cannot use (shapes that do not match)."""
