"""Fixtures of the service tests (API, client, console) live in api_support.py."""

from tests.shuyu.api_support import api, shared_api

__all__ = ["api", "shared_api"]
