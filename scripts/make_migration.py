"""Autogenerate an Alembic migration from the tables every package declares.

    .venv/bin/python scripts/make_migration.py "add ledger"

Runs the existing migrations on a scratch SQLite database first, so the new revision
holds only what changed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

from enclave.db import load_all_tables, make_engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "enclave" / "migrations"


def main() -> None:
    message = sys.argv[1] if len(sys.argv) > 1 else "schema change"
    load_all_tables()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/scratch.db")
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            command.revision(cfg, message=message, autogenerate=True)


if __name__ == "__main__":
    main()
