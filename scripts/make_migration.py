"""Write the Alembic migration from the tables every package declares.

    .venv/bin/python scripts/make_migration.py            # rewrite 0001_initial (pre-release)
    .venv/bin/python scripts/make_migration.py "message"  # a new revision on top (post-release)

Until the first release the schema is one revision, ``0001``, regenerated from the tables
in full; rewriting it is safe because no deployed database has it yet. After the first
release, pass a message to add a revision that holds only what changed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

from enclave.db import load_all_tables, make_engine

VERSIONS = Path(__file__).resolve().parent.parent / "enclave" / "migrations" / "versions"


def main() -> None:
    load_all_tables()
    initial = len(sys.argv) < 2
    if initial:
        for old in VERSIONS.glob("0001_*.py"):
            old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/scratch.db")
        cfg = Config()
        cfg.set_main_option("script_location", str(VERSIONS.parent))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            if initial:
                command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
            else:
                command.upgrade(cfg, "head")
                command.revision(cfg, message=sys.argv[1], autogenerate=True)
    for f in VERSIONS.glob("0001_*.py"):
        f.rename(VERSIONS / "0001_initial_schema.py")


if __name__ == "__main__":
    main()
