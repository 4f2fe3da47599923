"""An import killed half-way (SIGKILL, no cleanup code runs) leaves nothing after the sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from enclave.catalog import load_meta
from enclave.tables import data_keys, datasets
from shuyu.context import Domain
from shuyu.synthetic import write_demo_data

# The child imports with small row groups (so encrypted parts are on disk early) and sleeps
# a little after each progress report, so the parent's kill lands in the middle for sure.
CHILD = """
import sys, time
from pathlib import Path
from enclave.catalog import load_meta
from enclave.store import DatasetStore
from shuyu.context import open_domain

d = open_domain()
store = DatasetStore(d.engine, d.keys, d.audit, d.settings.store_dir, row_group_rows=20_000)

def report(p):
    print(f"rows {p.rows}", flush=True)
    time.sleep(0.05)

store.import_dataset(Path(sys.argv[1]), name="big", meta=load_meta(Path(sys.argv[2])),
                     actor="child", progress=report)
print("finished", flush=True)
"""


def _snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != ".store.lock")


@pytest.mark.slow
def test_an_import_killed_half_way_leaves_no_dataset(any_domain: Domain, tmp_path: Path) -> None:
    d = any_domain
    small = write_demo_data(tmp_path / "small", 2_000, seed=1)
    d.store.import_dataset(small.data_path, name="kept", meta=load_meta(small.meta_path), actor="a")
    before = _snapshot(d.settings.store_dir)
    with d.engine.connect() as conn:
        keys_before = conn.execute(sa.select(sa.func.count()).select_from(data_keys)).scalar()

    big = write_demo_data(tmp_path / "big", 400_000, fmt="csv", seed=2)
    env = {
        **os.environ,
        "SHUYU_HOME": str(d.settings.home),
        "SHUYU_DATABASE_URL": d.settings.database_url,
    }
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(big.data_path), str(big.meta_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        for reports, line in enumerate(child.stdout, start=1):
            assert line.startswith("rows"), line
            if reports == 3:
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=60)
        assert child.returncode == -signal.SIGKILL, child.stderr.read()

    # killed mid-way: encrypted parts in a temp folder, key rows, but no dataset
    tmp_parts = list(d.settings.store_dir.glob("ds_*/.tmp-*/part-*.parquet"))
    assert tmp_parts, _snapshot(d.settings.store_dir)
    with d.engine.connect() as conn:
        names = [r.name for r in conn.execute(sa.select(datasets.c.name))]
        keys_now = conn.execute(sa.select(sa.func.count()).select_from(data_keys)).scalar()
    assert names == ["kept"]
    assert [r.name for r in d.store.list_datasets()] == ["kept"]
    assert keys_now > keys_before

    report = d.store.sweep(actor="ops")
    assert len(report.folders_removed) == 1 and report.keys_removed == keys_now - keys_before
    assert _snapshot(d.settings.store_dir) == before
    with d.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(data_keys)).scalar() == (
            keys_before
        )
        assert d.audit.verify(conn).ok
    assert d.store.open_dataset_for_trusted_read("kept").num_rows == 2_000
