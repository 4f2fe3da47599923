"""The encrypted store: import, versions, trusted read, tampering, wrong key, delete, sweep."""

from __future__ import annotations

import copy
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from enclave.audit import AuditLog
from enclave.catalog import DatasetMeta, parse_meta
from enclave.errors import CatalogError, KeyMaterialError, StoreError
from enclave.keys import create_master_key_file
from enclave.store import DatasetStore
from enclave.tables import audit_log, data_keys, datasets
from shuyu.context import Domain
from shuyu.synthetic import demo_meta, write_demo_data

ROWS = 5_000


def small_store(d: Domain) -> DatasetStore:
    """Small row groups and files, so a few thousand rows make several parts."""
    return DatasetStore(
        d.engine, d.keys, d.audit, d.settings.store_dir, row_group_rows=1_000, row_groups_per_file=2
    )


@pytest.fixture
def store(domain: Domain) -> DatasetStore:
    return small_store(domain)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    write_demo_data(out, ROWS, seed=7)
    write_demo_data(out, ROWS, seed=7, fmt="csv")
    table = pq.read_table(out / "residents.parquet")
    with ipc.new_file(out / "residents.arrow", table.schema) as w:
        w.write_table(table, max_chunksize=700)
    with ipc.new_stream(out / "residents.arrows", table.schema) as w:
        w.write_table(table, max_chunksize=700)
    return out


@pytest.fixture(scope="module")
def meta() -> DatasetMeta:
    return parse_meta(demo_meta())


def _audit(d: Domain, action: str) -> list[dict[str, Any]]:
    with d.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log).where(audit_log.c.action == action)).all()
    return [{"result": r.result, "target": r.target, **json.loads(r.details)} for r in rows]


def _verifies(d: Domain) -> bool:
    with d.engine.connect() as conn:
        return d.audit.verify(conn).ok


def _key_rows(d: Domain) -> list[Any]:
    with d.engine.connect() as conn:
        return conn.execute(sa.select(data_keys)).all()


def _store_entries(d: Domain) -> list[str]:
    root = d.settings.store_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != ".store.lock")


def _assert_nothing_stored(d: Domain) -> None:
    with d.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(datasets)).scalar() == 0
    assert _key_rows(d) == []
    assert _store_entries(d) == []


# --- import ----------------------------------------------------------------------------------


def test_import_and_trusted_read_round_trip(
    any_domain: Domain, demo_dir: Path, meta: DatasetMeta
) -> None:
    store = small_store(any_domain)
    seen: list[int] = []
    rec = store.import_dataset(
        demo_dir / "residents.parquet",
        name="residents",
        meta=meta,
        actor="alice",
        progress=lambda p: seen.append(p.rows),
    )
    assert (rec.name, rec.version, rec.status, rec.grade) == ("residents", 1, "active", "L4")
    assert rec.num_rows == ROWS and rec.unit_bound_verified
    assert rec.owner_org == "DEMO-430100-MZJ"
    assert seen[-1] == ROWS and seen == sorted(seen)
    files = store.files(rec)
    assert len(files) == 3  # 5 row groups of 1,000, two per file
    assert all(f.read_bytes()[:4] == b"PARE" for f in files)  # encrypted footer magic
    assert rec.num_bytes == sum(f.stat().st_size for f in files)

    source = pq.read_table(demo_dir / "residents.parquet")
    back = store.open_dataset_for_trusted_read("residents")
    assert back.equals(source.cast(back.schema))
    store.verify_files("residents")

    (entry,) = _audit(any_domain, "dataset.import")
    assert entry["result"] == "ok" and entry["target"] == "residents"
    assert entry["num_rows"] == ROWS and entry["content_sha256"] == rec.content_sha256
    assert sorted(entry["key_ids"]) == sorted(
        f"{rec.id}.{g}" for g in ("L1", "L2", "L3", "L4", "footer")
    )
    assert _verifies(any_domain)


