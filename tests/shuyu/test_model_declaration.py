"""What a model job declares, read from its source; the target it may name; the holdout split."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pyarrow as pa
import pytest

from policies.errors import ShuyuError
from sandbox.agent import api as agent_api
from sandbox.agent.api import Artifacts, HoldoutSpec, JobApi
from sandbox.agent.protocol import FrameReader
from sandbox.agent.restricted import run_python
from shuyu.demo import TRAIN_SCRIPT
from shuyu.model_jobs import holdout_mask, read_declaration, target_sql

EMIT = 'shuyu.emit_model("m", model, target="income >= 30000")\n'


def test_the_declaration_is_read_from_the_source_without_running_it() -> None:
    decl = read_declaration("model = 1\n" + EMIT, ["residents"])
    assert (decl.name, decl.table, decl.target) == ("m", "residents", "income >= 30000")
    positional = read_declaration('shuyu.emit_model("m", est, "sex", "b")\n', ["a", "b"])
    assert (positional.table, positional.target) == ("b", "sex")
    assert read_declaration('shuyu.emit_model("m", est)\n', ["a"]).target is None


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("x = 1\n", "exactly one model"),
        (EMIT + EMIT, "exactly one model"),
        (EMIT + "shuyu.emit_metric('auc', 0.7)\n", "shuyu.emit_metric"),
        (EMIT + "shuyu.emit_table('rows', df)\n", "shuyu.emit_table"),
        ('t = "income > 1"\nshuyu.emit_model("m", est, target=t)\n', "not a string literal"),
        ("shuyu.emit_model(name, est)\n", "not a string literal"),
        ('shuyu.emit_model("m", est, table="other")\n', "not a dataset of the scenario"),
        ("def f(:\n", "does not parse"),
    ],
)
def test_a_model_job_that_declares_badly_is_refused_before_it_runs(code: str, says: str) -> None:
    with pytest.raises(ShuyuError) as exc:
        read_declaration(code, ["residents"])
    assert exc.value.code == "service.model_job_invalid"
    assert says in exc.value.message


def test_with_several_datasets_the_table_must_be_named() -> None:
    with pytest.raises(ShuyuError, match="several datasets"):
        read_declaration(EMIT, ["a", "b"])


def test_a_target_is_a_column_or_an_expression_of_columns_quoted_for_duckdb() -> None:
    assert target_sql("benefit_type", ["benefit_type"]) == '"benefit_type"'
    assert (
        target_sql("income >= 30000 AND sex IN ('女')", ["income", "sex"])
        == '"income" >= 30000 AND "sex" IN (\'女\')'
    )


@pytest.mark.parametrize(
    "target",
    [
        "read_csv('/etc/passwd')",
        "income > (SELECT 1)",
        "getvariable('shuyu_pseudonym_ipad')",
        "t.income > 1",
        "person_id_raw = 1",
        "income >",
    ],
)
def test_anything_but_columns_literals_and_operators_is_refused_as_a_target(target: str) -> None:
    with pytest.raises(ShuyuError) as exc:
        target_sql(target, ["income", "sex"])
    assert exc.value.code == "service.model_job_invalid"


@pytest.mark.parametrize(
    ("rows", "fraction", "seed"), [(0, 0.2, 1), (1000, 0.2, 7), (9887, 0.3, 2**31 - 1)]
)
def test_the_trusted_split_is_the_agents_split(rows: int, fraction: float, seed: int) -> None:
    assert np.array_equal(
        holdout_mask(rows, fraction, seed), agent_api.holdout_mask(rows, fraction, seed)
    )


def test_the_example_script_trains_under_restricted_python_and_emits_what_it_declares() -> None:
    rng = np.random.default_rng(0)
    n = 600
    sample = pa.table(
        {
            "person_id": [f"{i:064x}" for i in rng.integers(0, 10**9, n)],
            "sex": rng.choice(["女", "男"], n),
            "age": rng.choice(["20-29", "60-69", "80-89"], n),
            "district": rng.choice(["芙蓉区", "天心区", "岳麓区"], n),
            "income": rng.lognormal(10.3, 0.9, n),
            "benefit_type": rng.choice(["低保", "临时救助"], n),
            "visits": rng.integers(0, 9, n),
        }
    )
    source = TRAIN_SCRIPT.read_text(encoding="utf-8")
    decl = read_declaration(source, ["residents"])
    arts = Artifacts()
    run_python(source, JobApi({"residents": sample}, {"residents": HoldoutSpec(0.2, 3)}, arts))
    frames = FrameReader(10**8).feed(b"".join(arts.frames))
    assert [(f.kind, f.name) for f in frames] == [("model", decl.name)]
    assert decl.target is not None
    assert target_sql(decl.target, sample.column_names) == '"income" >= 30000'
    schema = json.loads(zipfile.ZipFile(io.BytesIO(frames[0].payload)).read("schema.json"))
    assert schema["__class__"] == "Pipeline"
