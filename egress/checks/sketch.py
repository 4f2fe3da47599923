"""Unit-set sketches: what the gate keeps of each released cell to catch differencing later.

Two cells whose sets of contributing units differ by fewer than ``m`` units (the minimum
cell size) give those few units away by subtraction. To test that against every earlier
release without keeping every unit of every cell, each cell keeps:

* its size and a **fingerprint** (sum of mixed unit hashes, mod 2^64): equal sets are
  recognised at once;
* its **anchors**: the ``ANCHORS`` smallest unit hashes. If |A Δ B| < m ≤ ANCHORS, then of
  the m smallest hashes of A ∪ B at least one lies in A ∩ B, and it is among the m
  smallest of A and of B. So two such cells always share an anchor: an inverted index on
  anchors finds every candidate pair, with no false negatives;
* an **invertible Bloom lookup table** (IBLT) of ``IBLT_BUCKETS`` buckets (count, XOR of
  hashes, XOR of a checksum). Subtracting B's from A's leaves the IBLT of A Δ B, which
  decodes (peels) when the difference is small, giving |A \\ B| and |B \\ A| exactly.
  A difference of up to ``ANCHORS - 1`` units decodes with overwhelming probability
  (tested); a larger one usually does not, and that is read as "large".

A cell costs 16 + 8·ANCHORS + 16·IBLT_BUCKETS bytes whatever its size.

Unit hashes are *keyed*: the sandbox's trusted query computes
``md5_number_lower(<salt> || CAST(unit AS VARCHAR))`` (:func:`unit_hash_sql`), with a
per-domain salt from the key service, so the hashes of the same person match across
datasets, jobs and scenarios but say nothing without the salt; :func:`unit_hashes` is the
same function in Python.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = [
    "ANCHORS",
    "IBLT_BUCKETS",
    "CellSketches",
    "Iblt",
    "decode_difference",
    "decode_many",
    "flatten_units",
    "iblt_of",
    "sketch_cells",
    "unit_hash_sql",
    "unit_hashes",
]

ANCHORS = 20  # differencing is exact for minimum cell sizes up to this
IBLT_HASHES = 4
IBLT_SUBTABLE = 30
IBLT_BUCKETS = IBLT_HASHES * IBLT_SUBTABLE
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_CHECK_SEED = 77
_FP_SEED = 99

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def unit_hash_sql(unit_sql: str, salt: str) -> str:
    """The DuckDB expression the trusted query uses to hash a unit id."""
    quoted = salt.replace("'", "''")
    return f"md5_number_lower('{quoted}' || CAST({unit_sql} AS VARCHAR))"


def unit_hashes(values: Iterable[Any], salt: str) -> U64:
    """The same keyed hashes in Python (tests, small jobs)."""
    s = salt.encode()
    out = [
        int.from_bytes(
            hashlib.md5(s + str(v).encode(), usedforsecurity=False).digest()[8:16], "little"
        )
        for v in values
    ]
    return np.array(out, dtype=np.uint64)


def _mix(h: U64, seed: int) -> U64:
    """splitmix64's finaliser over an array (uint64 arithmetic wraps, as intended)."""
    with np.errstate(over="ignore"):
        z = h + np.uint64((seed * _GOLDEN) & _MASK)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return np.asarray(z ^ (z >> np.uint64(31)), dtype=np.uint64)