@pytest.mark.parametrize("source", ["residents.csv", "residents.arrow", "residents.arrows"])
def test_csv_and_arrow_sources_import_the_same_rows(
    store: DatasetStore, demo_dir: Path, meta: DatasetMeta, source: str
) -> None:
    store.import_dataset(demo_dir / source, name="residents", meta=meta, actor="alice")
    back = store.open_dataset_for_trusted_read("residents")
    expected = pq.read_table(demo_dir / "residents.parquet")
    assert back.equals(expected.cast(back.schema))


def test_reimport_adds_a_version_and_keeps_the_old_one(
    store: DatasetStore, demo_dir: Path, meta: DatasetMeta
) -> None:
    first = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=meta, actor="a"
    )
    second = store.import_dataset(
        demo_dir / "residents.csv", name="residents", meta=meta, actor="a"
    )
    assert (first.version, second.version) == (1, 2)
    assert first.id != second.id
    assert second.path.endswith("/v2")
    assert store.get("residents").version == 2
    assert store.get("residents", 1).id == first.id
    assert [r.version for r in store.list_datasets()] == [2, 1]
    assert store.open_dataset_for_trusted_read("residents", version=1).num_rows == ROWS


def test_a_column_subset_needs_only_its_grades_keys(
    store: DatasetStore, domain: Domain, demo_dir: Path, meta: DatasetMeta
) -> None:
    rec = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=meta, actor="a"
    )
    with domain.engine.begin() as conn:  # shred only the L4 key
        conn.execute(
            data_keys.update()
            .where(data_keys.c.key_id == f"{rec.id}.L4")
            .values(wrapped_key=None, destroyed_at=datetime.now(UTC))
        )
    t = store.open_dataset_for_trusted_read("residents", columns=["age", "district"])
    assert t.column_names == ["age", "district"] and t.num_rows == ROWS
    with pytest.raises(KeyMaterialError) as info:
        store.open_dataset_for_trusted_read("residents", columns=["name"])
    assert info.value.code == "enclave.key_destroyed"


def test_privacy_unit_bound_is_verified_against_the_data(
    store: DatasetStore, demo_dir: Path
) -> None:
    raw = demo_meta(max_rows_per_person=5)
    raw["max_rows_per_unit"] = 2  # the demo data has persons with up to 5 rows
    rec = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=parse_meta(raw), actor="a"
    )
    assert rec.unit_bound_verified is False
    raw.pop("privacy_unit")
    raw.pop("max_rows_per_unit")
    rec = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=parse_meta(raw), actor="a"
    )
    assert rec.unit_bound_verified is False  # nothing declared, nothing verified


# --- refused imports leave nothing -------------------------------------------------------------


def _csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _tiny_meta(**column_changes: Any) -> DatasetMeta:
    raw = {
        **{k: v for k, v in demo_meta().items() if k != "columns"},
        "grade": "L3",
        "privacy_unit": "pid",
        "max_rows_per_unit": 3,
        "columns": [
            {"name": "pid", "type": "int", "grade": "L3", "role": "identifier"},
            {
                "name": "age",
                "type": "int",
                "grade": "L2",
                "role": "quasi_identifier",
                "bounds": [0, 100],
                "nullable": False,
            },
            {
                "name": "sex",
                "type": "string",
                "grade": "L2",
                "role": "quasi_identifier",
                "domain": ["女", "男"],
            },
        ],
    }
    for name, change in column_changes.items():
        next(c for c in raw["columns"] if c["name"] == name).update(change)
    return parse_meta(raw)


def _refused(store: DatasetStore, source: Path, meta: DatasetMeta) -> StoreError:
    with pytest.raises(StoreError) as info:
        store.import_dataset(source, name="tiny", meta=meta, actor="bob")
    return info.value


