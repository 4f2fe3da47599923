"""Cell history: what the gate keeps of every output so later outputs can be differenced.

Each gated SDC output with unit sets leaves one row in ``egress_cell_history``: its cells'
sketches (sizes, fingerprints, anchors) and IBLTs (see :mod:`egress.checks.sketch`), each
sealed with the ``history.cells`` data key, plus the datasets it was computed from. A row
starts ``pending`` when the output is gated — so two outputs waiting for review at the same
time are compared with each other too — becomes ``released`` when it leaves, and is deleted
when the output is rejected or blocked (nothing left, nothing to difference against).

:meth:`CellHistory.index` loads every pending or released row over *any* of the given
datasets — whatever the scenario — into a :class:`DifferencingIndex`. Decrypted sketches are
cached in memory by row id (rows never change, so the cache cannot go stale; the database
stays the only source of truth), and IBLTs are read only for the few rows a candidate pair
points at.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from egress.checks import DifferencingIndex, EarlierOutput
from egress.checks.sketch import CellSketches, Iblt, flatten_units, iblt_of, sketch_cells
from egress.gate_tables import egress_cell_history, egress_cell_history_datasets
from egress.sealing import key_bytes, open_sealed, seal
from enclave.keys import KeyService

__all__ = ["CellHistory"]

_LIVE = ("pending", "released")


class CellHistory:
    """Records and loads the sketches of released (and pending) cells."""

    def __init__(self, engine: Engine, keys: KeyService) -> None:
        self._engine = engine
        self._keys = keys
        self._sketches: dict[str, CellSketches] = {}
        self._key: bytes | None = None
        self._index: tuple[tuple[tuple[str, ...], int], DifferencingIndex] | None = None

    def unit_salt(self, conn: Connection) -> str:
        """The salt of the keyed unit hashes, for the sandbox's trusted statistics query."""
        return key_bytes(conn, self._keys, "units")[1].hex()

    def _cells_key(self, conn: Connection) -> bytes:
        if self._key is None:
            self._key = key_bytes(conn, self._keys, "cells")[1]
        return self._key

    def record(
        self,
        conn: Connection,
        *,
        job_id: str,
        scenario_id: str,
        output_name: str,
        datasets: Sequence[str],
        units: pa.ListArray,
        status: str = "pending",
    ) -> str:
        """Keep the sketches of one output's cells; returns the history row id."""
        values, offsets = flatten_units(units)
        sk = sketch_cells(values, offsets)
        iblt = iblt_of(values, offsets)
        hid = f"H-{uuid.uuid4().hex[:16]}"
        key = self._cells_key(conn)
        conn.execute(
            egress_cell_history.insert().values(
                id=hid,
                job_id=job_id,
                scenario_id=scenario_id,
                output_name=output_name,
                datasets=sorted(set(datasets)),
                status=status,
                cells=len(sk),
                key_id="history.cells",
                sketch=seal(key, sk.to_bytes(), f"egress_cell_history|{hid}|sketch"),
                iblt=seal(key, iblt.to_bytes(), f"egress_cell_history|{hid}|iblt"),
                created_at=datetime.now(UTC),
            )
        )
        conn.execute(
            egress_cell_history_datasets.insert(),
            [{"history_id": hid, "dataset": d} for d in sorted(set(datasets))],
        )
        self._sketches[hid] = sk
        return hid

    def mark_released(self, conn: Connection, job_id: str) -> int:
        res = conn.execute(
            egress_cell_history.update()
            .where(egress_cell_history.c.job_id == job_id)
            .values(status="released")
        )
        return int(res.rowcount or 0)

    def discard(self, conn: Connection, job_id: str) -> int:
        """Forget a job's cells (rejected or blocked: they never left)."""
        ids = [
            r.id
            for r in conn.execute(
                sa.select(egress_cell_history.c.id).where(egress_cell_history.c.job_id == job_id)
            )
        ]
        if not ids:
            return 0
        conn.execute(
            egress_cell_history_datasets.delete().where(
                egress_cell_history_datasets.c.history_id.in_(ids)
            )
        )
        conn.execute(egress_cell_history.delete().where(egress_cell_history.c.id.in_(ids)))
        for i in ids:
            self._sketches.pop(i, None)
        return len(ids)

    def index(
        self,
        conn: Connection,
        datasets: Iterable[str],
        min_cell_units: int,
        *,
        exclude_job: str | None = None,
    ) -> DifferencingIndex:
        """Every live earlier output over any of ``datasets``, indexed for differencing."""
        wanted = sorted(set(datasets))
        q = (
            sa.select(
                egress_cell_history.c.id,
                egress_cell_history.c.job_id,
                egress_cell_history.c.scenario_id,
                egress_cell_history.c.output_name,
                egress_cell_history.c.status,
            )
            .where(
                egress_cell_history.c.status.in_(_LIVE),
                egress_cell_history.c.id.in_(
                    sa.select(egress_cell_history_datasets.c.history_id).where(
                        egress_cell_history_datasets.c.dataset.in_(wanted)
                    )
                ),
            )
            .order_by(egress_cell_history.c.created_at, egress_cell_history.c.id)
        )
        if exclude_job is not None:
            q = q.where(egress_cell_history.c.job_id != exclude_job)
        rows = list(conn.execute(q))
        cache_key = (tuple(r.id for r in rows), min_cell_units)
        if self._index is not None and self._index[0] == cache_key:
            return self._index[1]
        missing = [r.id for r in rows if r.id not in self._sketches]
        if missing:
            key = self._cells_key(conn)
            for r in conn.execute(
                sa.select(egress_cell_history.c.id, egress_cell_history.c.sketch).where(
                    egress_cell_history.c.id.in_(missing)
                )
            ):
                blob = open_sealed(key, bytes(r.sketch), f"egress_cell_history|{r.id}|sketch")
                self._sketches[r.id] = CellSketches.from_bytes(blob)
        earlier = [
            EarlierOutput(
                {
                    "job_id": r.job_id,
                    "scenario_id": r.scenario_id,
                    "output": r.output_name,
                    "status": r.status,
                },
                self._sketches[r.id],
                self._iblt_loader(r.id),
            )
            for r in rows
        ]
        index = DifferencingIndex(earlier, min_cell_units)
        self._index = (cache_key, index)
        return index

    def _iblt_loader(self, hid: str) -> _IbltLoader:
        return _IbltLoader(self, hid)

    def load_iblt(self, hid: str) -> Iblt:
        with self._engine.connect() as conn:
            key = self._cells_key(conn)
            blob = conn.execute(
                sa.select(egress_cell_history.c.iblt).where(egress_cell_history.c.id == hid)
            ).scalar_one()
        return Iblt.from_bytes(open_sealed(key, bytes(blob), f"egress_cell_history|{hid}|iblt"))


class _IbltLoader:
    """Reads one row's IBLT when (and only when) a candidate pair needs it."""

    def __init__(self, history: CellHistory, hid: str) -> None:
        self._history = history
        self._hid = hid

    def __call__(self) -> Iblt:
        return self._history.load_iblt(self._hid)
