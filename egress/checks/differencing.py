"""Differencing: two released cells whose unit sets differ by a few units give those away.

``count(*) WHERE district='A'`` and ``count(*) WHERE district='A' AND id_number <> 'X'``
are both large, and each passes the threshold rule; their difference is one person. The
check compares every cell of the output with every cell released before — by any job of
any scenario over any of the same datasets — and with the output's other cells, and blocks
when two unit sets differ by at least one and fewer than ``min_cell_units`` units.

It works on sketches (:mod:`egress.checks.sketch`): an inverted index over each cell's
smallest unit hashes finds every pair that *could* differ by fewer than m units (no false
negatives, by the anchor argument), keyed together with the cell size so pairs of very
different sizes never meet; equal fingerprints drop identical cells; the anchors give a
lower bound that prunes most of the rest; the survivors are settled exactly by
subtracting IBLTs. A pair the IBLTs cannot settle is reported for review, never ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from egress.checks.findings import Finding, Fix, clip
from egress.checks.inputs import OutputSpec, Thresholds
from egress.checks.sketch import (
    ANCHORS,
    CellSketches,
    Iblt,
    decode_many,
    flatten_units,
    iblt_of,
    sketch_cells,
)

__all__ = ["DifferencingIndex", "EarlierOutput", "Pair", "check_differencing", "find_pairs"]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
_SIZE_BITS = 24
_SIZE_MAX = (1 << _SIZE_BITS) - 1
_CHUNK = 20_000


@dataclass(frozen=True)
class EarlierOutput:
    """One earlier output's recorded cells."""

    ref: Mapping[str, Any]  # job_id, scenario_id, output, status: for the evidence
    sketches: CellSketches
    load_iblt: Callable[[], Iblt]


@dataclass(frozen=True)
class Pair:
    row: int  # row of the new output
    earlier: int  # index into DifferencingIndex.refs (-1: the output itself)
    earlier_row: int
    difference: int | None  # |A Δ B|; None = the sketches could not settle it


def _pack(anchors: U64, sizes: I64) -> U64:
    s = np.clip(sizes, 0, _SIZE_MAX).astype(np.uint64)
    return np.asarray(
        ((anchors >> np.uint64(_SIZE_BITS)) << np.uint64(_SIZE_BITS)) | s, dtype=np.uint64
    )


class DifferencingIndex:
    """An inverted index over the anchors of many earlier outputs' cells, for one ``m``."""

    def __init__(self, earlier: Sequence[EarlierOutput], m: int) -> None:
        self.m = min(m, ANCHORS)
        self.earlier = list(earlier)
        self.refs = [e.ref for e in earlier]
        self._loaders = [e.load_iblt for e in earlier]
        self._iblts: dict[int, Iblt] = {}
        sk = CellSketches.concat([e.sketches for e in earlier])
        counts = np.array([len(e.sketches) for e in earlier], dtype=np.int64)
        self.entry = np.repeat(np.arange(len(earlier), dtype=np.int64), counts)
        starts = (np.cumsum(counts) - counts).astype(np.int64)
        self.row = np.arange(len(sk), dtype=np.int64) - np.repeat(starts, counts)
        self.sketches = sk
        # identical cells (same size and fingerprint) are indexed once
        keep = np.ones(len(sk), dtype=bool)
        if len(sk) > 1:
            order = np.lexsort((sk.fingerprints, sk.sizes))
            same = (np.diff(sk.sizes[order]) == 0) & (np.diff(sk.fingerprints[order]) == 0)
            keep[order[1:][same]] = False
        keep &= sk.sizes > 0
        cells = np.flatnonzero(keep)
        k = self.m
        valid = np.arange(k)[None, :] < np.minimum(sk.sizes[cells], k)[:, None]
        anchors = sk.anchors[cells, :k][valid]
        owner = np.repeat(cells, valid.sum(axis=1))
        packed = _pack(anchors, sk.sizes[owner])
        order = np.argsort(packed, kind="stable")
        self._packed = packed[order]
        self._owner = owner[order]

    def __len__(self) -> int:
        return len(self.sketches)

    def for_threshold(self, m: int) -> DifferencingIndex:
        """This index, or one rebuilt over the same cells for another threshold."""
        if min(m, ANCHORS) == self.m:
            return self
        rebuilt = DifferencingIndex(self.earlier, m)
        rebuilt._iblts = self._iblts
        return rebuilt

    def iblt(self, entry: int) -> Iblt:
        if entry not in self._iblts:
            self._iblts[entry] = self._loaders[entry]()
        return self._iblts[entry]

    def candidates(self, new: CellSketches) -> tuple[I64, I64]:
        """(new row, index cell) pairs that share an anchor and are close in size."""
        k, m = self.m, self.m
        sizes = new.sizes
        valid = (np.arange(k)[None, :] < np.minimum(sizes, k)[:, None]) & (sizes > 0)[:, None]
        q_anchor = new.anchors[:, :k][valid]
        q_row = np.repeat(np.arange(len(new), dtype=np.int64), valid.sum(axis=1))
        q_size = sizes[q_row]
        lo = _pack(q_anchor, np.maximum(q_size - (m - 1), 0))
        hi = _pack(q_anchor, np.minimum(q_size + (m - 1), _SIZE_MAX))
        order = np.argsort(lo)
        left = np.empty_like(q_row)
        right = np.empty_like(q_row)
        left[order] = np.searchsorted(self._packed, lo[order], "left")
        right[order] = np.searchsorted(self._packed, hi[order], "right")
        n = right - left
        total = int(n.sum())
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        rep = np.repeat(np.arange(q_row.size, dtype=np.int64), n)
        pos = left[rep] + np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
        rows, cells = q_row[rep], self._owner[pos]
        # the same pair may meet through several shared anchors
        key = np.unique(rows * np.int64(len(self.sketches) + 1) + cells)
        return key // np.int64(len(self.sketches) + 1), key % np.int64(len(self.sketches) + 1)


