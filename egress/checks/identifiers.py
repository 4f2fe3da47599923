"""Identifiers and canaries in an output: in any cell or column name, plain or encoded.

Every value of an ``identifier`` column (and of the privacy-unit column) of an input
dataset is an index entry; so is every planted canary. The index holds keyed 64-bit hashes
(MD5 of a per-index salt and the normalised value, lower 8 bytes — the same function as
DuckDB's ``md5_number_lower``, so the index of a million values is built in one SQL pass
next to the data) plus the set of value lengths. It never holds a value, so it can leave
the sandbox that built it and live in the gate's memory.

Scanning an output costs one hash per (distinct string, window length, window start):

* every distinct value of every non-measure column, and every column name, is scanned;
* a string is tested whole, then every substring whose length is that of some indexed
  value — so ``'x' || id_number || 'y'`` is found;
* each string is also decoded as hex and as base64 (at every alignment, so a prefix of any
  length in front of the encoded part does not hide it) and the decoded text scanned alike.

Values shorter than ``identifier_min_chars`` (small integer ids, two-character names)
would match everywhere as substrings; they are indexed separately and matched only as a
whole cell or a whole token (split at spaces and punctuation). Purely numeric short
values are not matched at all — an age or a count equal to a person id means nothing —
and the report says which identifier columns that leaves covered by name only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from egress.checks.findings import Finding, Fix, clip
from egress.checks.inputs import DatasetInfo, OutputSpec

__all__ = ["CANARY", "IdentifierIndex", "check_identifiers", "normalise"]

CANARY = "<canary>"
_TOKEN_SPLIT = re.compile(r"[\s,;:|/\\_\-.()\[\]{}'\"=+*&#@!?<>]+")
_HEX = re.compile(r"[0-9a-f]{8,}")
_B64 = re.compile(r"[A-Za-z0-9+/_\-]{8,}={0,2}")
_NUMERIC = re.compile(r"^[+-]?\d+$")
_MAX_SCAN_CHARS = 4096  # longer strings are scanned in their first and last 4 KiB


def normalise(value: Any) -> str:
    """The text form an identifier is compared in (also the SQL side: lower(trim(cast)))."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().lower()


def _h(salt: bytes, text: str) -> int:
    return int.from_bytes(
        hashlib.md5(salt + text.encode(), usedforsecurity=False).digest()[8:16], "little"
    )