def test_values_outside_public_ranges_are_counted_never_shown(
    any_domain: Domain, tmp_path: Path
) -> None:
    store = small_store(any_domain)
    src = _csv(tmp_path / "t.csv", "pid,age,sex", "1,130,男", "2,131,女", "3,,X9CANARY", "4,5,女")
    err = _refused(store, src, _tiny_meta())
    assert err.code == "enclave.source_mismatch" and err.kind == "invalid"
    assert err.details["errors"] == [
        "column 'age': 2 value(s) outside the public bounds [0, 100]",
        "column 'sex': 1 value(s) not in the public domain",
        "column 'age': 1 missing value(s) but META.yaml says nullable: false",
    ]
    for secret in ("130", "131", "X9CANARY"):
        assert secret not in str(err)
    _assert_nothing_stored(any_domain)
    (entry,) = _audit(any_domain, "dataset.import")
    assert entry["result"] == "failed" and entry["code"] == "enclave.source_mismatch"
    assert _verifies(any_domain)


def test_a_value_that_does_not_convert_is_located_not_quoted(
    domain: Domain, store: DatasetStore, tmp_path: Path
) -> None:
    src = _csv(tmp_path / "t.csv", "pid,age,sex", "1,7,男", "2,SECRETVALUE,女")
    err = _refused(store, src, _tiny_meta())
    assert err.code == "enclave.source_mismatch"
    assert "column 'age'" in err.message and "does not convert to int" in err.message
    assert "SECRETVALUE" not in str(err) and err.__cause__ is None
    t = pa.table({"pid": [1, 2], "age": ["7", "SECRETVALUE"], "sex": ["男", "女"]})
    pq.write_table(t, tmp_path / "t.parquet")
    err = _refused(store, tmp_path / "t.parquet", _tiny_meta())
    assert "column 'age'" in err.message and "SECRETVALUE" not in str(err)
    _assert_nothing_stored(domain)


def test_missing_and_undeclared_columns_are_named(
    domain: Domain, store: DatasetStore, tmp_path: Path
) -> None:
    src = _csv(tmp_path / "t.csv", "pid,sex,income", "1,男,5")
    err = _refused(store, src, _tiny_meta())
    assert err.details["errors"] == [
        "columns declared in META.yaml but not in the file: ['age']",
        "columns in the file but not declared in META.yaml: ['income'] (every column needs a "
        "grade; declare them or drop them from the file)",
    ]
    _assert_nothing_stored(domain)


def test_malformed_empty_missing_and_encrypted_sources(
    domain: Domain, store: DatasetStore, tmp_path: Path, demo_dir: Path, meta: DatasetMeta
) -> None:
    bad = _csv(tmp_path / "bad.csv", "pid,age,sex", "1,7,男,EXTRA_SECRET")
    err = _refused(store, bad, _tiny_meta())
    assert err.code == "enclave.source_unreadable" and "EXTRA_SECRET" not in str(err)
    empty = _csv(tmp_path / "empty.csv", "pid,age,sex")
    assert _refused(store, empty, _tiny_meta()).code == "enclave.source_empty"
    assert _refused(store, tmp_path / "nope.csv", _tiny_meta()).code == "enclave.source_missing"
    rec = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=meta, actor="a"
    )
    enc = store.files(rec)[0]
    with pytest.raises(StoreError, match="encrypted Parquet"):
        store.import_dataset(enc, name="again", meta=meta, actor="a")
    with pytest.raises(CatalogError) as info:
        store.import_dataset(demo_dir / "residents.parquet", name="Bad Name", meta=meta, actor="a")
    assert info.value.code == "enclave.dataset_name_invalid"
    assert [r.name for r in store.list_datasets()] == ["residents"]


