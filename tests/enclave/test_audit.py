"""The audit log catches every kind of tampering an insider with database access can try."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from enclave.tables import audit_checkpoints, audit_log
from shuyu.cli import app
from shuyu.context import Domain


def _fill(domain: Domain, n: int) -> None:
    for i in range(n):
        with domain.engine.begin() as conn:
            domain.audit.record(
                conn, actor=f"user{i % 3}", action="test.act", target=f"obj{i}", details={"i": i}
            )


def _verify(domain: Domain, against: dict[str, object] | None = None) -> tuple[bool, int | None]:
    with domain.engine.connect() as conn:
        r = domain.audit.verify(conn, against=against)
    return r.ok, r.first_bad_seq


def test_untouched_log_verifies_on_both_databases(any_domain: Domain) -> None:
    _fill(any_domain, 12)
    assert _verify(any_domain) == (True, None)


def test_edited_entry_is_named(any_domain: Domain) -> None:
    _fill(any_domain, 12)
    with any_domain.engine.begin() as conn:
        conn.execute(audit_log.update().where(audit_log.c.seq == 7).values(actor="mallory"))
    assert _verify(any_domain) == (False, 7)


def test_edit_that_also_fixes_its_own_hash_is_caught_at_the_next_link(domain: Domain) -> None:
    _fill(domain, 12)
    from enclave.audit import entry_hash

    with domain.engine.begin() as conn:
        r = conn.execute(sa.select(audit_log).where(audit_log.c.seq == 7)).one()
        h = entry_hash(7, r.ts, "mallory", r.action, r.target, r.result, r.details, r.prev_hash)
        conn.execute(audit_log.update().where(audit_log.c.seq == 7).values(actor="mallory", hash=h))
    assert _verify(domain) == (False, 8)


def test_deleted_entry_is_named(any_domain: Domain) -> None:
    _fill(any_domain, 12)
    with any_domain.engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 4))
    assert _verify(any_domain) == (False, 4)


def test_reordered_entries_are_caught(domain: Domain) -> None:
    _fill(domain, 12)
    with domain.engine.begin() as conn:
        rows = {
            r.seq: r for r in conn.execute(sa.select(audit_log).where(audit_log.c.seq.in_([5, 6])))
        }
        for seq, other in ((5, 6), (6, 5)):
            o = rows[other]
            conn.execute(
                audit_log.update()
                .where(audit_log.c.seq == seq)
                .values(
                    ts=o.ts,
                    actor=o.actor,
                    action=o.action,
                    target=o.target,
                    result=o.result,
                    details=o.details,
                    prev_hash=o.prev_hash,
                    hash=o.hash,
                )
            )
    ok, bad = _verify(domain)
    assert not ok and bad == 5


def test_truncation_past_a_signed_checkpoint_is_caught(domain: Domain) -> None:
    # checkpoint_every=5 in the test settings: entries 5 and 10 are signed
    _fill(domain, 11)
    with domain.engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq >= 9))
    ok, bad = _verify(domain)
    assert not ok and bad == 10


def test_truncation_after_the_last_checkpoint_is_caught_by_an_exported_checkpoint(
    domain: Domain,
) -> None:
    _fill(domain, 12)
    with domain.engine.begin() as conn:
        exported = domain.audit.checkpoint(conn)  # signs the head (entry 13) now
    assert exported is not None and exported["seq"] == 13
    # The insider cuts the newest entries and the checkpoint rows that named them.
    with domain.engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq >= 12))
        conn.execute(audit_checkpoints.delete().where(audit_checkpoints.c.seq >= 12))
    assert _verify(domain) == (True, None)  # the bounded, documented blind spot
    ok, bad = _verify(domain, against=exported)
    assert not ok and bad == 13


def test_a_checkpoint_signed_in_the_appending_transaction_is_the_stored_one(
    domain: Domain,
) -> None:
    """A release appends its entries and signs the head in one transaction; the checkpoint
    it returns (without reading the head back) is the one stored, and it verifies."""
    _fill(domain, 3)
    with domain.engine.begin() as conn:
        seq = domain.audit.record(conn, actor="t", action="test.append", target="x")
        returned = domain.audit.checkpoint(conn)
        assert returned is not None and returned["seq"] == seq
        assert returned == domain.audit.latest_checkpoint(conn)
        again = domain.audit.checkpoint(conn)  # the head is signed already: read back
        assert again == returned
    assert _verify(domain, against=returned) == (True, None)


def test_a_head_signed_by_its_own_append_is_not_signed_twice(domain: Domain) -> None:
    """checkpoint_every=5: an append that lands on a multiple of 5 signs it; a release's
    checkpoint in the same transaction hands back that signature instead of writing a
    second row for the entry."""
    with domain.engine.connect() as conn:
        head = int(conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())
    _fill(domain, 4 - head % 5)
    with domain.engine.begin() as conn:
        seq = domain.audit.record(conn, actor="t", action="test.append", target="x")
        assert seq % 5 == 0
        returned = domain.audit.checkpoint(conn)
        assert returned == domain.audit.latest_checkpoint(conn)
        rows = conn.execute(
            sa.select(sa.func.count())
            .select_from(audit_checkpoints)
            .where(audit_checkpoints.c.seq == seq)
        ).scalar_one()
    assert rows == 1
    assert _verify(domain, against=returned) == (True, None)


def test_forged_checkpoint_signature_is_caught(domain: Domain) -> None:
    _fill(domain, 6)
    with domain.engine.begin() as conn:
        conn.execute(audit_checkpoints.update().values(signature="00" * 64))
    ok, bad = _verify(domain)
    assert not ok and bad == 5


def test_concurrent_writers_never_fork_the_chain(any_domain: Domain) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(15):
                with any_domain.engine.begin() as conn:
                    any_domain.audit.record(conn, actor=f"w{k}", action="test.race", target=str(i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with any_domain.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one()
    assert n == 1 + 4 * 15
    assert _verify(any_domain) == (True, None)


def test_cli_verify_names_the_first_bad_entry_and_export_writes_json_lines(
    domain: Domain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHUYU_HOME", str(domain.settings.home))
    _fill(domain, 8)
    runner = CliRunner()
    res = runner.invoke(app, ["audit", "export"])
    assert res.exit_code == 0
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert [e["seq"] for e in lines] == list(range(1, 10))
    cp_file = tmp_path / "cp.json"
    assert runner.invoke(app, ["audit", "checkpoint", "--export", str(cp_file)]).exit_code == 0
    assert runner.invoke(app, ["audit", "verify", "--against", str(cp_file)]).exit_code == 0
    with domain.engine.begin() as conn:
        conn.execute(audit_log.update().where(audit_log.c.seq == 3).values(result="denied"))
    res = runner.invoke(app, ["audit", "verify"])
    assert res.exit_code == 2
    assert "first bad entry 3" in res.output


def test_many_entries_in_one_transaction_and_a_rolled_back_savepoint_keep_one_chain(
    any_domain: Domain,
) -> None:
    audit = any_domain.audit
    with any_domain.engine.begin() as conn:
        first = audit.record(conn, actor="a", action="test.batch", target="1")
        assert audit.record(conn, actor="a", action="test.batch", target="2") == first + 1
        with pytest.raises(RuntimeError), conn.begin_nested():
            audit.record(conn, actor="a", action="test.batch", target="undone")
            raise RuntimeError("roll the savepoint back")
        # the undone entry's number is free again: the head is read anew
        assert audit.record(conn, actor="a", action="test.batch", target="3") == first + 2
    # another writer appends between two transactions of the same connection
    other = sa.create_engine(any_domain.engine.url)
    with other.begin() as conn:
        conn.execute(
            audit_log.insert().values(
                seq=first + 3,
                ts="x",
                actor="x",
                action="x",
                target="x",
                result="ok",
                details="{}",
                prev_hash="x",
                hash="x",
            )
        )
    with any_domain.engine.begin() as conn:
        assert audit.record(conn, actor="a", action="test.batch", target="4") == first + 4
    other.dispose()
    with any_domain.engine.begin() as conn:  # drop the forged row; the rest must verify
        conn.execute(sa.delete(audit_log).where(audit_log.c.seq >= first + 3))
    assert _verify(any_domain) == (True, None)
