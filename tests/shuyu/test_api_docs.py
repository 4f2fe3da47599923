"""docs/api.md lists every route of the app, and only routes that exist."""

from __future__ import annotations

import re
from pathlib import Path

from shuyu.api import create_app
from shuyu.context import Domain
from shuyu.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    paths = create_app(Domain(Settings()), console=False).openapi()["paths"]
    routes = {
        f"{method.upper()} {path}"
        for path, ops in paths.items()
        if path.startswith("/v1/")
        for method in ops
    }
    documented = set(
        re.findall(r"\| `((?:GET|POST|DELETE|PUT|PATCH) /v1/[^`]*)` \|", DOC.read_text())
    )
    assert routes == documented, {
        "undocumented": sorted(routes - documented),
        "documented but absent": sorted(documented - routes),
    }


def test_the_documented_roles_are_the_enforced_roles() -> None:
    from tests.shuyu.test_api_roles import ALL, TABLE

    letters = {"A": "authority", "P": "provider", "O": "operator", "R": "reviewer", "U": "auditor"}
    rows = re.findall(r"\| `((?:GET|POST|DELETE) (/v1/[^`]*))` \| ([A-Za-z ]+) \|", DOC.read_text())
    assert rows
    for route, path, roles in rows:
        method = route.split()[0]
        want = ALL if roles.strip() == "all" else frozenset(letters[c] for c in roles.split())
        assert TABLE[(method, path)] == want, route
