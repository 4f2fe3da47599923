"""The encrypted dataset store: import, trusted read, crypto-shredding delete, sweep.

Layout: ``<store_dir>/<dataset_id>/v<version>/part-NNNNN.parquet`` plus a
``manifest.json`` (part names, sizes, sha256; no data). Every file is Parquet with modular
encryption (:mod:`enclave.parquet_crypto`): each grade's columns under that grade's data
key, the footer under the dataset's footer key. Plaintext never touches disk: the source
is read in record batches, checked, and written encrypted by the same process; nothing
spills.

An import is atomic. It takes a per-dataset lock, creates the data keys (committed on
their own, so no long transaction holds the database), writes into
``<dataset_id>/.tmp-<uuid>/``, renames that to ``v<version>/``, and only then commits the
``datasets`` row and its audit entry in one transaction. An error undoes everything at
once; a kill leaves a folder and key rows without a ``datasets`` row, which
:meth:`DatasetStore.sweep` (run before every import and delete) removes. So after any
failure there is no dataset, no catalog entry, and the store holds what it held before.

Delete crypto-shreds: the data keys are destroyed and the row becomes a tombstone in one
transaction (so deletion is irreversible even if removing the files then fails, R6.3),
then the files go.

:meth:`DatasetStore.open_dataset_for_trusted_read` decrypts in this process. It is for
trusted code (checks, tests) only; untrusted code reaches data only inside a sandbox with
the keys its scenario releases.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from enclave.audit import AuditLog
from enclave.catalog import ColumnMeta, DatasetMeta, parse_meta
from enclave.errors import CatalogError, KeyMaterialError, StoreError
from enclave.keys import FOOTER, KeyService, data_key_id
from enclave.parquet_crypto import decryption_properties, encryption_properties
from enclave.tables import data_keys, datasets
from policies.errors import ShuyuError
from policies.grades import GradePolicy, load_grades

__all__ = [
    "DEFAULT_COMPRESSION",
    "DEFAULT_ROW_GROUP_ROWS",
    "DatasetRecord",
    "DatasetStore",
    "ImportProgress",
    "SourceFormat",
    "SweepReport",
    "WrittenVersion",
    "arrow_type",
    "detect_format",
]

DEFAULT_ROW_GROUP_ROWS = 1_000_000
# zstd: measured ~15 % slower to write than snappy but ~30 % smaller files (docs/datasets.md).
DEFAULT_COMPRESSION = "zstd"
DEFAULT_ROW_GROUPS_PER_FILE = 16
_READ_BATCH_ROWS = 128 * 1024
_CSV_BLOCK_BYTES = 4 * 1024 * 1024
_UNIT_COMPACT_ROWS = 2_000_000
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MANIFEST = "manifest.json"
_LOCK = ".lock"
_STORE_LOCK = ".store.lock"

SourceFormat = Literal["csv", "parquet", "arrow", "arrow_stream"]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "bool": pa.bool_(),
}


def arrow_type(column: ColumnMeta) -> pa.DataType:
    """The Arrow type a catalog column is stored as."""
    return _ARROW_TYPES[column.type]


def _schema(meta: DatasetMeta) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c), nullable=c.nullable) for c in meta.columns])


@dataclass(frozen=True)
class ImportProgress:
    """Reported after each batch; bytes are of the source file (estimated for Parquet)."""

    rows: int
    bytes_read: int
    bytes_total: int
    phase: Literal["reading", "finishing"] = "reading"


@dataclass(frozen=True)
class DatasetRecord:
    """One row of ``datasets``: a version of a dataset (or its tombstone)."""

    id: str
    name: str
    version: int
    status: str  # active | deleted
    kind: str
    owner_org: str
    grade: str
    meta: DatasetMeta
    path: str  # relative to the store folder
    num_rows: int
    num_bytes: int
    content_sha256: str
    unit_bound_verified: bool
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True)
class WrittenVersion:
    """What :meth:`DatasetStore.write_version` wrote: the ``datasets`` row's file fields."""

    path: str  # "<dataset_id>/v<version>", relative to the store folder
    num_rows: int
    num_bytes: int
    content_sha256: str


@dataclass(frozen=True)
class SweepReport:
    folders_removed: list[str] = field(default_factory=list)
    keys_removed: int = 0

    @property
    def empty(self) -> bool:
        return not self.folders_removed and not self.keys_removed


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands timestamps back without their zone; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _record(row: Any) -> DatasetRecord:
    return DatasetRecord(
        id=row.id,
        name=row.name,
        version=int(row.version),
        status=row.status,
        kind=row.kind,
        owner_org=row.owner_org,
        grade=row.grade,
        meta=DatasetMeta.model_validate(row.meta),
        path=row.path,
        num_rows=int(row.num_rows),
        num_bytes=int(row.num_bytes),
        content_sha256=row.content_sha256,
        unit_bound_verified=bool(row.unit_bound_verified),
        created_at=_utc(row.created_at) or datetime.now(UTC),
        deleted_at=_utc(row.deleted_at),
    )


