"""What the worker trusts of a check job's report: nothing it can check itself. The ε it
charges for a DP model must equal the ε in the model's skops schema, read without loading
the model; a report that says otherwise blocks the model and charges nothing."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from diffprivlib.models import LogisticRegression as DpLogisticRegression
from diffprivlib.models import RandomForestClassifier as DpForest
from diffprivlib.models import StandardScaler as DpStandardScaler
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from egress.models import (
    ModelData,
    ModelThresholds,
    check_model,
    dump_model,
    find_dp_model,
    load_model_safely,
    schema_epsilon,
)
from sandbox.job import JobOutput
from shuyu import model_jobs


def _xy(n: int = 400) -> tuple[Any, Any]:
    rng = np.random.default_rng(3)
    x = rng.random((n, 2))
    return x, (x[:, 0] + rng.normal(0, 0.3, n) > 0.5).astype(int)


def _dp_pipeline() -> Any:
    x, y = _xy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_pipeline(
            DpStandardScaler(epsilon=1.0, bounds=([0, 0], [1, 1])),
            DpLogisticRegression(epsilon=0.5, data_norm=2.0),
        ).fit(x, y)


def test_the_schema_epsilon_is_what_the_loaded_model_says() -> None:
    x, y = _xy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forest = DpForest(n_estimators=3, epsilon=0.7, bounds=([0, 0], [1, 1]), classes=[0, 1]).fit(
            x, y
        )
    for model, epsilon in ((_dp_pipeline(), 1.5), (forest, 0.7)):
        blob = dump_model(model)
        found = find_dp_model(load_model_safely(blob))
        assert found is not None
        assert schema_epsilon(blob) == pytest.approx(found.epsilon) == pytest.approx(epsilon)
    assert schema_epsilon(dump_model(LogisticRegression().fit(x, y))) is None


def _honest_report(blob: bytes) -> dict[str, Any]:
    """What the sandbox's checks really say of ``blob`` under a DP scenario, as a dict."""
    x, y = _xy()
    half = len(x) // 2
    return check_model(
        blob,
        ModelData(x[:half], y[:half]),
        ModelData(x[half:], y[half:]),
        {},
        ModelThresholds(dp_required=True),
    ).to_dict()


def _checked(blob: bytes, report: dict[str, Any]) -> Any:
    """Run the worker's reading of a check job whose sandbox sent ``report``."""
    sandbox = SimpleNamespace(
        run=lambda spec, warm: JobOutput(tables={}, reports={"report": json.dumps(report).encode()})
    )
    scenario = SimpleNamespace(models=SimpleNamespace(dp_training=True))
    job = SimpleNamespace(id="J-test")
    return model_jobs._check(scenario, job, sandbox, None, blob)  # type: ignore[arg-type]


def test_a_report_that_understates_epsilon_blocks_the_model() -> None:
    blob = dump_model(_dp_pipeline())
    honest = _honest_report(blob)
    assert _checked(blob, honest).dp_epsilon == pytest.approx(1.5)
    lying = {**honest, "dp_epsilon": 0.01}
    blocked = _checked(blob, lying)
    assert blocked.verdict == "block" and blocked.dp_epsilon is None
    assert [f.check for f in blocked.findings] == ["model.checks_failed"]
    assert "0.01" in blocked.findings[0].evidence


def test_a_check_job_that_hits_a_limit_says_the_checks_did_not_the_operators_code() -> None:
    from sandbox.errors import LimitExceeded
    from sandbox.outcome import limit_exceeded

    def run(spec: Any, warm: bool) -> Any:
        raise limit_exceeded("memory")

    scenario = SimpleNamespace(models=SimpleNamespace(dp_training=False))
    with pytest.raises(LimitExceeded) as err:
        model_jobs._check(scenario, SimpleNamespace(id="J-t"), SimpleNamespace(run=run), None, b"")  # type: ignore[arg-type]
    assert err.value.code == "sandbox.limit.memory"
    assert "model checks" in err.value.message and "SHUYU_SANDBOX_MEMORY_BYTES" in (
        err.value.hint or ""
    )
    assert err.value.details == {"limit": "memory", "stage": "model_checks"}


def test_a_report_that_drops_the_dp_block_of_a_plain_model_is_refused() -> None:
    """Under a DP scenario, a plain scikit-learn model must be blocked (model.dp_required). A
    report that says "review" without an ε is checked against the schema, which has none."""
    blob = dump_model(LogisticRegression().fit(*_xy()))
    honest = _honest_report(blob)
    assert honest["verdict"] == "block" and honest["dp_epsilon"] is None
    assert _checked(blob, honest).blocking[0].check == "model.dp_required"  # kept as it is
    kept = [f for f in honest["findings"] if f["severity"] != "block"]
    forged = {**honest, "verdict": "review", "findings": kept}
    blocked = _checked(blob, forged)
    assert blocked.verdict == "block"
    assert [f.check for f in blocked.findings] == ["model.checks_failed"]
