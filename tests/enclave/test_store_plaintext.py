"""Attack test: after an import, no plaintext of the data is anywhere on disk.

Canary strings are planted in the source; then every file under $SHUYU_HOME (store,
database, WAL, keys) and the temp directory the import ran with is searched for them.
The store writes *uncompressed* pages here, so the search would find a canary if the
encryption were missing: a control shows it does find them in an unencrypted copy.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from enclave.catalog import load_meta
from enclave.store import DatasetStore
from shuyu.context import Domain
from shuyu.synthetic import write_demo_data


def _encodings(canary: str) -> list[bytes]:
    return [canary.encode("utf-8"), canary.encode("utf-16-le")]


def _files_containing(roots: Iterable[Path], needles: list[bytes]) -> list[str]:
    hits = []
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                hits += [f"{p}: {n!r}" for n in needles if n in data]
    return hits


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_no_canary_in_plaintext_anywhere_after_import(
    domain: Domain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    canaries = [f"CANARY{secrets.token_hex(6)}" for _ in range(3)]
    needles = [n for c in canaries for n in _encodings(c)]
    src = write_demo_data(tmp_path / "src", 20_000, fmt=fmt, canaries=canaries)  # type: ignore[arg-type]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    store = DatasetStore(
        domain.engine,
        domain.keys,
        domain.audit,
        domain.settings.store_dir,
        row_group_rows=5_000,
        compression="NONE",
    )
    store.import_dataset(
        src.data_path, name="residents", meta=load_meta(src.meta_path), actor="alice"
    )
    domain.close()  # flush the SQLite WAL as it would be at rest

    # the data really is in the store, with the canaries in it ...
    names = store.open_dataset_for_trusted_read("residents", columns=["name"])
    assert set(canaries) <= set(names.column("name").to_pylist())
    # ... and the search would find a canary in an unencrypted file written the same way
    control = tmp_path / "control"
    control.mkdir()
    pq.write_table(names, control / "plain.parquet", compression="NONE", row_group_size=5_000)
    assert _files_containing([control], needles)

    home = domain.settings.home
    assert any(home.rglob("*.parquet")) and (home / "shuyu.db").exists()
    assert _files_containing([home, scratch], needles) == []
