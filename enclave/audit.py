"""The append-only, hash-chained audit log with signed checkpoints (R5).

Each entry's hash covers its own fields and the hash of the entry before, so editing,
deleting or reordering any entry breaks the chain at that point. Every
``checkpoint_every`` entries (and whenever :meth:`AuditLog.checkpoint` is called, e.g. at
each release) the head hash is signed with the domain's Ed25519 key.

The hard case is cutting off the newest entries after the last checkpoint: a chain that
simply ends earlier is still a valid chain. Two things bound it. First, the loss is at most
the entries after the last signed checkpoint, so ``checkpoint_every`` is the bound. Second,
``shuyu audit checkpoint --export FILE`` writes the latest signed checkpoint to a file that
an auditor keeps outside the domain; ``shuyu audit verify --against FILE`` then refuses a
log whose head is behind it (see docs/audit.md).

Entries are written inside the caller's transaction, so an action and its audit record
commit or roll back together: no action without a record, no record of an action that did
not happen. Sequence numbers are assigned here and are the primary key, so two concurrent
writers can never both extend the same head; writers are serialised (BEGIN IMMEDIATE on
SQLite, a transaction-scoped advisory lock on PostgreSQL) so neither has to retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from enclave.errors import AuditError
from enclave.signing import Signer, verify_signature
from enclave.tables import audit_checkpoints, audit_log

__all__ = ["GENESIS", "AuditEntry", "AuditLog", "Verification", "entry_hash"]

GENESIS = "0" * 64
_PG_AUDIT_LOCK = 0x5348_5559  # "SHUY": the advisory lock id of the audit head
# Built once: an entry is appended several times per job, and building a statement costs
# more Python than running it.
_HEAD_QUERY = sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
_INSERT = audit_log.insert()
_INSERT_CHECKPOINT = audit_checkpoints.insert()
_HEAD = "shuyu.audit_head"  # (transaction, savepoint, seq, hash) of the last append
_SIGNED = "shuyu.audit_signed"  # (transaction, savepoint, seq, ts, signature) last signed


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(
    seq: int, ts: str, actor: str, action: str, target: str, result: str, details: str, prev: str
) -> str:
    payload = _canonical([seq, ts, actor, action, target, result, details, prev])
    return hashlib.sha256(payload.encode()).hexdigest()


def _checkpoint_message(seq: int, head_hash: str, ts: str) -> bytes:
    return f"shuyu-audit-checkpoint|{seq}|{head_hash}|{ts}".encode()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: str
    actor: str
    action: str
    target: str
    result: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> str:
        return _canonical(self.__dict__)


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    checkpoints: int
    first_bad_seq: int | None = None
    reason: str = ""


def _here(conn: Connection, key: str) -> tuple[Any, ...] | None:
    """What ``conn.info[key]`` recorded in this very transaction (and savepoint), or None."""
    tx = (conn.get_transaction(), conn.get_nested_transaction())
    known = conn.info.get(key)
    if tx[0] is not None and known is not None and known[0] is tx[0] and known[1] is tx[1]:
        return tuple(known[2:])
    return None


def _appended_head(conn: Connection) -> tuple[int, str] | None:
    """(seq, hash) of the head this very transaction appended, or None.

    The transaction (and savepoint, if any) matter: an entry written in a savepoint may be
    rolled back with it, so the head it left is trusted only inside that same savepoint.
    A transaction that appended holds the appenders' lock, so no one else can have
    appended since.
    """
    known = _here(conn, _HEAD)
    return None if known is None else (int(known[0]), str(known[1]))


class AuditLog:
    """Writes and verifies the audit trail of one domain."""

    def __init__(self, signer: Signer, checkpoint_every: int = 50) -> None:
        self._signer = signer
        self._every = checkpoint_every

    @property
    def public_key_hex(self) -> str:
        return self._signer.public_key_hex

    def record(
        self,
        conn: Connection,
        *,
        actor: str,
        action: str,
        target: str,
        result: str = "ok",
        details: dict[str, Any] | None = None,
    ) -> int:
        """Append one entry inside the caller's transaction; returns its sequence number."""
        appended = _appended_head(conn)
        if appended is not None:
            seq, prev = appended[0] + 1, appended[1]
        else:
            if conn.dialect.name == "postgresql":
                # Serialise appenders until the caller commits, so a business transaction
                # never fails because another one took the next sequence number (SQLite
                # already serialises writers with BEGIN IMMEDIATE).
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})
            head = conn.execute(_HEAD_QUERY).first()
            seq = 1 if head is None else int(head.seq) + 1
            prev = GENESIS if head is None else str(head.hash)
        ts = datetime.now(UTC).isoformat(timespec="microseconds")
        det = _canonical(details or {})
        h = entry_hash(seq, ts, actor, action, target, result, det, prev)
        conn.execute(
            _INSERT,
            {
                "seq": seq,
                "ts": ts,
                "actor": actor,
                "action": action,
                "target": target,
                "result": result,
                "details": det,
                "prev_hash": prev,
                "hash": h,
            },
        )
        tx = (conn.get_transaction(), conn.get_nested_transaction())
        if tx[0] is not None:
            conn.info[_HEAD] = (*tx, seq, h)
        if seq % self._every == 0:
            self._sign(conn, seq, h)
        return seq

    def record_now(self, engine: Engine, **kwargs: Any) -> int:
        """Append one entry in its own transaction (for refusals, where nothing else commits)."""
        with engine.begin() as conn:
            return self.record(conn, **kwargs)

    def checkpoint(self, conn: Connection) -> dict[str, Any] | None:
        """Sign the current head now; returns the checkpoint (None on an empty log)."""
        appended = _appended_head(conn)  # the release's own entries: no need to read back
        if appended is not None:
            seq, head_hash = appended
            # This transaction appended entry `seq` and holds the appenders' lock: no one
            # else can have signed it, so it is signed already only if signed here.
            signed = _here(conn, _SIGNED)
            if signed is not None and signed[0] == seq:
                ts, sig = str(signed[1]), str(signed[2])
            else:
                ts, sig = self._sign(conn, seq, head_hash)
        else:
            head = conn.execute(_HEAD_QUERY).first()
            if head is None:
                return None
            seq, head_hash = int(head.seq), str(head.hash)
            existing = conn.execute(
                sa.select(audit_checkpoints).where(audit_checkpoints.c.seq == seq)
            ).first()
            if existing is not None:
                return self.latest_checkpoint(conn)
            ts, sig = self._sign(conn, seq, head_hash)
        # Just written (or found written here), and the newest: what latest_checkpoint
        # would read back.
        return {
            "seq": seq,
            "hash": head_hash,
            "ts": ts,
            "signature": sig,
            "public_key": self.public_key_hex,
        }

    def _sign(self, conn: Connection, seq: int, head_hash: str) -> tuple[str, str]:
        """Sign and store a checkpoint of ``seq``; its (ts, signature)."""
        ts = datetime.now(UTC).isoformat(timespec="microseconds")
        sig = self._signer.sign(_checkpoint_message(seq, head_hash, ts))
        conn.execute(
            _INSERT_CHECKPOINT, {"seq": seq, "hash": head_hash, "ts": ts, "signature": sig}
        )
        tx = (conn.get_transaction(), conn.get_nested_transaction())
        if tx[0] is not None:
            conn.info[_SIGNED] = (*tx, seq, ts, sig)
        return ts, sig

    def latest_checkpoint(self, conn: Connection) -> dict[str, Any] | None:
        row = conn.execute(
            sa.select(audit_checkpoints).order_by(audit_checkpoints.c.seq.desc()).limit(1)
        ).first()
        if row is None:
            return None
        return {
            "seq": int(row.seq),
            "hash": row.hash,
            "ts": row.ts,
            "signature": row.signature,
            "public_key": self.public_key_hex,
        }

    @staticmethod
    def entries(
        conn: Connection,
        since: datetime | None = None,
        *,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> Iterator[AuditEntry]:
        query = sa.select(audit_log).order_by(audit_log.c.seq)
        if since is not None:
            query = query.where(audit_log.c.ts >= since.astimezone(UTC).isoformat())
        if after_seq:
            query = query.where(audit_log.c.seq > after_seq)
        if limit is not None:
            query = query.limit(limit)
        for r in conn.execute(query):
            yield AuditEntry(
                seq=int(r.seq),
                ts=r.ts,
                actor=r.actor,
                action=r.action,
                target=r.target,
                result=r.result,
                details=json.loads(r.details),
                prev_hash=r.prev_hash,
                hash=r.hash,
            )

    def verify(self, conn: Connection, against: dict[str, Any] | None = None) -> Verification:
        """Check the chain, every checkpoint signature, and an optional external checkpoint."""
        expected_prev = GENESIS
        expected_seq = 1
        hashes: dict[int, str] = {}
        n = 0
        for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)):
            n += 1
            seq = int(r.seq)
            if seq != expected_seq:
                return Verification(
                    False,
                    n,
                    0,
                    expected_seq,
                    f"entry {expected_seq} is missing (next present is {seq})",
                )
            if r.prev_hash != expected_prev:
                return Verification(
                    False, n, 0, seq, f"entry {seq} does not link to entry {seq - 1}"
                )
            h = entry_hash(seq, r.ts, r.actor, r.action, r.target, r.result, r.details, r.prev_hash)
            if h != r.hash:
                return Verification(False, n, 0, seq, f"entry {seq} was altered after writing")
            hashes[seq] = h
            expected_prev = h
            expected_seq += 1
        checkpoints = 0
        for c in conn.execute(sa.select(audit_checkpoints).order_by(audit_checkpoints.c.seq)):
            checkpoints += 1
            seq = int(c.seq)
            if not verify_signature(
                self.public_key_hex, _checkpoint_message(seq, c.hash, c.ts), c.signature
            ):
                return Verification(
                    False, n, checkpoints, seq, f"checkpoint at entry {seq} has a bad signature"
                )
            if seq not in hashes:
                return Verification(
                    False,
                    n,
                    checkpoints,
                    seq,
                    f"entries up to {seq} were signed but the log ends at {n}: "
                    "newest entries were cut off",
                )
            if hashes[seq] != c.hash:
                return Verification(
                    False, n, checkpoints, seq, f"entry {seq} differs from its signed checkpoint"
                )
        if against is not None:
            seq = int(against["seq"])
            msg = _checkpoint_message(seq, str(against["hash"]), str(against["ts"]))
            if not verify_signature(self.public_key_hex, msg, str(against["signature"])):
                return Verification(
                    False,
                    n,
                    checkpoints,
                    seq,
                    "the external checkpoint is not signed by this domain",
                )
            if seq not in hashes:
                return Verification(
                    False,
                    n,
                    checkpoints,
                    seq,
                    f"the external checkpoint covers entry {seq} but the log "
                    f"ends at {n}: newest entries were cut off",
                )
            if hashes[seq] != against["hash"]:
                return Verification(
                    False, n, checkpoints, seq, f"entry {seq} differs from the external checkpoint"
                )
        return Verification(True, n, checkpoints)


def require_valid(result: Verification) -> None:
    if not result.ok:
        raise AuditError(
            f"audit log does not verify at entry {result.first_bad_seq}: {result.reason}",
            code="enclave.audit_broken",
            hint="treat this as a security incident: export the log and compare with backups",
        )
