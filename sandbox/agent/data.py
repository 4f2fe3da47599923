"""Open the job's encrypted Parquet datasets and decrypt only the columns it may read.

A dataset version is a folder under the data root (``/data`` in the container, the store
mounted read-only) holding ``part-NNNNN.parquet`` files. The agent reads exactly the
columns named in the job line; a column whose data key was not released fails to decrypt
(``data.key_missing``), so scope is enforced by cryptography as well as by policy.

In a warm session decrypted columns are kept between jobs (see :class:`TableCache`), as
native DuckDB tables; a kept column serves a later job only when that job was granted it
again and holds its keys.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from .crypto import KeyRing
from .errors import AgentError
from .sql import HELD, quote

__all__ = ["TableCache", "TableSpec", "parse_datasets"]


@dataclass(frozen=True)
class TableSpec:
    name: str
    path: str  # relative to the data root
    columns: tuple[str, ...]


def parse_datasets(raw: object) -> dict[str, TableSpec]:
    if not isinstance(raw, dict):
        raise AgentError("job.invalid")
    out: dict[str, TableSpec] = {}
    for name, spec in raw.items():
        if not (isinstance(name, str) and isinstance(spec, dict)):
            raise AgentError("job.invalid")
        path, columns = spec.get("path"), spec.get("columns")
        if not isinstance(path, str) or not isinstance(columns, list) or not columns:
            raise AgentError("job.invalid")
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise AgentError("job.invalid")
        if not all(isinstance(c, str) for c in columns):
            raise AgentError("job.invalid")
        out[name] = TableSpec(name, path, tuple(columns))
    return out


def _read(root: Path, spec: TableSpec, ring: KeyRing) -> pa.Table:
    folder = root / spec.path
    try:
        files = sorted(folder.glob("*.parquet"))
    except OSError:
        raise AgentError("data.unavailable") from None
    if not files:
        raise AgentError("data.unavailable")
    props = ring.decryption_properties()
    parts: list[pa.Table] = []
    for f in files:
        try:
            parts.append(pq.read_table(f, columns=list(spec.columns), decryption_properties=props))
        except MemoryError:
            raise
        except Exception:
            if ring.missing:
                raise AgentError("data.key_missing") from None
            raise AgentError("data.unavailable") from None
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class _Held:
    table: str  # its native table in the HELD catalog
    proof: dict[str, bytes] = field(repr=False)  # key id -> sha256 of the key


class TableCache:
    """The job's decrypted columns; in a warm session, kept between jobs as DuckDB tables.

    Without ``con`` (a cold sandbox, one job) the columns are decrypted into Arrow tables
    for that job and nothing is kept.

    With ``con`` (a warm session's DuckDB, made by ``connect(held=True)``) each decrypted
    column becomes a native, compressed table ``__held.main.c<n>`` with one column ``v``:
    DuckDB scans its own compressed storage much faster than Arrow (dictionary-compressed
    strings, statistics), and the neutral names say nothing about what a table holds.
    A job never reads these tables directly: :meth:`views` gives, per job table, the
    ``SELECT`` of a view over exactly the columns granted to it in this job, which the SQL
    runner creates for that job only (``sql.run_sql`` refuses any other table).

    With each kept column goes a *proof*: the ids and SHA-256 digests of the data keys that
    decrypted it. A later job may use the column only when it holds those same keys;
    otherwise the agent checks by decrypting the column's first page with the job's keys
    (which fails without them).
    """

    def __init__(self, root: Path, con: Any = None) -> None:
        self._root = root
        self._con = con
        self._held: dict[tuple[str, str], _Held] = {}  # (dataset path, column) -> table
        self._names = itertools.count()
        self._uncompressed = False

    @property
    def keeps(self) -> bool:
        return self._con is not None

    def load(self, specs: Mapping[str, TableSpec], ring: KeyRing) -> dict[str, pa.Table]:
        """The job's tables as Arrow (Python jobs; every job of a cold sandbox)."""
        if self._con is None:
            return {name: _read(self._root, spec, ring) for name, spec in specs.items()}
        views = self.views(specs, ring)
        cur = self._con.cursor()
        try:
            return {name: cur.sql(sql).to_arrow_table() for name, sql in views.items()}
        except (duckdb.OutOfMemoryException, MemoryError):
            raise AgentError("limit.memory") from None
        finally:
            cur.close()

    def views(self, specs: Mapping[str, TableSpec], ring: KeyRing) -> dict[str, str]:
        """Per job table, the SELECT of a view over its granted columns (warm sessions).

        Proves the job's keys for every column already held, decrypts and keeps the rest.
        """
        if self._con is None:
            raise AgentError("agent.internal")
        for name, spec in specs.items():
            cached = [c for c in spec.columns if (spec.path, c) in self._held]
            need = [c for c in dict.fromkeys(spec.columns) if (spec.path, c) not in self._held]
            proofs = [self._held[spec.path, c].proof for c in cached]
            if cached and not all(ring.holds(p) for p in proofs):
                self._check_keys(TableSpec(name, spec.path, tuple(cached)), ring)
            for col in need:  # one column at a time: a column's worth of Arrow in memory
                ring.used.clear()
                fresh = _read(self._root, TableSpec(name, spec.path, (col,)), ring)
                self._keep(spec.path, col, fresh.column(col), dict(ring.used))
                del fresh
        return {name: self._view(spec) for name, spec in specs.items()}

    def _keep(self, path: str, col: str, values: pa.ChunkedArray, proof: dict[str, bytes]) -> None:
        table = f"c{next(self._names)}"
        cur = self._con.cursor()
        try:
            cur.register("__load", pa.table({"v": values}))
            cur.execute(f"CREATE TABLE {HELD}.main.{table} AS SELECT v FROM __load")  # noqa: S608
        except (duckdb.OutOfMemoryException, MemoryError):
            raise AgentError("limit.memory") from None
        except duckdb.Error:
            raise AgentError("agent.internal") from None
        finally:
            cur.close()
        self._held[path, col] = _Held(table, proof)
        self._uncompressed = True

    def compress(self) -> None:
        """Compress newly held columns (dictionary/FSST strings, bit-packed integers).

        The agent calls this after it has sent a job's answer, so the job that decrypted
        the columns does not wait for it; later jobs scan the compressed tables, which is
        several times cheaper. A failure (memory) leaves the columns uncompressed.
        """
        if self._con is None or not self._uncompressed:
            return
        self._uncompressed = False
        with contextlib.suppress(duckdb.Error, MemoryError):
            self._con.execute(f"CHECKPOINT {HELD}")

    def _view(self, spec: TableSpec) -> str:
        cols = list(dict.fromkeys(spec.columns))
        tables = [self._held[spec.path, c].table for c in cols]
        select = ", ".join(f"t{i}.v AS {quote(c)}" for i, c in enumerate(cols))
        source = " POSITIONAL JOIN ".join(f"{HELD}.main.{t} AS t{i}" for i, t in enumerate(tables))
        return f"SELECT {select} FROM {source}"  # noqa: S608 - names are ours, quoted

    def _check_keys(self, spec: TableSpec, ring: KeyRing) -> None:
        folder = self._root / spec.path
        files = sorted(folder.glob("*.parquet"))
        if not files:
            raise AgentError("data.unavailable")
        try:
            pf = pq.ParquetFile(files[0], decryption_properties=ring.decryption_properties())
            # One row decrypts each column's first page: cheap, and impossible without keys.
            next(pf.iter_batches(batch_size=1, columns=list(spec.columns)), None)
        except Exception:
            if ring.missing:
                raise AgentError("data.key_missing") from None
            raise AgentError("data.unavailable") from None

    def clear(self) -> None:
        """Forget every kept column (their tables are dropped)."""
        if self._con is not None:
            for held in self._held.values():
                self._con.execute(f"DROP TABLE IF EXISTS {HELD}.main.{held.table}")
        self._held.clear()
