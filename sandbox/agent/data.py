"""Open the job's encrypted Parquet datasets and decrypt only the columns it may read.

A dataset version is a folder under the data root (``/data`` in the container, the store
mounted read-only) holding ``part-NNNNN.parquet`` files. The agent reads exactly the
columns named in the job line; a column whose data key was not released fails to decrypt
(``data.key_missing``), so scope is enforced by cryptography as well as by policy.

In a warm session decrypted tables are kept between jobs (see :class:`TableCache`); a
cached table serves a later job only for columns that job was granted again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from .crypto import KeyRing
from .errors import AgentError

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


class TableCache:
    """Decrypted tables of one warm session, keyed by dataset path, one column at a time.

    With each cached column it keeps a *proof*: the ids and SHA-256 digests of the data
    keys that decrypted it. A later job may use the column only when it holds those same
    keys; otherwise the agent checks by decrypting the column's first page with the
    job's keys (which fails without them).
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._columns: dict[str, dict[str, pa.ChunkedArray]] = {}
        self._proofs: dict[str, dict[str, dict[str, bytes]]] = {}

    def load(self, specs: Mapping[str, TableSpec], ring: KeyRing) -> dict[str, pa.Table]:
        """The job's tables, decrypting only columns not already held for this session."""
        tables: dict[str, pa.Table] = {}
        for name, spec in specs.items():
            held = self._columns.setdefault(spec.path, {})
            proofs = self._proofs.setdefault(spec.path, {})
            cached = [c for c in spec.columns if c in held]
            need = [c for c in spec.columns if c not in held]
            if cached and not all(ring.holds(proofs.get(c, {})) for c in cached):
                self._check_keys(TableSpec(name, spec.path, tuple(cached)), ring)
            if need:
                ring.used.clear()
                fresh = _read(self._root, TableSpec(name, spec.path, tuple(need)), ring)
                for col in need:
                    held[col] = fresh.column(col)
                    proofs[col] = dict(ring.used)
            tables[name] = pa.table({c: held[c] for c in spec.columns})
        return tables

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
        self._columns.clear()
        self._proofs.clear()