@dataclass
class IdentifierIndex:
    """Keyed hashes of every identifying value; see the module docstring."""

    salt: bytes
    min_chars: int = 6
    long: dict[int, int] = field(default_factory=dict)  # hash -> origin index
    short: dict[int, int] = field(default_factory=dict)  # whole-token matches only
    lengths: set[int] = field(default_factory=set)  # lengths of the long values
    origins: list[tuple[str, str]] = field(default_factory=list)  # (dataset, column)
    name_only: list[tuple[str, str]] = field(default_factory=list)  # short numeric columns
    column_names: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def empty(cls, min_chars: int = 6) -> IdentifierIndex:
        return cls(salt=secrets.token_hex(16).encode(), min_chars=min_chars)

    @property
    def salt_sql(self) -> str:
        return self.salt.decode()

    def _origin(self, dataset: str, column: str) -> int:
        key = (dataset, column)
        if key not in self.origins:
            self.origins.append(key)
        return self.origins.index(key)

    def add_values(self, dataset: str, column: str, values: Iterable[Any]) -> None:
        """Index the values of one identifying column (pure Python; fine up to ~10^5)."""
        o = self._origin(dataset, column)
        self.column_names[column.lower()] = (dataset, column)
        short_numeric = 0
        for v in values:
            if v is None:
                continue
            text = normalise(v)
            self._add(text, o)
            if len(text) < self.min_chars and _NUMERIC.match(text):
                short_numeric += 1
        if short_numeric and (dataset, column) not in self.name_only:
            self.name_only.append((dataset, column))

    def _add(self, text: str, origin: int) -> None:
        if not text:
            return
        if len(text) >= self.min_chars:
            self.long[_h(self.salt, text)] = origin
            self.lengths.add(len(text))
        elif not _NUMERIC.match(text) and len(text) >= 2:
            self.short[_h(self.salt, text)] = origin

    def add_canaries(self, canaries: Iterable[str]) -> None:
        o = self._origin(CANARY, CANARY)
        for c in canaries:
            self._add(normalise(c), o)

    def add_hashed(self, dataset: str, column: str, rows: Iterable[tuple[int, int, bool]]) -> None:
        """Index ``(hash, length, numeric)`` triples computed elsewhere (by SQL, see below)."""
        o = self._origin(dataset, column)
        self.column_names[column.lower()] = (dataset, column)
        short_numeric = False
        for h, length, numeric in rows:
            if length >= self.min_chars:
                self.long[int(h)] = o
                self.lengths.add(int(length))
            elif numeric:
                short_numeric = True
            elif length >= 2:
                self.short[int(h)] = o
        if short_numeric and (dataset, column) not in self.name_only:
            self.name_only.append((dataset, column))

    def add_hash_arrays(self, dataset: str, column: str, h: Any, n: Any, numeric: Any) -> None:
        """:meth:`add_hashed` for column arrays (a million values in well under a second)."""
        hashes = np.asarray(h, dtype=np.uint64)
        lengths = np.asarray(n, dtype=np.int64)
        numeric_ = np.asarray(numeric, dtype=bool)
        o = self._origin(dataset, column)
        self.column_names[column.lower()] = (dataset, column)
        long = lengths >= self.min_chars
        self.long.update(dict.fromkeys(hashes[long].tolist(), o))
        self.lengths.update(np.unique(lengths[long]).tolist())
        short = ~long & ~numeric_ & (lengths >= 2)
        self.short.update(dict.fromkeys(hashes[short].tolist(), o))
        if bool((~long & numeric_).any()) and (dataset, column) not in self.name_only:
            self.name_only.append((dataset, column))

    def hash_sql(self, column_sql: str) -> str:
        """A DuckDB select list giving ``(hash, length, numeric)`` for one column's values."""
        norm = f"lower(trim(CAST({column_sql} AS VARCHAR)))"
        salt = self.salt_sql.replace("'", "''")
        return (
            f"md5_number_lower('{salt}' || {norm}) AS h, length({norm}) AS n, "
            f"regexp_full_match({norm}, '[+-]?[0-9]+') AS numeric"
        )

    @classmethod
    def from_tables(
        cls,
        tables: Mapping[str, pa.Table],
        catalog: Mapping[str, DatasetInfo],
        canaries: Iterable[str] = (),
        min_chars: int = 6,
    ) -> IdentifierIndex:
        """Index the identifying columns of in-memory source tables (tests, small data)."""
        index = cls.empty(min_chars)
        for name, table in tables.items():
            info = catalog.get(name)
            if info is None:
                continue
            for col in info.identifying_columns:
                if col in table.column_names:
                    values = pc.unique(table.column(col)).to_pylist()
                    index.add_values(name, col, values)
        index.add_canaries(canaries)
        return index

    @classmethod
    def from_duckdb(
        cls,
        conn: Any,
        relations: Mapping[str, str],
        catalog: Mapping[str, DatasetInfo],
        canaries: Iterable[str] = (),
        min_chars: int = 6,
    ) -> IdentifierIndex:
        """Index identifying columns with one SQL pass each, inside the sandbox.

        ``relations`` maps a dataset name to the DuckDB relation holding its rows. This is
        trusted code that runs next to the data; only hashes come out.
        """
        index = cls.empty(min_chars)
        for name, relation in relations.items():
            info = catalog.get(name)
            if info is None:
                continue
            for col in info.identifying_columns:
                quoted = '"' + col.replace('"', '""') + '"'
                cols = conn.sql(
                    f"SELECT DISTINCT {index.hash_sql(quoted)} FROM {relation} "  # noqa: S608
                    f"WHERE {quoted} IS NOT NULL"
                ).fetchnumpy()
                index.add_hash_arrays(name, col, cols["h"], cols["n"], cols["numeric"])
        index.add_canaries(canaries)
        return index

    # --- lookups ---------------------------------------------------------------------------

    def find_in(self, text: str) -> int | None:
        """The origin of an indexed value found in ``text`` (whole, token or substring)."""
        if not text:
            return None
        h = _h(self.salt, text)
        if h in self.long:
            return self.long[h]
        if h in self.short:
            return self.short[h]
        if self.short:
            for token in _TOKEN_SPLIT.split(text):
                if token and token != text:
                    t = _h(self.salt, token)
                    if t in self.short:
                        return self.short[t]
                    if t in self.long:
                        return self.long[t]
        n = len(text)
        for length in self.lengths:
            if length >= n:
                continue
            for i in range(n - length + 1):
                hit = self.long.get(_h(self.salt, text[i : i + length]))
                if hit is not None:
                    return hit
        return None


