"""The Alembic migrations create exactly the tables the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from enclave.db import load_all_tables
from shuyu.context import Domain


def test_migrations_match_the_declared_tables(any_domain: Domain) -> None:
    metadata = load_all_tables()
    with any_domain.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == [], (
        "the tables in code differ from the migrations; run "
        "`.venv/bin/python scripts/make_migration.py`: " + repr(diff)[:2000]
    )