# --- reading the source ----------------------------------------------------------------------


def detect_format(path: Path) -> SourceFormat:
    """Parquet and Arrow IPC by their magic bytes; anything else is read as CSV."""
    with path.open("rb") as fh:
        head = fh.read(8)
    if head[:4] == b"PARE":
        raise StoreError(
            f"{path.name} is an encrypted Parquet file",
            code="enclave.source_unreadable",
            kind="invalid",
            hint="import the provider's plaintext export; shuyu encrypts it itself",
        )
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:6] == b"ARROW1":
        return "arrow"
    if head[:4] == b"\xff\xff\xff\xff":
        return "arrow_stream"
    return "csv"


def _unreadable(path: Path, fmt: str) -> StoreError:
    # The reader's own message may quote a row, so it is never passed on.
    return StoreError(
        f"{path.name} could not be read as {fmt}",
        code="enclave.source_unreadable",
        kind="invalid",
        hint="check that the file is complete and is CSV (UTF-8, header row), Parquet or Arrow",
    )


_CSV_ERROR = re.compile(r"CSV column #(\d+)")
_CSV_ROW = re.compile(r"Row #(\d+)")


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's header row (names only, never a data row)."""
    with (
        contextlib.suppress(OSError, UnicodeDecodeError, csv.Error),
        path.open(encoding="utf-8", newline="") as fh,
    ):
        return next(csv.reader(fh), [])
    return []


class _Source:
    """Record batches of a CSV, Parquet or Arrow IPC file, never the whole file at once."""

    def __init__(self, path: Path, meta: DatasetMeta) -> None:
        self.path = path
        self.format = detect_format(path)
        self.bytes_total = path.stat().st_size
        self._meta = meta
        self._rows_total = 0
        self._rows = 0
        self._file: pa.NativeFile | None = None
        self._csv_names: list[str] = []
        try:
            self.schema = self._open()
        except pa.ArrowInvalid as exc:
            # CSV conversion starts while opening; the first block may already fail.
            self.close()
            if self.format == "csv":
                self._csv_names = _csv_header(path)
                raise self._read_error(str(exc)) from None
            raise _unreadable(path, self.format) from None
        except (pa.ArrowException, OSError):
            self.close()
            raise _unreadable(path, self.format) from None

    def _open(self) -> pa.Schema:
        # CSV timestamps without a zone are read as they are and stored as UTC.
        types = {
            c.name: pa.timestamp("us") if c.type == "timestamp" else arrow_type(c)
            for c in self._meta.columns
        }
        if self.format == "csv":
            self._file = pa.OSFile(str(self.path), "rb")
            self._csv = pacsv.open_csv(
                self._file,
                read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
                convert_options=pacsv.ConvertOptions(column_types=types),
            )
            self._csv_names = self._csv.schema.names
            return self._csv.schema
        if self.format == "parquet":
            self._pq = pq.ParquetFile(str(self.path), memory_map=False)
            self._rows_total = self._pq.metadata.num_rows
            return self._pq.schema_arrow
        if self.format == "arrow":
            self._file = pa.memory_map(str(self.path), "r")
            self._ipc_file = ipc.open_file(self._file)
            return self._ipc_file.schema
        self._file = pa.OSFile(str(self.path), "rb")
        self._ipc_stream = ipc.open_stream(self._file)
        return self._ipc_stream.schema

    def _raw_batches(self) -> Iterator[pa.RecordBatch]:
        if self.format == "csv":
            yield from self._csv
        elif self.format == "parquet":
            yield from self._pq.iter_batches(batch_size=_READ_BATCH_ROWS)
        elif self.format == "arrow":
            for i in range(self._ipc_file.num_record_batches):
                yield self._ipc_file.get_batch(i)
        else:
            yield from self._ipc_stream

    def batches(self) -> Iterator[pa.RecordBatch]:
        it = self._raw_batches()
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise self._read_error(str(exc)) from None
            except (pa.ArrowException, OSError):
                raise _unreadable(self.path, self.format) from None
            self._rows += batch.num_rows
            yield batch

    def _read_error(self, message: str) -> StoreError:
        col = _CSV_ERROR.search(message)
        row = _CSV_ROW.search(message)
        where = f" near CSV row {row.group(1)}" if row else f" after row {self._rows}"
        if self.format == "csv" and col and int(col.group(1)) < len(self._csv_names):
            name = self._csv_names[int(col.group(1))]
            kind = self._meta.column(name).type
            return StoreError(
                f"column {name!r}: a value{where} does not convert to {kind}",
                code="enclave.source_mismatch",
                kind="invalid",
                hint="fix the value in the source, or declare the right type in META.yaml",
            )
        return StoreError(
            f"{self.path.name} is malformed{where}",
            code="enclave.source_unreadable",
            kind="invalid",
            hint="check that every row has the header's number of fields and the file is complete",
        )

    @property
    def bytes_read(self) -> int:
        if self.format in ("csv", "arrow_stream") and self._file is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                return min(int(self._file.tell()), self.bytes_total)
        if self._rows_total:
            return int(self.bytes_total * self._rows / self._rows_total)
        return 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        pqf = getattr(self, "_pq", None)
        if pqf is not None:
            pqf.close()