def _decoded(text: str) -> Iterator[tuple[str, str]]:
    """Hex and base64 readings of the encoded-looking runs inside ``text``."""
    for m in _HEX.finditer(text.lower()):
        run = m.group(0)
        for start in (0, 1):
            part = run[start:]
            part = part[: len(part) - len(part) % 2]
            try:
                yield "hex", bytes.fromhex(part).decode("utf-8", errors="replace")
            except ValueError:
                continue
    for m in _B64.finditer(text):
        run = m.group(0).rstrip("=")
        for start in range(4):
            part = run[start:]
            part = part[: len(part) - len(part) % 4]
            if len(part) < 8:
                continue
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    raw = decode(part + "==")
                except (binascii.Error, ValueError):
                    continue
                yield "base64", raw.decode("utf-8", errors="replace")


def _scan(index: IdentifierIndex, raw: str) -> tuple[int, str] | None:
    text = (
        raw if len(raw) <= 2 * _MAX_SCAN_CHARS else raw[:_MAX_SCAN_CHARS] + raw[-_MAX_SCAN_CHARS:]
    )
    lowered = normalise(text)
    hit = index.find_in(lowered)
    if hit is not None:
        return hit, "plain"
    if len(text) >= 8:
        for encoding, decoded in _decoded(text):
            hit = index.find_in(normalise(decoded))
            if hit is not None:
                return hit, encoding
    return None


def check_identifiers(output: OutputSpec, index: IdentifierIndex) -> list[Finding]:
    """Block when an identifying value or a canary appears anywhere in the output."""
    if not (index.long or index.short or index.column_names or index.name_only):
        # Nothing indexed (a DP answer's gate run): no value or name can match, so skip
        # hashing every cell and its hex/base64 readings (about 0.5 ms a DP job).
        return []
    findings: list[Finding] = []
    table = output.table
    measures = set(output.measures)

    named = [c for c in table.column_names if c.lower() in index.column_names]
    if named:
        origins = sorted({f"{index.column_names[c.lower()][0]}.{c}" for c in named})
        findings.append(
            Finding(
                "identifiers",
                "block",
                f"the output has identifier column(s) {', '.join(named)}",
                {"columns": named, "sources": origins},
                Fix(
                    "drop_columns",
                    "drop column(s) " + ", ".join(f"`{c}`" for c in named),
                    {"columns": named},
                ),
            )
        )

    hits: dict[tuple[int, str, str], list[int]] = {}  # (origin, column, encoding) -> rows
    for col in table.column_names:
        found = _scan(index, col)
        if found is not None:
            hits.setdefault((found[0], col, found[1] + " column name"), [])
    for col in table.column_names:
        column = table.column(col)
        numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
        if col in measures and numeric:
            continue  # counts and sums coincide with numeric ids by chance
        if pa.types.is_boolean(column.type) or column.null_count == len(column):
            continue
        uniques = pc.unique(column.combine_chunks())
        for value in uniques.to_pylist():
            if value is None:
                continue
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            found = _scan(index, text)
            if found is None:
                continue
            rows = _rows_equal(column, value)
            hits.setdefault((found[0], col, found[1]), []).extend(rows)

    for (origin, col, encoding), rows in sorted(hits.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        dataset, source_col = index.origins[origin]
        canary = dataset == CANARY
        where = "column name" if encoding.endswith("column name") else f"column {col}"
        what = "a planted canary" if canary else f"values of {dataset}.{source_col}"
        rows_sorted = sorted(set(rows))
        evidence: dict[str, Any] = {
            "output_column": col,
            "encoding": encoding.replace(" column name", ""),
            "in_column_name": encoding.endswith("column name"),
            "rows": clip(rows_sorted),
            "row_count": len(rows_sorted),
        }
        if not canary:
            evidence["source"] = f"{dataset}.{source_col}"
        findings.append(
            Finding(
                "canary" if canary else "identifiers",
                "block",
                f"{what} appear in {where} of the output"
                + ("" if encoding.startswith("plain") else f" ({evidence['encoding']}-encoded)"),
                evidence,
                Fix(
                    "drop_columns",
                    f"drop column `{col}` or rebuild it without identifying values",
                    {"columns": [col]},
                ),
            )
        )

    if index.name_only:
        cols = sorted(f"{d}.{c}" for d, c in index.name_only)
        findings.append(
            Finding(
                "identifiers",
                "info",
                "short numeric identifier values are matched by column name only",
                {"sources": cols, "min_chars": index.min_chars},
            )
        )
    return findings


def _rows_equal(column: pa.ChunkedArray, value: Any) -> list[int]:
    mask = pc.equal(column, pa.scalar(value, type=column.type))
    idx = pc.indices_nonzero(mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask)
    return [int(i) for i in idx.to_pylist()]