def _mix_int(h: int, seed: int) -> int:
    z = (h + seed * _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _buckets_int(h: int) -> list[int]:
    return [j * IBLT_SUBTABLE + _mix_int(h, j + 1) % IBLT_SUBTABLE for j in range(IBLT_HASHES)]


def _check_int(h: int) -> int:
    return _mix_int(h, _CHECK_SEED) & 0xFFFFFFFF


def flatten_units(units: pa.ListArray) -> tuple[U64, I64]:
    """Values and offsets of a list<uint64> array, each list sorted and de-duplicated."""
    units = units.fill_null(pa.scalar([], type=units.type))
    raw_off = np.asarray(units.offsets.to_numpy(), dtype=np.int64)
    offsets = raw_off - raw_off[0]
    values = np.asarray(units.flatten().to_numpy(zero_copy_only=False), dtype=np.uint64)
    if values.size < 2:
        return values, offsets
    step_ok = values[1:] > values[:-1]
    starts = offsets[1:-1]
    starts = starts[(starts > 0) & (starts < values.size)]
    step_ok[starts - 1] = True  # a new list may start lower than the last one ended
    if bool(step_ok.all()):
        return values, offsets
    sizes = np.diff(offsets)
    cell = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
    order = np.lexsort((values, cell))
    values, cell = values[order], cell[order]
    keep = np.ones(values.size, dtype=bool)
    keep[1:] = (values[1:] != values[:-1]) | (cell[1:] != cell[:-1])
    values, cell = values[keep], cell[keep]
    counts = np.bincount(cell, minlength=sizes.size)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return values, offsets


@dataclass(frozen=True)
class CellSketches:
    """Sizes, fingerprints and anchors of a sequence of cells (see the module docstring)."""

    sizes: I64
    fingerprints: U64
    anchors: U64  # shape (cells, ANCHORS), ascending, zero past a cell's size

    def __len__(self) -> int:
        return int(self.sizes.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[CellSketches]) -> CellSketches:
        if not parts:
            return cls(
                np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros((0, ANCHORS), np.uint64)
            )
        return cls(
            np.concatenate([p.sizes for p in parts]),
            np.concatenate([p.fingerprints for p in parts]),
            np.concatenate([p.anchors for p in parts]),
        )

    def to_bytes(self) -> bytes:
        n = np.array([len(self), ANCHORS], dtype=np.int64)
        return b"".join(
            a.tobytes() for a in (n, self.sizes, self.fingerprints, self.anchors.reshape(-1))
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CellSketches:
        head = np.frombuffer(data, dtype=np.int64, count=2)
        n, k = int(head[0]), int(head[1])
        pos = 16
        sizes = np.frombuffer(data, dtype=np.int64, count=n, offset=pos)
        pos += 8 * n
        fps = np.frombuffer(data, dtype=np.uint64, count=n, offset=pos)
        pos += 8 * n
        anchors = np.frombuffer(data, dtype=np.uint64, count=n * k, offset=pos).reshape(n, k)
        if k < ANCHORS:
            anchors = np.pad(anchors, ((0, 0), (0, ANCHORS - k)))
        return cls(sizes, fps, anchors[:, :ANCHORS])


def sketch_cells(values: U64, offsets: I64) -> CellSketches:
    """Sketches of every cell from sorted, de-duplicated unit hashes (:func:`flatten_units`)."""
    sizes = np.diff(offsets).astype(np.int64)
    cells = sizes.size
    mixed = _mix(values, _FP_SEED)
    with np.errstate(over="ignore"):
        cums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(mixed, dtype=np.uint64)])
        fps = np.asarray(cums[offsets[1:]] - cums[offsets[:-1]], dtype=np.uint64)
    ar = np.arange(ANCHORS, dtype=np.int64)
    valid = ar[None, :] < sizes[:, None]
    if values.size:
        idx = np.minimum(offsets[:-1, None] + ar[None, :], values.size - 1)
        anchors = np.where(valid, values[idx], np.uint64(0)).astype(np.uint64)
    else:
        anchors = np.zeros((cells, ANCHORS), dtype=np.uint64)
    return CellSketches(sizes, fps, anchors)


@dataclass(frozen=True)
class Iblt:
    """Invertible Bloom lookup tables of a sequence of cells, one row per cell."""

    count: npt.NDArray[np.int32]  # (cells, IBLT_BUCKETS)
    keysum: U64
    check: npt.NDArray[np.uint32]

    def to_bytes(self) -> bytes:
        n = np.array([self.count.shape[0]], dtype=np.int64)
        return b"".join(a.tobytes() for a in (n, self.count, self.keysum, self.check))

    @classmethod
    def from_bytes(cls, data: bytes) -> Iblt:
        n = int(np.frombuffer(data, dtype=np.int64, count=1)[0])
        b = IBLT_BUCKETS
        pos = 8
        count = np.frombuffer(data, dtype=np.int32, count=n * b, offset=pos).reshape(n, b)
        pos += 4 * n * b
        keysum = np.frombuffer(data, dtype=np.uint64, count=n * b, offset=pos).reshape(n, b)
        pos += 8 * n * b
        check = np.frombuffer(data, dtype=np.uint32, count=n * b, offset=pos).reshape(n, b)
        return cls(count, keysum, check)


def iblt_of(values: U64, offsets: I64, rows: npt.NDArray[np.int64] | None = None) -> Iblt:
    """The IBLTs of all cells, or only of ``rows`` (in that order)."""
    if rows is not None:
        starts, ends = offsets[rows], offsets[rows + 1]
        sizes = ends - starts
        take = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        take = take + np.arange(int(sizes.sum()), dtype=np.int64)
        values = values[take]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    sizes = np.diff(offsets)
    cells = sizes.size
    cell = np.repeat(np.arange(cells, dtype=np.int64), sizes)
    b = IBLT_BUCKETS
    count = np.zeros(cells * b, dtype=np.int64)
    keysum = np.zeros(cells * b, dtype=np.uint64)
    check = np.zeros(cells * b, dtype=np.uint64)
    chk = _mix(values, _CHECK_SEED) & np.uint64(0xFFFFFFFF)
    for j in range(IBLT_HASHES):
        bucket = (_mix(values, j + 1) % np.uint64(IBLT_SUBTABLE)).astype(np.uint8)
        # a stable sort on the small bucket number groups (bucket, cell) runs together
        # (cells are contiguous), so each run XOR-reduces in one pass: faster than ufunc.at
        order = np.argsort(bucket, kind="stable")
        g = cell[order] * b + j * IBLT_SUBTABLE + bucket[order].astype(np.int64)
        if g.size == 0:
            continue
        starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
        runs = g[starts]
        keysum[runs] = np.bitwise_xor.reduceat(values[order], starts)
        check[runs] = np.bitwise_xor.reduceat(chk[order], starts)
        count[runs] = np.diff(np.append(starts, g.size))
    return Iblt(
        count.astype(np.int32).reshape(cells, b),
        keysum.reshape(cells, b),
        check.astype(np.uint32).reshape(cells, b),
    )


