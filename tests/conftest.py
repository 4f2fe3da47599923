"""Shared fixtures: a fresh domain per test, on SQLite and (where available) PostgreSQL.

Markers (registered in pyproject.toml): ``docker``, ``slow``, ``browser``, ``postgres``.
CI runs them all; ``SHUYU_TEST_POSTGRES_URL`` points the ``postgres`` tests at a real server
and, when ``CI`` is set, a missing server is a failure rather than a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from shuyu.context import Domain, init_domain
from shuyu.settings import Settings

PG_URL = os.environ.get("SHUYU_TEST_POSTGRES_URL", "")
IN_CI = bool(os.environ.get("CI"))


def _fresh_pg_database() -> str:
    """A new, empty PostgreSQL database on the test server; returns its URL."""
    if not PG_URL:
        if IN_CI:
            pytest.fail("CI must test PostgreSQL: SHUYU_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL server (set SHUYU_TEST_POSTGRES_URL)")
    name = f"shuyu_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a new domain under a temporary home, on SQLite."""
    return Settings(home=tmp_path / "home", audit_checkpoint_every=5)


@pytest.fixture
def domain(settings: Settings) -> Iterator[Domain]:
    """An initialised domain (keys, schema, first audit entry) on SQLite."""
    d = init_domain(settings)
    yield d
    d.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_domain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Domain]:
    """The same domain on SQLite and on a real PostgreSQL server: for database tests."""
    url = "" if request.param == "sqlite" else _fresh_pg_database()
    d = init_domain(Settings(home=tmp_path / "home", database_url=url, audit_checkpoint_every=5))
    yield d
    d.close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's real ~/.shuyu."""
    monkeypatch.setenv("SHUYU_HOME", str(tmp_path / "home"))