# --- checking batches against the catalog ----------------------------------------------------


class _Checker:
    """Casts each batch to the catalog's types and counts values outside the public ranges.

    Counts only: no value is ever kept or reported, so the error says which column and how
    many, and nothing about what the values were.
    """

    def __init__(self, meta: DatasetMeta, source_schema: pa.Schema, source_name: str) -> None:
        self.meta = meta
        self.schema = _schema(meta)
        declared = [c.name for c in meta.columns]
        present = set(source_schema.names)
        missing = [n for n in declared if n not in present]
        extra = [n for n in source_schema.names if n not in set(declared)]
        problems = []
        if missing:
            problems.append(f"columns declared in META.yaml but not in the file: {missing}")
        if extra:
            problems.append(
                f"columns in the file but not declared in META.yaml: {extra} (every column "
                "needs a grade; declare them or drop them from the file)"
            )
        if len(set(source_schema.names)) != len(source_schema.names):
            problems.append("the file has repeated column names")
        if problems:
            raise _mismatch(source_name, problems)
        self.out_of_bounds: dict[str, int] = {}
        self.out_of_domain: dict[str, int] = {}
        self.nulls: dict[str, int] = {}
        self._domains = {
            c.name: pa.array(c.domain, arrow_type(c)) for c in meta.columns if c.domain is not None
        }

    def check(self, batch: pa.RecordBatch, rows_before: int) -> pa.RecordBatch:
        arrays = []
        for c, f in zip(self.meta.columns, self.schema, strict=True):
            arr = batch.column(c.name)
            if not arr.type.equals(f.type):
                try:
                    arr = pc.cast(arr, f.type, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise StoreError(
                        f"column {c.name!r}: values of type {batch.schema.field(c.name).type} "
                        f"do not convert to {c.type} (in rows after {rows_before})",
                        code="enclave.source_mismatch",
                        kind="invalid",
                        hint="fix the source, or declare the column's real type in META.yaml",
                    ) from None
            self._count(c, arr)
            arrays.append(arr)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _count(self, c: ColumnMeta, arr: pa.Array) -> None:
        if arr.null_count and not c.nullable:
            self.nulls[c.name] = self.nulls.get(c.name, 0) + arr.null_count
        if c.bounds is not None:
            lo, hi = c.bounds
            outside = pc.or_(pc.less(arr, lo), pc.greater(arr, hi))
            if pa.types.is_floating(arr.type):
                outside = pc.or_(outside, pc.is_nan(arr))
            n = pc.sum(pc.cast(outside, pa.int64())).as_py() or 0
            if n:
                self.out_of_bounds[c.name] = self.out_of_bounds.get(c.name, 0) + int(n)
        domain = self._domains.get(c.name)
        if domain is not None:
            inside = pc.is_in(arr, value_set=domain, skip_nulls=True)
            n = len(arr) - arr.null_count - (pc.sum(pc.cast(inside, pa.int64())).as_py() or 0)
            if n:
                self.out_of_domain[c.name] = self.out_of_domain.get(c.name, 0) + int(n)

    def problems(self) -> list[str]:
        out = []
        for name, n in self.out_of_bounds.items():
            lo, hi = self.meta.column(name).bounds or (0.0, 0.0)
            out.append(f"column {name!r}: {n} value(s) outside the public bounds [{lo:g}, {hi:g}]")
        for name, n in self.out_of_domain.items():
            out.append(f"column {name!r}: {n} value(s) not in the public domain")
        for name, n in self.nulls.items():
            out.append(f"column {name!r}: {n} missing value(s) but META.yaml says nullable: false")
        return out


def _mismatch(source_name: str, problems: list[str]) -> StoreError:
    listing = "\n".join(f"  - {p}" for p in problems)
    return StoreError(
        f"{source_name} does not match its META.yaml:\n{listing}",
        code="enclave.source_mismatch",
        kind="invalid",
        hint="fix the data, or correct META.yaml (bounds and domains must be public "
        "knowledge, never read off the data)",
        details={"errors": problems},
    )


class _UnitCounter:
    """Rows per privacy unit, as Arrow (value, count) tables compacted now and then.

    Memory is about (distinct units) × (key size + 8 bytes); nothing is written to disk.
    """

    def __init__(self, column: str) -> None:
        self.column = column
        self._acc: pa.Table | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        vc = pc.value_counts(batch.column(self.column))
        self._pending.append(
            pa.table({"unit": vc.field("values"), "n": pc.cast(vc.field("counts"), pa.int64())})
        )
        self._pending_rows += len(vc)
        if self._pending_rows > max(_UNIT_COMPACT_ROWS, self._acc.num_rows if self._acc else 0):
            self._compact()

    def _compact(self) -> None:
        parts = ([self._acc] if self._acc is not None else []) + self._pending
        if not parts:
            return
        merged = (
            pa.concat_tables(parts).group_by("unit", use_threads=False).aggregate([("n", "sum")])
        )
        self._acc = merged.rename_columns(["unit", "n"])
        self._pending = []
        self._pending_rows = 0

    def max_rows(self) -> int:
        self._compact()
        if self._acc is None or self._acc.num_rows == 0:
            return 0
        return int(pc.max(self._acc.column("n")).as_py())


# --- writing encrypted parts -------------------------------------------------------------------


class _EncryptedWriter:
    """Buffers checked batches into row groups and writes encrypted part files."""

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        props: Callable[[], Any],
        row_group_rows: int,
        row_groups_per_file: int,
        compression: str,
    ) -> None:
        self.folder = folder
        self.schema = schema
        self._props = props
        self._rg_rows = row_group_rows
        self._rg_per_file = row_groups_per_file
        self._compression = compression
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._groups_in_file = 0
        self.parts: list[tuple[str, int]] = []  # (file name, rows)

    def write(self, batch: pa.RecordBatch) -> None:
        self._buffer.append(batch)
        self._buffered += batch.num_rows
        while self._buffered >= self._rg_rows:
            table = pa.Table.from_batches(self._buffer, schema=self.schema)
            self._write_group(table.slice(0, self._rg_rows))
            rest = table.slice(self._rg_rows)
            self._buffer = rest.to_batches()
            self._buffered = rest.num_rows

    def _write_group(self, table: pa.Table) -> None:
        if self._writer is None:
            name = f"part-{len(self.parts):05d}.parquet"
            self._writer = pq.ParquetWriter(
                str(self.folder / name),
                self.schema,
                compression=self._compression,
                encryption_properties=self._props(),
            )
            self.parts.append((name, 0))
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        name, rows = self.parts[-1]
        self.parts[-1] = (name, rows + table.num_rows)
        self._groups_in_file += 1
        if self._groups_in_file >= self._rg_per_file:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._groups_in_file = 0

    def finish(self) -> None:
        if self._buffered or not self.parts:
            self._write_group(pa.Table.from_batches(self._buffer, schema=self.schema))
        self._buffer = []
        self._buffered = 0
        self._close_file()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._close_file()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_parts(folder: Path, parts: Sequence[tuple[str, int]]) -> tuple[list[dict[str, Any]], str]:
    """Per-part sha256 and one sha256 over all parts in order (what `content_sha256` holds)."""
    total = hashlib.sha256()
    listed = []
    for name, rows in parts:
        h = hashlib.sha256()
        size = 0
        with (folder / name).open("rb") as fh:
            while chunk := fh.read(8 * 1024 * 1024):
                h.update(chunk)
                total.update(chunk)
                size += len(chunk)
        _fsync(folder / name)
        listed.append({"file": name, "rows": rows, "bytes": size, "sha256": h.hexdigest()})
    return listed, total.hexdigest()