def test_a_catalog_built_in_code_is_still_checked(
    domain: Domain, store: DatasetStore, demo_dir: Path
) -> None:
    good = parse_meta(demo_meta())
    core = good.model_copy(update={"grade": "core"})
    with pytest.raises(CatalogError) as info:
        store.import_dataset(demo_dir / "residents.parquet", name="r", meta=core, actor="a")
    assert info.value.code == "enclave.catalog_refused"
    (entry,) = _audit(domain, "dataset.import")
    assert entry["result"] == "denied" and "refused" in entry["errors"][0]


def test_an_error_at_commit_undoes_files_and_keys(
    domain: Domain,
    store: DatasetStore,
    demo_dir: Path,
    meta: DatasetMeta,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_record = AuditLog.record

    def failing_record(self: AuditLog, conn: Any, **kw: Any) -> int:
        if kw.get("action") == "dataset.import" and kw.get("result", "ok") == "ok":
            raise RuntimeError("disk full")
        return real_record(self, conn, **kw)

    monkeypatch.setattr(AuditLog, "record", failing_record)
    with pytest.raises(RuntimeError, match="disk full"):
        store.import_dataset(demo_dir / "residents.parquet", name="residents", meta=meta, actor="a")
    _assert_nothing_stored(domain)
    (entry,) = _audit(domain, "dataset.import")
    assert entry["result"] == "failed" and entry["code"] == "internal"


# --- wrong key, tampering ----------------------------------------------------------------------


def test_a_wrong_master_key_is_a_clear_error(
    domain: Domain, demo_dir: Path, meta: DatasetMeta
) -> None:
    small_store(domain).import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=meta, actor="a"
    )
    key = domain.settings.master_key_path
    key.unlink()
    create_master_key_file(key)  # another domain's key
    other = Domain(domain.settings)
    try:
        with pytest.raises(KeyMaterialError) as info:
            other.store.open_dataset_for_trusted_read("residents")
        assert info.value.code == "enclave.wrong_master_key"
    finally:
        other.close()


@pytest.fixture
def imported(store: DatasetStore, demo_dir: Path, meta: DatasetMeta) -> Iterator[list[Path]]:
    rec = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=meta, actor="a"
    )
    yield store.files(rec)


def _corrupt_error(store: DatasetStore) -> StoreError:
    with pytest.raises(StoreError) as info:
        store.open_dataset_for_trusted_read("residents")
    assert info.value.code == "enclave.store_corrupt"
    return info.value


@pytest.mark.parametrize("where", [0.01, 0.5, 0.99])
def test_a_flipped_byte_is_detected(
    store: DatasetStore, imported: list[Path], where: float
) -> None:
    part = imported[1]
    data = bytearray(part.read_bytes())
    data[int(len(data) * where)] ^= 0x40
    part.write_bytes(bytes(data))
    assert "part-00001.parquet" in _corrupt_error(store).message
    with pytest.raises(StoreError, match="damaged or was tampered"):
        store.verify_files("residents")


def test_a_truncated_file_is_detected(store: DatasetStore, imported: list[Path]) -> None:
    part = imported[0]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    _corrupt_error(store)
    # even when the manifest is made to agree, the file itself does not verify
    manifest_path = part.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["parts"][0]["bytes"] = len(data) // 2
    manifest_path.write_text(json.dumps(manifest))
    _corrupt_error(store)


def test_missing_files_are_detected(store: DatasetStore, imported: list[Path]) -> None:
    imported[2].unlink()
    _corrupt_error(store)
    (imported[0].parent / "manifest.json").unlink()
    assert "manifest.json" in _corrupt_error(store).message


# --- delete --------------------------------------------------------------------------------------


