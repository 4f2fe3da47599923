"""The warm pool: sessions per (operator, scenario), reuse, isolation, teardown."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.errors import JobFailed, LimitExceeded, SandboxError
from sandbox.executor import run_job
from sandbox.limits import SandboxLimits
from sandbox.pool import PoolExecutor, WarmPool
from tests.sandbox.conftest import HELD_COLUMN_ROUTES, DemoData, write_demo

pytestmark = pytest.mark.docker


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> _Clock:
    return _Clock()


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return write_demo(tmp_path_factory.mktemp("pool") / "store")


@pytest.fixture(scope="module")
def pool(
    docker_client: Any, sandbox_image_id: str, demo_data: DemoData, clock: _Clock
) -> Iterator[WarmPool]:
    """One pool for the module (warm starts cost seconds); each test uses its own
    scenario ids, so sessions never mix between tests."""
    limits = SandboxLimits(memory_bytes=512 * 1024**2, timeout_s=20, max_output_bytes=1 << 20)
    p = WarmPool(
        docker_client, sandbox_image_id, limits, demo_data.store, size=1, idle_s=60, clock=clock
    )
    p.start(reaper_interval_s=3600)
    yield p
    p.close()
    mine = {"label": f"org.shuyu.pool={p.pool_id}"}
    assert not docker_client.containers.list(all=True, filters=mine)


@pytest.fixture(autouse=True)
def _no_sessions_left(pool: WarmPool) -> Iterator[None]:
    yield
    for scenario in {s for _, s in pool.sessions()}:
        pool.destroy_sessions(scenario)


def test_a_session_serves_one_operator_under_one_scenario(
    pool: WarmPool, demo_data: DemoData
) -> None:
    sql = "SELECT count(*) AS n FROM people"
    a = pool.acquire("op-a", "S-1")
    out = pool.run(demo_data.spec(sql, operator="op-a", scenario_id="S-1"))
    assert out.result.to_pylist() == [{"n": 1000}]
    assert pool.acquire("op-a", "S-1") is a  # same session, same container
    assert a.jobs == 1
    other_scenario = pool.acquire("op-a", "S-2")
    other_operator = pool.acquire("op-b", "S-1")
    ids = {a.container.id, other_scenario.container.id, other_operator.container.id}
    assert len(ids) == 3
    assert pool.sessions() == [("op-a", "S-1"), ("op-a", "S-2"), ("op-b", "S-1")]


def test_refused_sql_in_a_warm_session_keeps_it_locked_down(
    pool: WarmPool, demo_data: DemoData
) -> None:
    refused = [
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY people TO '/tmp/x.csv'",
        "ATTACH '/tmp/x.db'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SELECT * FROM people; SELECT 1",
    ]
    for sql in refused:
        with pytest.raises(JobFailed) as err:
            pool.run(demo_data.spec(sql, operator="op", scenario_id="S"))
        assert err.value.code == "sandbox.sql.not_allowed", sql
    out = pool.run(
        demo_data.spec("SELECT count(*) AS n FROM people", operator="op", scenario_id="S")
    )
    assert out.result.to_pylist() == [{"n": 1000}]
    assert len(pool.sessions()) == 1  # job errors do not cost the session


def test_restricted_python_escapes_fail_in_the_real_image(
    pool: WarmPool, demo_data: DemoData
) -> None:
    payloads = [
        "x = '{0.__class__}'.format(1)",
        "x = ().__class__.__bases__[0].__subclasses__()",
        "def g():\n    yield 1\nx = g().gi_frame.f_back",
        "try:\n    pass\nexcept* ValueError:\n    pass",
        "import operator\nf = operator.attrgetter('__class__')",
        "import pandas\npandas.read_csv('/etc/passwd')",
    ]
    for code in payloads:
        with pytest.raises(JobFailed) as err:
            pool.run(demo_data.spec(code, kind="python", operator="op", scenario_id="S"))
        assert err.value.code in {"sandbox.python.compile", "sandbox.python.not_allowed"}, code


def test_warm_jobs_reuse_decrypted_tables_and_still_need_their_keys(
    pool: WarmPool, demo_data: DemoData
) -> None:
    spec = demo_data.spec(
        "SELECT sum(salary) AS s FROM people", columns=("salary",), operator="op", scenario_id="S"
    )
    assert pool.run(spec).result.to_pylist() == [
        {"s": pytest.approx(sum(demo_data.table.column("salary").to_pylist()))}
    ]
    lacking = demo_data.spec(
        "SELECT sum(salary) AS s FROM people",
        columns=("salary",),
        key_ids=demo_data.key_ids_for(["age"]),
        operator="op",
        scenario_id="S",
    )
    with pytest.raises(JobFailed) as err:
        pool.run(lacking)
    assert err.value.code == "sandbox.data.key_missing"


def test_a_warm_job_cannot_read_a_column_an_earlier_job_decrypted(
    pool: WarmPool, demo_data: DemoData
) -> None:
    """The session holds salary (decrypted for job 1, kept as a native table in the agent's
    DuckDB); job 2 is granted age only and tries every route to salary. All refused, in
    the real image; job 2 sees its own column, and the session survives."""
    full = demo_data.spec(
        "SELECT sum(salary) AS s FROM people",
        columns=("salary", "age"),  # salary becomes the first held table, c0
        operator="op",
        scenario_id="S",
    )
    assert pool.run(full).result.to_pylist() == [
        {"s": pytest.approx(sum(demo_data.table.column("salary").to_pylist()))}
    ]
    for sql in HELD_COLUMN_ROUTES:
        with pytest.raises(JobFailed) as err:
            pool.run(demo_data.spec(sql, columns=("age",), operator="op", scenario_id="S"))
        assert err.value.code in {"sandbox.sql.not_allowed", "sandbox.sql.error"}, sql
    mine = pool.run(
        demo_data.spec("SELECT * FROM people", columns=("age",), operator="op", scenario_id="S")
    )
    assert mine.result.column_names == ["age"]
    assert mine.result.column("age").to_pylist() == demo_data.table.column("age").to_pylist()
    assert pool.sessions() == [("op", "S")]


def test_destroy_sessions_and_idle_reaping(
    pool: WarmPool, demo_data: DemoData, clock: _Clock, docker_client: Any
) -> None:
    a = pool.acquire("op-a", "S-1")
    b = pool.acquire("op-b", "S-1")
    c = pool.acquire("op-a", "S-2")
    assert pool.destroy_sessions("S-1") == 2
    assert pool.sessions() == [("op-a", "S-2")]
    for gone in (a, b):
        with pytest.raises(Exception, match=r"(?i)no such container"):
            docker_client.containers.get(gone.container.id)
    clock.now += 61
    assert pool.reap_idle() == 1
    assert pool.sessions() == []
    assert c.dead


def test_a_killed_job_destroys_its_session(pool: WarmPool, demo_data: DemoData) -> None:
    spec = demo_data.spec("SELECT * FROM people, range(1000)", operator="op", scenario_id="S")
    with pytest.raises(LimitExceeded):
        pool.run(spec)
    assert pool.sessions() == []


def test_the_pool_executor_keeps_the_executor_contract(pool: WarmPool, demo_data: DemoData) -> None:
    ex = PoolExecutor(pool)
    spec = demo_data.spec("SELECT count(*) AS n FROM people", operator="op", scenario_id="S")
    t0 = time.monotonic()
    assert run_job(ex, spec).result.to_pylist() == [{"n": 1000}]
    assert time.monotonic() - t0 < 5
    assert pool.sessions() == [("op", "S")]


def test_size_zero_disables_the_pool(
    docker_client: Any, sandbox_image_id: str, demo_data: DemoData
) -> None:
    p = WarmPool(
        docker_client, sandbox_image_id, SandboxLimits(), demo_data.store, size=0, idle_s=1
    )
    p.start()
    assert not p.enabled and p.idle_count == 0
    with pytest.raises(SandboxError) as err:
        p.acquire("", "S")
    assert err.value.code == "sandbox.session_owner"


def _hand_out_first(pool: WarmPool, monkeypatch: pytest.MonkeyPatch, stale: Any) -> None:
    """The next acquire returns ``stale``: as for a job that took the session and then
    waited on its lock while it was destroyed."""
    real = pool.acquire
    handed: list[Any] = []

    def acquire(operator: str, scenario_id: str) -> Any:
        if not handed:
            handed.append(stale)
            return stale
        return real(operator, scenario_id)

    monkeypatch.setattr(pool, "acquire", acquire)


def test_a_job_that_waited_on_a_session_killed_meanwhile_runs_on_its_successor(
    pool: WarmPool, demo_data: DemoData, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = demo_data.spec("SELECT count(*) AS n FROM people", operator="op-w", scenario_id="S-w")
    stale = pool.acquire("op-w", "S-w")
    stale.dead = True
    pool.release(stale)  # destroyed, as after the job before it hit a limit
    _hand_out_first(pool, monkeypatch, stale)
    assert pool.run(spec).result.to_pylist() == [{"n": 1000}]
    assert pool.sessions() == [("op-w", "S-w")]


def test_a_job_that_waited_on_a_session_of_a_closed_scenario_does_not_run(
    pool: WarmPool, demo_data: DemoData, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = demo_data.spec("SELECT count(*) AS n FROM people", operator="op-c", scenario_id="S-c")
    stale = pool.acquire("op-c", "S-c")
    assert pool.destroy_sessions("S-c") == 1  # the scenario was suspended
    _hand_out_first(pool, monkeypatch, stale)
    with pytest.raises(SandboxError) as exc:
        pool.run(spec)
    assert exc.value.code == "sandbox.session_closed"
    assert pool.sessions() == []


def test_two_jobs_starting_one_session_at_once_share_it_and_leak_no_container(
    pool: WarmPool, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    real_spawn = pool._spawn

    def slow_spawn() -> Any:
        time.sleep(0.3)  # both jobs are past the session lookup before either registers
        return real_spawn()

    monkeypatch.setattr(pool, "_spawn", slow_spawn)
    monkeypatch.setattr(pool, "_refill_later", lambda: None)
    with pool._lock:  # no idle sandbox: both jobs must start one
        idle, pool._idle = pool._idle, []
    got: list[Any] = []
    threads = [
        threading.Thread(target=lambda: got.append(pool.acquire("op-t", "S-t"))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with pool._lock:
        pool._idle.extend(idle)
    assert len(got) == 2 and got[0] is got[1]
    mine = {"label": f"org.shuyu.pool={pool.pool_id}"}
    running = docker_client.containers.list(all=True, filters=mine)
    assert len(running) == len(pool.sessions()) + pool.idle_count


# --- spares: one-shot sandboxes started ahead for cold jobs -------------------------------

SEE_PYTHON = "shuyu.emit_metric('rows', len(shuyu.table('people')))\n"


@pytest.fixture(scope="module")
def spare_pool(
    docker_client: Any, sandbox_image_id: str, demo_data: DemoData
) -> Iterator[WarmPool]:
    limits = SandboxLimits(memory_bytes=768 * 1024**2, timeout_s=30, max_output_bytes=1 << 20)
    p = WarmPool(
        docker_client, sandbox_image_id, limits, demo_data.store, size=1, idle_s=60, spares=1
    )
    p.start(reaper_interval_s=3600)
    yield p
    p.close()
    mine = {"label": f"org.shuyu.pool={p.pool_id}"}
    assert not docker_client.containers.list(all=True, filters=mine)


def _spares(client: Any, pool: WarmPool) -> list[Any]:
    mine = {"label": [f"org.shuyu.pool={pool.pool_id}", "org.shuyu.role=spare"]}
    return list(client.containers.list(all=True, filters=mine))


def test_a_spare_is_as_locked_down_as_any_sandbox(docker_client: Any, spare_pool: WarmPool) -> None:
    (spare,) = _spares(docker_client, spare_pool)
    host = spare.attrs["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert spare.attrs["Config"]["User"] == "10001:10001"
    assert spare.attrs["Config"]["Cmd"] == ["--preload"]  # one-shot: it answers one job


def test_a_cold_job_on_a_spare_gets_a_container_of_its_own_destroyed_after_it(
    docker_client: Any, spare_pool: WarmPool, demo_data: DemoData
) -> None:
    (first,) = _spares(docker_client, spare_pool)
    spec = demo_data.spec(SEE_PYTHON, kind="python", operator="op", scenario_id="S-spare")
    out = spare_pool.run_fresh(spec)
    assert out.metrics == {"rows": 1000.0}
    assert spare_pool.sessions() == []  # no session: nothing of it is kept
    names = {c.name for c in docker_client.containers.list(all=True)}
    assert first.name not in names  # the spare that ran it is gone
    deadline = time.monotonic() + 60
    while spare_pool.spare_count < 1 and time.monotonic() < deadline:
        time.sleep(0.2)  # the next spare is started behind the job
    (second,) = _spares(docker_client, spare_pool)
    assert second.id != first.id


def test_a_spare_still_needs_the_jobs_keys(spare_pool: WarmPool, demo_data: DemoData) -> None:
    no_key = demo_data.spec(
        SEE_PYTHON,
        kind="python",
        columns=("salary",),
        key_ids=demo_data.key_ids_for(["age"]),
    )
    with pytest.raises(JobFailed) as err:
        spare_pool.run_fresh(no_key)
    assert err.value.code == "sandbox.data.key_missing"