def decode_difference(a: Iblt, ai: int, b: Iblt, bi: int, limit: int) -> tuple[int, int] | None:
    """(|A \\ B|, |B \\ A|) for cell ``ai`` of ``a`` and ``bi`` of ``b``; None if not small.

    Peels the difference of the two IBLTs; gives up (None) once more than ``limit``
    units have come out or when no bucket is pure, both of which mean a large difference.
    """
    count = [int(x) for x in (a.count[ai].astype(np.int64) - b.count[bi].astype(np.int64))]
    key = [int(x) for x in (a.keysum[ai] ^ b.keysum[bi])]
    chk = [int(x) for x in (a.check[ai] ^ b.check[bi])]

    def pure(i: int) -> bool:
        return count[i] in (1, -1) and chk[i] == _check_int(key[i])

    only_a = only_b = 0
    stack = [i for i in range(IBLT_BUCKETS) if pure(i)]
    while stack:
        i = stack.pop()
        if not pure(i):
            continue
        h, sign, c = key[i], count[i], _check_int(key[i])
        for j in _buckets_int(h):
            count[j] -= sign
            key[j] ^= h
            chk[j] ^= c
            if pure(j):
                stack.append(j)
        if sign > 0:
            only_a += 1
        else:
            only_b += 1
        if only_a + only_b > limit:
            return None
    if any(count) or any(key) or any(chk):
        return None
    return only_a, only_b


def _buckets(h: U64) -> npt.NDArray[np.int64]:
    """The IBLT bucket of each hash in each sub-table, shape (n, IBLT_HASHES)."""
    sub = np.uint64(IBLT_SUBTABLE)
    return np.stack(
        [j * IBLT_SUBTABLE + (_mix(h, j + 1) % sub).astype(np.int64) for j in range(IBLT_HASHES)],
        axis=1,
    )


def decode_many(
    count: npt.NDArray[np.int64], key: U64, check: U64, limit: int
) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Peel many difference IBLTs at once (rows of the arrays, modified in place).

    Returns ``(peeled, settled)`` per row: ``settled`` with ``peeled <= limit`` means the
    difference is exactly ``peeled`` units; ``peeled > limit`` means it is larger than
    ``limit`` (peeled that far, or what would not peel holds more units than that);
    otherwise it is unknown. One unit per row per round, so at most ``limit + 1``
    vectorised rounds.
    """
    rows = count.shape[0]
    peeled = np.zeros(rows, dtype=np.int64)
    active = np.ones(rows, dtype=bool)
    mask32 = np.uint64(0xFFFFFFFF)
    for _ in range(limit + 1):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        # only buckets holding a count of +-1 can be pure: check just those
        r_loc, b_loc = np.nonzero(np.abs(count[idx]) == 1)
        rr = idx[r_loc]
        ok = check[rr, b_loc] == (_mix(key[rr, b_loc], _CHECK_SEED) & mask32)
        rr, b_loc = rr[ok], b_loc[ok]
        # one pure bucket per row per round (the first), so no unit is peeled twice
        first = np.ones(rr.size, dtype=bool)
        first[1:] = rr[1:] != rr[:-1]
        rr, b_loc = rr[first], b_loc[first]
        stuck = np.ones(idx.size, dtype=bool)
        stuck[np.searchsorted(idx, rr)] = False
        active[idx[stuck]] = False
        if rr.size == 0:
            break
        h = key[rr, b_loc]
        sign = count[rr, b_loc]
        chk = _mix(h, _CHECK_SEED) & mask32
        buckets = _buckets(h)
        r = rr[:, None]
        count[r, buckets] -= sign[:, None]
        key[r, buckets] ^= h[:, None]
        check[r, buckets] ^= chk[:, None]
        peeled[rr] += 1
        active[rr[peeled[rr] > limit]] = False
    nonzero = (count != 0) | (key != 0) | (check != 0)
    settled = np.asarray(~nonzero.any(axis=1), dtype=bool)
    # a table that would not peel still bounds the difference from below: every unit left
    # in it touches at most IBLT_HASHES buckets, so it holds at least nonzero / k units
    left = -(-nonzero.sum(axis=1) // IBLT_HASHES)
    stuck_large = ~settled & (peeled + left > limit)
    peeled = np.where(stuck_large, np.maximum(peeled, limit + 1), peeled)
    return np.asarray(peeled, dtype=np.int64), settled