def _lower_bound(a: U64, a_size: I64, b: U64, b_size: I64, k: int) -> I64:
    """A lower bound on |A Δ B| from the two cells' k smallest hashes (row-wise)."""
    ar = np.arange(k)[None, :]
    a_valid = ar < np.minimum(a_size, k)[:, None]
    b_valid = ar < np.minimum(b_size, k)[:, None]
    big = np.uint64(np.iinfo(np.uint64).max)
    a_max = np.where(a_size >= k, a[:, k - 1], big)
    b_max = np.where(b_size >= k, b[:, k - 1], big)
    t = np.minimum(a_max, b_max)[:, None]
    a_in = a_valid & (a <= t)
    b_in = b_valid & (b <= t)
    eq = (a[:, :, None] == b[:, None, :]) & a_in[:, :, None] & b_in[:, None, :]
    a_only = a_in.sum(axis=1) - eq.any(axis=2).sum(axis=1)
    b_only = b_in.sum(axis=1) - eq.any(axis=1).sum(axis=1)
    return np.asarray(a_only + b_only, dtype=np.int64)


def find_pairs(
    new: CellSketches,
    new_values: U64,
    new_offsets: I64,
    index: DifferencingIndex,
    *,
    same_output: bool = False,
) -> list[Pair]:
    """Pairs (new cell, indexed cell) whose unit sets differ by 1 … m-1 units."""
    m = index.m
    rows, cells = index.candidates(new)
    if same_output:
        keep = rows < index.row[cells]
        rows, cells = rows[keep], cells[keep]
    hs = index.sketches
    differ = (new.sizes[rows] != hs.sizes[cells]) | (
        new.fingerprints[rows] != hs.fingerprints[cells]
    )
    rows, cells = rows[differ], cells[differ]
    survivors: list[tuple[I64, I64]] = []
    for s in range(0, rows.size, _CHUNK):
        r, c = rows[s : s + _CHUNK], cells[s : s + _CHUNK]
        lb = _lower_bound(new.anchors[r, :m], new.sizes[r], hs.anchors[c, :m], hs.sizes[c], m)
        ok = lb < m
        survivors.append((r[ok], c[ok]))
    if not survivors:
        return []
    rows = np.concatenate([s[0] for s in survivors])
    cells = np.concatenate([s[1] for s in survivors])
    if rows.size == 0:
        return []
    uniq_rows, pos = np.unique(rows, return_inverse=True)
    new_iblt = iblt_of(new_values, new_offsets, uniq_rows)
    entries = index.entry[cells]
    erows = index.row[cells]

    def settle(which: I64) -> list[Pair]:
        found: list[Pair] = []
        for s in range(0, which.size, _CHUNK):
            sel_all = which[s : s + _CHUNK]
            p, e, er = pos[sel_all], entries[sel_all], erows[sel_all]
            count = new_iblt.count[p].astype(np.int64)
            key = new_iblt.keysum[p].copy()
            check = new_iblt.check[p].astype(np.uint64)
            for entry in np.unique(e).tolist():
                sel = np.flatnonzero(e == entry)
                old = index.iblt(int(entry))
                count[sel] -= old.count[er[sel]].astype(np.int64)
                key[sel] ^= old.keysum[er[sel]]
                check[sel] ^= old.check[er[sel]].astype(np.uint64)
            peeled, settled = decode_many(count, key, check, m - 1)
            close = (peeled < m) & ((peeled > 0) | ~settled)
            for i in np.flatnonzero(close).tolist():
                where = -1 if same_output else int(e[i])
                diff = int(peeled[i]) if settled[i] else None
                found.append(Pair(int(rows[sel_all[i]]), where, int(er[i]), diff))
        return found

    # a row is blocked by one close pair: settle each row's first candidate, then the
    # other candidates only of rows not already blocked
    first = np.ones(rows.size, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    pairs = settle(np.flatnonzero(first))
    blocked = np.array(sorted({p.row for p in pairs if p.difference is not None}), np.int64)
    rest = np.flatnonzero(~first & ~np.isin(rows, blocked))
    return pairs + settle(rest)


def check_differencing(
    output: OutputSpec, index: DifferencingIndex | None, thresholds: Thresholds
) -> list[Finding]:
    """Block cells that differ from an earlier or sibling cell by fewer than m units."""
    if output.is_dp:
        return []  # a difference of two noisy answers is itself noisy: DP composition covers it
    if output.stats is None or output.stats.units is None:
        if output.measures:
            return [
                Finding(
                    "differencing",
                    "review",
                    "no unit sets for this output: differencing could not be checked",
                    {},
                    Fix(
                        "add_statistics",
                        "run the job through the trusted aggregate path so each cell's "
                        "contributing units are known",
                    ),
                )
            ]
        return []
    m = thresholds.min_cell_units
    values, offsets = flatten_units(output.stats.units)
    new = sketch_cells(values, offsets)
    own_iblt: list[Iblt] = []

    def own() -> Iblt:
        if not own_iblt:
            own_iblt.append(iblt_of(values, offsets))
        return own_iblt[0]

    self_index = DifferencingIndex([EarlierOutput({"output": output.name}, new, own)], m)
    pairs = find_pairs(new, values, offsets, self_index, same_output=True)
    if index is not None and len(index):
        index = index.for_threshold(m)
        pairs += find_pairs(new, values, offsets, index)
    findings: list[Finding] = []
    refs = index.refs if index is not None else []
    exact = [p for p in pairs if p.difference is not None]
    unsure = [p for p in pairs if p.difference is None]

    def describe(p: Pair) -> dict[str, Any]:
        where: dict[str, Any] = (
            {"output": output.name, "row": p.earlier_row}
            if p.earlier < 0
            else {**dict(refs[p.earlier]), "row": p.earlier_row}
        )
        body: dict[str, Any] = {"row": p.row, "earlier": where}
        if p.difference is not None:
            body["units_differing"] = p.difference
        return body

    if exact:
        rows = sorted({p.row for p in exact})
        jobs = sorted({str(refs[p.earlier].get("job_id")) for p in exact if p.earlier >= 0})
        findings.append(
            Finding(
                "differencing",
                "block",
                f"{len(rows)} cell(s) differ from an earlier or sibling cell by fewer than {m} "
                "units: subtracting one from the other reveals those units",
                {
                    "pairs": clip([describe(p) for p in exact]),
                    "pair_count": len(exact),
                    "rows": clip(rows),
                    "earlier_jobs": clip(jobs),
                    "min_cell_units": m,
                },
                Fix(
                    "suppress",
                    f"suppress these cells, or change the query so each cell differs from "
                    f"every earlier cell by at least {m} units, or use DP",
                    {"rows": rows},
                ),
            )
        )
    if unsure:
        findings.append(
            Finding(
                "differencing",
                "review",
                f"{len(unsure)} cell pair(s) could be close to an earlier cell; the sketches "
                "could not settle how close",
                {"pairs": clip([describe(p) for p in unsure]), "pair_count": len(unsure)},
            )
        )
    if m > ANCHORS:
        findings.append(
            Finding(
                "differencing",
                "info",
                f"differences are guaranteed to be found up to {ANCHORS - 1} units; "
                f"the threshold is {m}",
                {"anchors": ANCHORS, "min_cell_units": m},
            )
        )
    return findings