def test_delete_shreds_keys_removes_files_and_keeps_a_tombstone(
    any_domain: Domain, demo_dir: Path, meta: DatasetMeta
) -> None:
    store = small_store(any_domain)
    v1 = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=meta, actor="a"
    )
    v2 = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=meta, actor="a"
    )
    kept_copy = store.files(v1)[0].read_bytes()

    gone = store.delete_dataset("residents", actor="carol")
    assert sorted(r.version for r in gone) == [1, 2]
    assert all(r.status == "deleted" and r.deleted_at is not None for r in gone)
    assert not (any_domain.settings.store_dir / v1.id).exists()
    assert not (any_domain.settings.store_dir / v2.id).exists()
    keys = _key_rows(any_domain)
    assert len(keys) == 10 and all(k.wrapped_key is None and k.destroyed_at for k in keys)
    with pytest.raises(CatalogError) as info:
        store.open_dataset_for_trusted_read("residents")
    assert info.value.code == "enclave.dataset_deleted"
    assert [r.status for r in store.list_datasets(include_deleted=True)] == ["deleted"] * 2
    assert store.list_datasets() == []
    # a copy of a file made before the delete is useless: its keys are gone for good
    with any_domain.engine.connect() as conn, pytest.raises(KeyMaterialError) as kinfo:
        any_domain.keys.get(conn, f"{v1.id}.footer")
    assert kinfo.value.code == "enclave.key_destroyed"
    assert kept_copy[:4] == b"PARE"

    (entry,) = _audit(any_domain, "dataset.delete")
    assert entry["keys_destroyed"] == 10 and sorted(entry["versions"]) == [1, 2]
    assert entry["target"] == "residents"
    assert _verifies(any_domain)
    # the name can be used again, with the next version number
    v3 = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=meta, actor="a"
    )
    assert v3.version == 3


def test_delete_one_version_and_unknown_names(
    store: DatasetStore, demo_dir: Path, meta: DatasetMeta
) -> None:
    store.import_dataset(demo_dir / "residents.parquet", name="residents", meta=meta, actor="a")
    store.import_dataset(demo_dir / "residents.parquet", name="residents", meta=meta, actor="a")
    (gone,) = store.delete_dataset("residents", actor="a", version=1)
    assert gone.version == 1
    assert store.get("residents").version == 2
    with pytest.raises(CatalogError) as info:
        store.delete_dataset("nothing", actor="a")
    assert info.value.code == "enclave.dataset_unknown" and info.value.kind == "not_found"


# --- sweep ---------------------------------------------------------------------------------------