# --- locks -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _flock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """An exclusive advisory lock; yields False (without waiting) when busy and not blocking."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock; a killed process releases it too


# --- the store -----------------------------------------------------------------------------------


# Built once: every job reads its datasets' catalog entries by name.
_VERSIONS = (
    sa.select(datasets)
    .where(datasets.c.name == sa.bindparam("name"))
    .order_by(datasets.c.version.desc())
)
_VERSION = sa.select(datasets).where(
    datasets.c.name == sa.bindparam("name"), datasets.c.version == sa.bindparam("version")
)


class DatasetStore:
    """Imports, lists, reads (trusted) and deletes encrypted datasets of one domain."""

    def __init__(
        self,
        engine: Engine,
        keys: KeyService,
        audit: AuditLog,
        store_dir: Path,
        grades: GradePolicy | None = None,
        *,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        row_groups_per_file: int = DEFAULT_ROW_GROUPS_PER_FILE,
        compression: str = DEFAULT_COMPRESSION,
    ) -> None:
        self.engine = engine
        self.keys = keys
        self.audit = audit
        self.store_dir = store_dir
        self.grades = grades or load_grades()
        self.row_group_rows = row_group_rows
        self.row_groups_per_file = row_groups_per_file
        self.compression = compression

    # -- queries --------------------------------------------------------------------------

    def list_datasets(self, *, include_deleted: bool = False) -> list[DatasetRecord]:
        """Every dataset version, newest version of each name first within the name."""
        q = sa.select(datasets).order_by(datasets.c.name, datasets.c.version.desc())
        if not include_deleted:
            q = q.where(datasets.c.status == "active")
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(q)]

    def get(self, name: str, version: int | None = None) -> DatasetRecord:
        """The active dataset ``name`` (its newest version unless ``version`` is given)."""
        with self.engine.connect() as conn:
            if version is None:
                rows = conn.execute(_VERSIONS, {"name": name}).all()
            else:
                rows = conn.execute(_VERSION, {"name": name, "version": version}).all()
        # Newest first; only the row returned is built (its catalog entry is validated).
        active = next((r for r in rows if r.status == "active"), None)
        if active is not None:
            return _record(active)
        which = f"{name!r}" + (f" version {version}" if version is not None else "")
        if rows:
            when = _utc(rows[0].deleted_at)
            raise CatalogError(
                f"dataset {which} was deleted"
                + (f" on {when:%Y-%m-%d}" if when else "")
                + "; its keys were destroyed",
                code="enclave.dataset_deleted",
                kind="not_found",
                hint="re-import it from the provider's source if it is needed again",
            )
        raise CatalogError(
            f"no dataset {which}",
            code="enclave.dataset_unknown",
            kind="not_found",
            hint="`shuyu dataset list` shows the datasets of this domain",
        )

    def files(self, record: DatasetRecord) -> list[Path]:
        """The encrypted part files of a dataset version, in order (for the sandbox mount)."""
        return [self.store_dir / record.path / p["file"] for p in self._manifest(record)["parts"]]

    # -- import -----------------------------------------------------------------------------

    def import_dataset(
        self,
        source: Path,
        *,
        name: str,
        meta: DatasetMeta,
        actor: str,
        progress: Callable[[ImportProgress], None] | None = None,
    ) -> DatasetRecord:
        """Read ``source`` in batches, check it against ``meta``, store it encrypted.

        Atomic: on any error (or a kill, after the next sweep) nothing of it remains.
        Importing a name that exists adds a new version; older versions stay readable.
        """
        if not _NAME.match(name):
            raise CatalogError(
                f"dataset name {name!r} is not a plain name",
                code="enclave.dataset_name_invalid",
                hint="use lower-case letters, digits and _, starting with a letter, at most "
                "64 characters (it is the table name in SQL)",
            )
        # Re-validate: a model built in code skips parse_meta, and grades may have changed.
        try:
            meta = parse_meta(meta.to_json(), self.grades, source=f"catalog of {name!r}")
        except CatalogError as exc:
            self.record_refusal(name, actor, exc)
            raise
        if not source.is_file():
            raise StoreError(
                f"source file {source} not found",
                code="enclave.source_missing",
                kind="not_found",
                hint="give the path of the CSV, Parquet or Arrow file to import",
            )
        self.sweep(actor=actor)
        dataset_id = f"ds_{uuid.uuid4().hex}"
        try:
            with self.reserve(dataset_id):
                return self._import_reserved(source, name, meta, actor, dataset_id, progress)
        except BaseException as exc:
            with contextlib.suppress(Exception), self.engine.begin() as conn:
                self._delete_orphan_keys(conn, [dataset_id])
            with contextlib.suppress(Exception):
                self.audit.record_now(
                    self.engine,
                    actor=actor,
                    action="dataset.import",
                    target=name,
                    result="failed",
                    details={
                        "dataset_id": dataset_id,
                        "code": exc.code if isinstance(exc, ShuyuError) else "internal",
                    },
                )
            raise

    @contextlib.contextmanager
    def reserve(self, dataset_id: str) -> Iterator[Path]:
        """Create ``<store>/<dataset_id>/`` and hold its lock for the block.

        The sweep skips a locked folder, so files may sit there before their ``datasets``
        row commits. Commit the row *inside* the block. If the block raises, the folder is
        removed (key rows are the caller's: roll back or delete them).
        """
        ds_dir = self.store_dir / dataset_id
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _flock(self.store_dir / _STORE_LOCK):
            ds_dir.mkdir(mode=0o700)
            lock_fd = os.open(ds_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            yield ds_dir
        except BaseException:
            shutil.rmtree(ds_dir, ignore_errors=True)  # our lock fd stays valid until closed
            raise
        finally:
            with contextlib.suppress(OSError):
                (ds_dir / _LOCK).unlink()
            os.close(lock_fd)

    def write_version(
        self,
        dataset_id: str,
        version: int,
        meta: DatasetMeta,
        keys: Mapping[str, bytes],
        batches: Iterable[pa.RecordBatch],
    ) -> WrittenVersion:
        """Encrypt ``batches`` into ``<dataset_id>/v<version>/``; call inside :meth:`reserve`.

        Writes into a temp folder and renames it, so the version folder is either complete
        or absent. ``keys`` are the unwrapped data keys ``<dataset_id>.<grade>`` of every
        column grade plus ``<dataset_id>.footer``. Batches are cast to the catalog's types.
        Used by imports and by derived tables (enclave.derived).
        """
        ds_dir = self.store_dir / dataset_id
        groups = meta.columns_by_grade()
        schema = _schema(meta)
        tmp = ds_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir(mode=0o700)
        writer = _EncryptedWriter(
            tmp,
            schema,
            lambda: encryption_properties(dataset_id, keys, groups),
            self.row_group_rows,
            self.row_groups_per_file,
            self.compression,
        )
        rows = 0
        try:
            for batch in batches:
                if not batch.schema.equals(schema):
                    batch = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
                    for b in batch.to_batches():
                        writer.write(b)
                else:
                    writer.write(batch)
                rows += batch.num_rows
            writer.finish()
        except BaseException:
            writer.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        parts, content_sha256 = _hash_parts(tmp, writer.parts)
        manifest = {
            "format": "shuyu-store/1",
            "dataset_id": dataset_id,
            "version": version,
            "num_rows": rows,
            "content_sha256": content_sha256,
            "parts": parts,
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _fsync(tmp / _MANIFEST)
        os.replace(tmp, ds_dir / f"v{version}")
        _fsync(ds_dir)
        return WrittenVersion(
            path=f"{dataset_id}/v{version}",
            num_rows=rows,
            num_bytes=sum(int(p["bytes"]) for p in parts),
            content_sha256=content_sha256,
        )

    def _import_reserved(
        self,
        source_path: Path,
        name: str,
        meta: DatasetMeta,
        actor: str,
        dataset_id: str,
        progress: Callable[[ImportProgress], None] | None,
    ) -> DatasetRecord:
        groups = meta.columns_by_grade()
        # Keys commit on their own so no transaction stays open for the whole write; a
        # kill leaves them without a dataset row, and the sweep removes them.
        with self.engine.begin() as conn:
            key_ids = [self.keys.create(conn, dataset_id, g) for g in sorted(groups)]
            key_ids.append(self.keys.create(conn, dataset_id, FOOTER))
        with self.engine.connect() as conn:
            keys = self.keys.get_many(conn, key_ids)
            version = self._next_version(conn, name)

        source = _Source(source_path, meta)
        units = _UnitCounter(meta.privacy_unit) if meta.privacy_unit else None

        def checked() -> Iterator[pa.RecordBatch]:
            checker = _Checker(meta, source.schema, source_path.name)
            rows = 0
            for raw in source.batches():
                batch = checker.check(raw, rows)
                if units is not None:
                    units.add(batch)
                rows += batch.num_rows
                yield batch
                if progress is not None:
                    progress(ImportProgress(rows, source.bytes_read, source.bytes_total))
            problems = checker.problems()
            if problems:
                raise _mismatch(source_path.name, problems)
            if rows == 0:
                raise StoreError(
                    f"{source_path.name} has no rows",
                    code="enclave.source_empty",
                    kind="invalid",
                    hint="check that the export is complete",
                )
            if progress is not None:
                progress(ImportProgress(rows, source.bytes_total, source.bytes_total, "finishing"))

        try:
            written = self.write_version(dataset_id, version, meta, keys, checked())
        finally:
            source.close()
        max_unit_rows = units.max_rows() if units is not None else None
        unit_ok = (
            max_unit_rows is not None
            and meta.max_rows_per_unit is not None
            and max_unit_rows <= meta.max_rows_per_unit
        )
        values: dict[str, Any] = {
            "id": dataset_id,
            "name": name,
            "version": version,
            "status": "active",
            "kind": meta.kind,
            "owner_org": meta.provider.code,
            "grade": meta.effective_grade,
            "meta": meta.to_json(),
            "path": written.path,
            "num_rows": written.num_rows,
            "num_bytes": written.num_bytes,
            "content_sha256": written.content_sha256,
            "unit_bound_verified": unit_ok,
            "created_at": datetime.now(UTC),
        }
        ds_dir = self.store_dir / dataset_id
        with self.engine.begin() as conn:
            self._lock_name(conn, name)
            actual = self._next_version(conn, name)
            if actual != version:  # another import of this name committed meanwhile
                os.replace(ds_dir / f"v{version}", ds_dir / f"v{actual}")
                manifest_path = ds_dir / f"v{actual}" / _MANIFEST
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
                manifest["version"] = actual
                manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
                values.update(version=actual, path=f"{dataset_id}/v{actual}")
            conn.execute(datasets.insert().values(**values))
            self.audit.record(
                conn,
                actor=actor,
                action="dataset.import",
                target=name,
                details={
                    "dataset_id": dataset_id,
                    "version": values["version"],
                    "grade": meta.effective_grade,
                    "num_rows": written.num_rows,
                    "num_bytes": written.num_bytes,
                    "content_sha256": written.content_sha256,
                    "source_format": source.format,
                    "source_file": source_path.name,
                    "key_ids": key_ids,
                    "unit_bound_verified": unit_ok,
                },
            )
        return self.get(name, int(values["version"]))

    def record_refusal(self, name: str, actor: str, error: CatalogError) -> None:
        """Audit a catalog refused by policy (core grade, R2.5) as ``denied``; others pass."""
        if error.code == "enclave.catalog_refused":
            self.audit.record_now(
                self.engine,
                actor=actor,
                action="dataset.import",
                target=name,
                result="denied",
                details={"code": error.code, "errors": error.details.get("errors", [])},
            )

    @staticmethod
    def _next_version(conn: Connection, name: str) -> int:
        current = conn.execute(
            sa.select(sa.func.max(datasets.c.version)).where(datasets.c.name == name)
        ).scalar()
        return int(current or 0) + 1

    @staticmethod
    def _lock_name(conn: Connection, name: str) -> None:
        """Serialise version numbering per name (SQLite's BEGIN IMMEDIATE already does)."""
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"dataset:{name}"}
            )

    @staticmethod
    def _delete_orphan_keys(conn: Connection, dataset_ids: Sequence[str]) -> int:
        """Delete key rows of these ids that no ``datasets`` row refers to; returns how many."""
        if not dataset_ids:
            return 0
        no_row = ~sa.exists().where(datasets.c.id == data_keys.c.dataset_id)
        res = conn.execute(
            data_keys.delete().where(data_keys.c.dataset_id.in_(list(dataset_ids)), no_row)
        )
        return int(res.rowcount or 0)

    # -- sweep ------------------------------------------------------------------------------

    def sweep(self, *, actor: str = "system") -> SweepReport:
        """Remove what killed imports and deletes left behind; audited when it removes anything.

        Folders of imports still running are skipped: each holds its folder's lock.
        """
        if not self.store_dir.exists():
            return SweepReport()
        removed: list[str] = []
        busy: set[str] = set()
        with self.engine.connect() as conn:
            rows = {
                r.id: r.status for r in conn.execute(sa.select(datasets.c.id, datasets.c.status))
            }
            key_owners = {
                r.dataset_id
                for r in conn.execute(sa.select(data_keys.c.dataset_id).distinct())
                if str(r.dataset_id).startswith("ds_")
            }
        with _flock(self.store_dir / _STORE_LOCK):
            for ds_dir in sorted(self.store_dir.iterdir()):
                if not ds_dir.is_dir() or not ds_dir.name.startswith("ds_"):
                    continue
                with _flock(ds_dir / _LOCK, blocking=False) as got:
                    if not got:
                        busy.add(ds_dir.name)
                        continue
                    # Read the row again under the lock: the import may have committed
                    # between the snapshot above and taking the lock.
                    if self._sweep_folder(ds_dir, self._status(ds_dir.name)):
                        removed.append(ds_dir.name)
                with contextlib.suppress(OSError):
                    (ds_dir / _LOCK).unlink()
                if removed and removed[-1] == ds_dir.name:
                    with contextlib.suppress(OSError):
                        ds_dir.rmdir()
        orphans = sorted(key_owners - set(rows) - busy)
        keys_removed = 0
        if orphans or removed:
            with self.engine.begin() as conn:
                keys_removed = self._delete_orphan_keys(conn, orphans)
                self.audit.record(
                    conn,
                    actor=actor,
                    action="store.sweep",
                    target=str(self.store_dir.name),
                    details={
                        "folders_removed": removed,
                        "keys_removed": keys_removed,
                        "orphan_dataset_ids": orphans,
                    },
                )
        return SweepReport(removed, keys_removed)

    def _status(self, dataset_id: str) -> str | None:
        with self.engine.connect() as conn:
            status = conn.execute(
                sa.select(datasets.c.status).where(datasets.c.id == dataset_id)
            ).scalar()
        return None if status is None else str(status)

    @staticmethod
    def _sweep_folder(ds_dir: Path, status: str | None) -> bool:
        """Clean one dataset folder (its lock held); True if the whole folder went."""
        if status is None or status == "deleted":
            for child in ds_dir.iterdir():
                if child.name != _LOCK:
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            return True
        for child in ds_dir.iterdir():
            if child.name.startswith(".tmp-"):
                shutil.rmtree(child, ignore_errors=True)
        return False

    # -- delete -----------------------------------------------------------------------------

    def delete_dataset(
        self, name: str, *, actor: str, version: int | None = None
    ) -> list[DatasetRecord]:
        """Crypto-shred every active version of ``name`` (or one): keys destroyed, files gone.

        The rows stay as tombstones (status ``deleted``) so the catalog history and the
        audit trail keep pointing at something.
        """
        target = self.get(name, version)  # raises for unknown or already deleted
        self.sweep(actor=actor)
        q = sa.select(datasets).where(datasets.c.name == name, datasets.c.status == "active")
        if version is not None:
            q = q.where(datasets.c.version == target.version)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            victims = [_record(r) for r in conn.execute(q)]
            destroyed = 0
            for v in victims:
                destroyed += self.keys.destroy(conn, v.id)
                conn.execute(
                    datasets.update()
                    .where(datasets.c.id == v.id)
                    .values(status="deleted", deleted_at=now)
                )
            self.audit.record(
                conn,
                actor=actor,
                action="dataset.delete",
                target=name,
                details={
                    "dataset_ids": [v.id for v in victims],
                    "versions": [v.version for v in victims],
                    "keys_destroyed": destroyed,
                },
            )
        for v in victims:
            shutil.rmtree(self.store_dir / v.id, ignore_errors=True)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(datasets).where(datasets.c.id.in_([v.id for v in victims]))
            )
            return [_record(r) for r in rows]

    # -- trusted read -----------------------------------------------------------------------

    def _manifest(self, record: DatasetRecord) -> dict[str, Any]:
        path = self.store_dir / record.path / _MANIFEST
        try:
            manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            parts = manifest["parts"]
            if not isinstance(parts, list):
                raise TypeError("parts")
        except (OSError, ValueError, KeyError, TypeError):
            raise _corrupt(record, _MANIFEST) from None
        return manifest

    def verify_files(self, name: str, version: int | None = None) -> DatasetRecord:
        """Check every part file against the sha256 recorded at import (no keys needed)."""
        record = self.get(name, version)
        manifest = self._manifest(record)
        total = hashlib.sha256()
        for part in manifest["parts"]:
            h = hashlib.sha256()
            try:
                with (self.store_dir / record.path / part["file"]).open("rb") as fh:
                    while chunk := fh.read(8 * 1024 * 1024):
                        h.update(chunk)
                        total.update(chunk)
            except OSError:
                raise _corrupt(record, str(part["file"])) from None
            if h.hexdigest() != part["sha256"]:
                raise _corrupt(record, str(part["file"]))
        if total.hexdigest() != record.content_sha256:
            raise _corrupt(record, _MANIFEST)
        return record

    def open_dataset_for_trusted_read(
        self,
        name: str,
        *,
        version: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Decrypt a dataset into memory — TRUSTED IN-PROCESS CODE ONLY (checks, tests).

        Only the keys of the requested columns' grades (and the footer key) are unwrapped.
        A damaged or tampered file is a :class:`StoreError` ``enclave.store_corrupt``, never
        partial or garbled rows; a wrong master key is a ``KeyMaterialError``.
        """
        record = self.get(name, version)
        meta = record.meta
        wanted = list(columns) if columns is not None else [c.name for c in meta.columns]
        grades = {meta.column_grade(meta.column(c)) for c in wanted}
        key_ids = [data_key_id(record.id, g) for g in sorted(grades)]
        key_ids.append(data_key_id(record.id, FOOTER))
        with self.engine.connect() as conn:
            keys = self.keys.get_many(conn, key_ids)
        tables = []
        for part in self._manifest(record)["parts"]:
            tables.append(
                self._read_part(record, str(part["file"]), int(part["bytes"]), keys, wanted)
            )
        schema = _schema(meta)
        return (
            pa.concat_tables(tables)
            .select(wanted)
            .cast(pa.schema([schema.field(c) for c in wanted]))
        )

    def _read_part(
        self,
        record: DatasetRecord,
        file: str,
        size: int,
        keys: Mapping[str, bytes],
        columns: list[str],
    ) -> pa.Table:
        path = self.store_dir / record.path / file
        try:
            if path.stat().st_size != size:
                raise _corrupt(record, file)
            pf = pq.ParquetFile(str(path), decryption_properties=decryption_properties(keys))
            try:
                return pf.read(columns=columns)
            finally:
                pf.close()
        except StoreError:
            raise
        except KeyMaterialError:
            raise
        except (OSError, pa.ArrowException, KeyError, ValueError):
            raise _corrupt(record, file) from None


def _corrupt(record: DatasetRecord, file: str) -> StoreError:
    return StoreError(
        f"dataset {record.name!r} version {record.version}: {file} is damaged or was tampered "
        "with (it does not decrypt and verify)",
        code="enclave.store_corrupt",
        hint="treat it as a security incident; restore the store folder from backup or "
        "re-import the dataset, and check `shuyu audit verify`",
        details={"dataset_id": record.id, "file": file},
    )
