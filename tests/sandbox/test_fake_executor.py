"""The executor contract and the host's output discipline, with the agent in a subprocess."""

from __future__ import annotations

import pytest

from sandbox.errors import JobFailed, LimitExceeded, SandboxError
from sandbox.executor import RunState, run_job
from sandbox.fake_executor import FakeExecutor
from sandbox.limits import SandboxLimits
from tests.sandbox.conftest import DemoData


def test_a_sql_job_runs_end_to_end(demo_data: DemoData, small_limits: SandboxLimits) -> None:
    ex = FakeExecutor(small_limits, demo_data.store)
    spec = demo_data.spec("SELECT region, count(*) AS n FROM people GROUP BY 1 ORDER BY 1")
    out = run_job(ex, spec)
    assert out.result.to_pylist()[0] == {"region": "east", "n": 250}
    assert 0 < out.output_bytes < small_limits.max_output_bytes
    assert ex.state(spec.job_id) is RunState.NEW  # cleaned up and forgotten


def test_each_step_is_idempotent_and_order_is_enforced(
    demo_data: DemoData, small_limits: SandboxLimits
) -> None:
    ex = FakeExecutor(small_limits, demo_data.store)
    spec = demo_data.spec("SELECT count(*) AS n FROM people")
    with pytest.raises(SandboxError) as early:
        ex.wait(spec.job_id)
    assert early.value.code == "sandbox.executor_state"
    assert ex.prepare(spec) is RunState.PREPARED
    assert ex.prepare(spec) is RunState.PREPARED
    assert ex.start(spec.job_id) is RunState.RUNNING
    assert ex.start(spec.job_id) is RunState.RUNNING
    assert ex.started_jobs == [spec.job_id]  # started once
    assert ex.wait(spec.job_id) is RunState.FINISHED
    assert ex.wait(spec.job_id) is RunState.FINISHED
    first = ex.collect(spec.job_id)
    assert ex.collect(spec.job_id) is first
    assert first.result.to_pylist() == [{"n": 1000}]
    assert ex.cleanup(spec.job_id) is RunState.CLEANED
    assert ex.cleanup(spec.job_id) is RunState.CLEANED


def test_a_refused_statement_is_a_code_not_a_message(
    demo_data: DemoData, small_limits: SandboxLimits
) -> None:
    with pytest.raises(JobFailed) as err:
        run_job(FakeExecutor(small_limits, demo_data.store), demo_data.spec("COPY people TO 'x'"))
    assert err.value.code == "sandbox.sql.not_allowed"
    assert err.value.details == {"agent_code": "sql.not_allowed"}


def test_a_job_past_its_wall_clock_is_killed(demo_data: DemoData) -> None:
    limits = SandboxLimits(timeout_s=4.0)
    with pytest.raises(LimitExceeded) as err:
        run_job(
            FakeExecutor(limits, demo_data.store),
            demo_data.spec("x = 1\nwhile True:\n    x += 1", kind="python"),
        )
    assert err.value.code == "sandbox.limit.time"
    assert err.value.details["limit"] == "time"


def test_output_over_the_limit_is_killed_and_nothing_accepted(demo_data: DemoData) -> None:
    limits = SandboxLimits(max_output_bytes=4096, timeout_s=30)
    with pytest.raises(LimitExceeded) as err:
        run_job(FakeExecutor(limits, demo_data.store), demo_data.spec("SELECT * FROM people"))
    assert err.value.code == "sandbox.limit.output"


def test_python_artifacts_come_back_validated(
    demo_data: DemoData, small_limits: SandboxLimits
) -> None:
    code = (
        "from sklearn.tree import DecisionTreeRegressor\n"
        "df = shuyu.table('people')\n"
        "shuyu.emit_metric('mean_age', df['age'].mean())\n"
        "shuyu.emit_table('by_region', df.groupby('region', as_index=False)['age'].mean())\n"
        "shuyu.emit_model('tree', DecisionTreeRegressor(max_depth=2).fit(df[['age']], df['age']))\n"
    )
    out = run_job(FakeExecutor(small_limits, demo_data.store), demo_data.spec(code, kind="python"))
    assert out.metrics == {"mean_age": pytest.approx(sum(18 + i % 60 for i in range(1000)) / 1000)}
    assert out.tables["by_region"].num_rows == 4
    assert out.models["tree"][:2] == b"PK"  # a skops zip, never a pickle
