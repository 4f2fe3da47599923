"""SQLite locking: writers serialise up front; readers neither wait for them nor block them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa

from enclave.db import make_engine


def _engine(tmp_path: Path) -> sa.Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    return engine


def test_a_reader_does_not_wait_for_a_writer_holding_the_lock(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE t SET v = 2")
            holding.set()
            release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    assert holding.wait(5)
    t0 = time.monotonic()
    with engine.connect() as conn:
        value = conn.exec_driver_sql("SELECT v FROM t").scalar_one()
    waited = time.monotonic() - t0
    release.set()
    t.join(10)
    assert value == 1  # the last committed value, not the writer's pending one
    assert waited < 1.0
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT v FROM t").scalar_one() == 2


def test_two_writers_take_turns_and_lose_no_update(tmp_path: Path) -> None:
    engine = _engine(tmp_path)

    def bump() -> None:
        for _ in range(50):
            with engine.begin() as conn:
                v = conn.exec_driver_sql("SELECT v FROM t").scalar_one()
                conn.exec_driver_sql(f"UPDATE t SET v = {v + 1}")

    threads = [threading.Thread(target=bump) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT v FROM t").scalar_one() == 1 + 150
