"""Alembic environment: runs on the connection `enclave.db.migrate` hands it."""

from __future__ import annotations

from alembic import context

from enclave.db import load_all_tables

target_metadata = load_all_tables()
connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` command line: use the URL from the config
    from enclave.db import make_engine

    url = context.config.get_main_option("sqlalchemy.url") or "sqlite:///shuyu.db"
    with make_engine(url).begin() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    context.run_migrations()
