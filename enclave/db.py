"""The metadata database: one SQLAlchemy ``MetaData`` for every table of every package.

SQLite under ``$SHUYU_HOME`` by default, PostgreSQL by URL. Each package declares its
tables in its own ``tables.py`` on :data:`metadata`; the schema is created and changed only
by the Alembic migrations in ``enclave/migrations``, which :func:`migrate` runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from enclave.errors import EnclaveError

__all__ = ["TABLE_MODULES", "connect", "make_engine", "metadata", "migrate", "utc_now_column"]

# Naming convention so migrations name constraints the same way on SQLite and PostgreSQL.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Every module that declares tables on `metadata`, lowest layer first. Migrations and the
# schema check import these by name, so enclave does not import the layers above it.
TABLE_MODULES: tuple[str, ...] = (
    "enclave.tables",  # datasets, data keys, jobs, audit
    "enclave.authz_tables",  # users, tokens, personnel, scenarios, data requests
    "enclave.key_release",  # key-release claims (emulated attestation)
    "sandbox.tables",  # sandbox images jobs may run on
    "egress.dp_tables",  # privacy ledger, released DP answers
    "egress.gate_tables",  # egress reports, reviews, releases, product registry, cell history
    "shuyu.tables",  # service state (rate limits, sessions)
)

_MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def load_all_tables() -> sa.MetaData:
    """Import every table module that exists, so `metadata` holds the whole schema."""
    for name in TABLE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return metadata


_WRITER = "shuyu.writer"


def _mark_writers(engine: Engine) -> None:
    """Make ``engine.begin()`` flag its connection as a writer for the ``begin`` event.

    Every write in shuyu goes through ``with engine.begin()`` (committed on success);
    ``with engine.connect()`` blocks only read, and are rolled back when they close.
    """

    @contextmanager
    def begin() -> Iterator[Connection]:
        with engine.connect() as conn:
            conn.info[_WRITER] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop(_WRITER, None)

    engine.begin = begin  # type: ignore[method-assign]


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the pragmas shuyu relies on (SQLite: WAL, foreign keys, busy wait)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Autocommit at the driver level; SQLAlchemy's begin() then issues BEGIN
            # IMMEDIATE below, which takes the write lock up front and so serialises
            # writers (ledger charges, audit appends) instead of failing them late.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # Writers (`engine.begin()`) take the write lock up front; readers
            # (`engine.connect()`, which never commits) start a deferred transaction, a
            # snapshot of the WAL that neither waits for writers nor makes them wait.
            # Straight to the driver: every transaction begins here (a DP answer opens about
            # twenty), and a statement through SQLAlchemy's execution path cost 10-12 µs
            # more than the BEGIN itself.
            driver = conn.connection.driver_connection
            assert driver is not None  # a checked-out connection always has one
            driver.execute("BEGIN IMMEDIATE" if conn.info.get(_WRITER) else "BEGIN")

        _mark_writers(engine)
        return engine
    try:
        return sa.create_engine(url, pool_pre_ping=True, **kwargs)
    except (ImportError, sa.exc.ArgumentError) as exc:
        raise EnclaveError(
            f"cannot open the metadata database at {sa.engine.make_url(url)}: {exc}",
            code="enclave.database",
            kind="unavailable",
            hint="check SHUYU_DATABASE_URL; for PostgreSQL install shuyu[postgres]",
        ) from exc


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """One transaction: committed on success, rolled back on any error."""
    with engine.begin() as conn:
        yield conn


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def utc_now_column(name: str = "created_at") -> sa.Column[Any]:
    """A timezone-aware UTC timestamp column; values are written by the code, not the DB."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)