def test_sweep_removes_what_a_killed_import_left(
    any_domain: Domain, demo_dir: Path, meta: DatasetMeta
) -> None:
    store = small_store(any_domain)
    kept = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=meta, actor="a"
    )
    root = any_domain.settings.store_dir
    # killed after the rename, before the commit: a version folder and keys, no row
    (root / "ds_killed" / "v1").mkdir(parents=True)
    (root / "ds_killed" / "v1" / "part-00000.parquet").write_bytes(b"PARE....")
    # killed while writing: a temp folder
    (root / "ds_early" / ".tmp-123").mkdir(parents=True)
    # a stray temp folder inside a committed dataset
    (root / kept.id / ".tmp-456").mkdir()
    # an import still running elsewhere: folder locked, keys present
    (root / "ds_running").mkdir()
    with any_domain.engine.begin() as conn:
        for ds in ("ds_killed", "ds_running", "ds_nofolder"):
            any_domain.keys.create(conn, ds, "L1")
    fd = os.open(root / "ds_running" / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        report = store.sweep(actor="ops")
    finally:
        os.close(fd)
    assert sorted(report.folders_removed) == ["ds_early", "ds_killed"]
    assert report.keys_removed == 2
    assert sorted(k.dataset_id for k in _key_rows(any_domain) if k.dataset_id != kept.id) == [
        "ds_running"
    ]
    assert not (root / "ds_killed").exists() and not (root / "ds_early").exists()
    assert not (root / kept.id / ".tmp-456").exists()
    assert (root / "ds_running").exists()
    assert store.open_dataset_for_trusted_read("residents").num_rows == ROWS
    (entry,) = _audit(any_domain, "store.sweep")
    assert entry["keys_removed"] == 2
    assert store.sweep().empty is False  # ds_running is no longer locked: now it goes
    assert store.sweep().empty
    assert _verifies(any_domain)


def test_meta_copy_is_stored_with_the_dataset(store: DatasetStore, demo_dir: Path) -> None:
    raw = copy.deepcopy(demo_meta())
    raw["summary"] = "changed"
    rec = store.import_dataset(
        demo_dir / "residents.parquet", name="residents", meta=parse_meta(raw), actor="a"
    )
    assert store.get("residents").meta.summary == "changed" == rec.meta.summary


# --- the two-step write other writers use (derived tables) -------------------------------------


def test_reserve_and_write_version_for_other_writers(domain: Domain, store: DatasetStore) -> None:
    meta = _tiny_meta()
    ds_id = "ds_derivedtest"
    table = pa.table(
        {
            "sex": ["男", "女", "女"],
            "age": pa.array([30, 40, 50], pa.int32()),  # cast to the catalog's int64
            "pid": [1, 2, 3],
        }
    )
    with store.reserve(ds_id):
        with domain.engine.begin() as conn:
            ids = [domain.keys.create(conn, ds_id, g) for g in ("L2", "L3", "footer")]
        with domain.engine.connect() as conn:
            keys = domain.keys.get_many(conn, ids)
        written = store.write_version(ds_id, 1, meta, keys, table.to_batches())
        assert store.sweep().empty  # the folder is locked: nothing of it is swept
        with domain.engine.begin() as conn:
            conn.execute(
                datasets.insert().values(
                    id=ds_id,
                    name="derived_t",
                    version=1,
                    status="active",
                    kind="derived",
                    owner_org="x",
                    grade="L3",
                    meta=meta.to_json(),
                    path=written.path,
                    num_rows=written.num_rows,
                    num_bytes=written.num_bytes,
                    content_sha256=written.content_sha256,
                    created_at=datetime.now(UTC),
                )
            )
    assert written.path == f"{ds_id}/v1" and written.num_rows == 3
    back = store.open_dataset_for_trusted_read("derived_t")
    assert back.column("age").type == pa.int64() and back.column("pid").to_pylist() == [1, 2, 3]
    store.verify_files("derived_t")

    with pytest.raises(RuntimeError), store.reserve("ds_failed"):
        (domain.settings.store_dir / "ds_failed" / "junk").write_bytes(b"x")
        raise RuntimeError("job failed")
    assert not (domain.settings.store_dir / "ds_failed").exists()


def test_every_column_type_converts_from_csv(store: DatasetStore, tmp_path: Path) -> None:
    raw = {
        **{k: v for k, v in demo_meta().items() if k != "columns"},
        "grade": "L2",
        "privacy_unit": None,
        "max_rows_per_unit": None,
        "columns": [
            {"name": "n", "type": "int", "role": "attribute", "bounds": [0, 10]},
            {"name": "x", "type": "float", "role": "attribute", "bounds": [-1, 1]},
            {"name": "s", "type": "string", "role": "attribute"},
            {"name": "d", "type": "date", "role": "attribute"},
            {"name": "t", "type": "timestamp", "role": "attribute"},
            {"name": "b", "type": "bool", "role": "attribute", "domain": [True, False]},
        ],
    }
    src = _csv(
        tmp_path / "types.csv",
        "n,x,s,d,t,b",
        "1,0.5,a,2025-01-02,2025-01-02T03:04:05,true",
        "2,-0.25,,2025-12-31,2025-12-31 23:59:59,false",
    )
    store.import_dataset(src, name="types", meta=parse_meta(raw), actor="a")
    t = store.open_dataset_for_trusted_read("types")
    assert [str(f.type) for f in t.schema] == [
        "int64",
        "double",
        "string",
        "date32[day]",
        "timestamp[us, tz=UTC]",
        "bool",
    ]
    assert t.column("b").to_pylist() == [True, False] and t.column("s").to_pylist() == ["a", ""]
