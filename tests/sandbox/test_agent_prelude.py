"""The agent's prelude: trusted statements (the R1.5 sample view) before a Python job's code."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pyarrow as pa
import pytest

from policies.desensitize import SampleColumn, load_desensitize_rules, sample_view, unit_sampled
from policies.scenario import SampleSettings
from sandbox.agent.api import holdout_mask
from sandbox.agent.main import Agent
from sandbox.agent.prelude import parse_prelude
from sandbox.agent.protocol import Frame, FrameReader
from sandbox.job import Prelude
from sandbox.limits import SandboxLimits
from tests.sandbox.conftest import DemoData

COLUMNS = [
    SampleColumn("region", "string", "identifier", "L3"),
    SampleColumn("age", "int", "quasi_identifier", "L3"),
    SampleColumn("salary", "float", "sensitive", "L3"),
]

# the job reports what it can see: how many rows, which columns, and what the region looks like
SEE = (
    "df = shuyu.table('people')\n"
    "shuyu.emit_metric('rows', len(df))\n"
    "shuyu.emit_metric('region_chars', max(len(v) for v in df['region']))\n"
    "shuyu.emit_table('columns', df.head(0))\n"
)


def _view(rate: float = 1.0) -> Any:
    return sample_view(
        source="people",
        columns=COLUMNS,
        scope={"region", "age", "salary"},
        settings=SampleSettings(rate=rate),
        rules=load_desensitize_rules(),
        unit_column="region",
    )


def _prelude(key: bytes, rate: float = 1.0) -> Prelude:
    view = _view(rate)
    statements = tuple((sql, tuple(params)) for sql, params in view.statements(key))
    return Prelude(statements, {"people": view.name})


def _run(
    demo: DemoData, code: str, kind: str = "python", keep: bool = False, **extra: Any
) -> list[Frame]:
    spec = demo.spec(code, kind=kind, columns=("region", "age", "salary"), **extra)  # type: ignore[arg-type]
    line = bytes(spec.job_line(SandboxLimits()))
    return FrameReader(10**8).feed(b"".join(Agent(demo.store, keep_tables=keep).handle(line)))


def _metrics(frames: list[Frame]) -> dict[str, float]:
    assert frames[-1].kind == "done", frames[-1].name
    return {f.name: json.loads(f.payload) for f in frames if f.kind == "metric"}


@pytest.mark.parametrize("keep", [False, True], ids=["cold", "warm"])
def test_a_python_job_sees_only_the_desensitized_sample(demo_data: DemoData, keep: bool) -> None:
    # warm: the prelude runs over Arrow tables exported from the session's held columns
    frames = _run(demo_data, SEE, keep=keep, prelude=_prelude(secrets.token_bytes(32)))
    metrics = _metrics(frames)
    assert metrics["rows"] == demo_data.table.num_rows  # rate 1: everyone, desensitized
    assert metrics["region_chars"] == 64  # pseudonymized: HMAC-SHA256 hex, not "north"
    table = next(f for f in frames if f.name == "columns")
    schema = pa.ipc.open_stream(table.payload).schema
    # salary is sensitive at L3 (kept); age is generalized to a band
    assert schema.names == ["region", "age", "salary"]
    assert pa.types.is_large_string(schema.field("age").type) or pa.types.is_string(
        schema.field("age").type
    )


def test_without_a_prelude_the_job_sees_the_raw_table(demo_data: DemoData) -> None:
    metrics = _metrics(_run(demo_data, SEE))
    assert metrics["region_chars"] == len("north")


def test_sampling_drops_units_and_the_holdout_applies_to_the_sample(demo_data: DemoData) -> None:
    # four regions are the units: pick a key whose half-rate sample keeps some, not all
    regions = ("north", "south", "east", "west")
    key = next(
        k
        for k in (bytes([i]) * 32 for i in range(256))
        if 0 < sum(unit_sampled(k, r, 0.5) for r in regions) < 4
    )
    expected = 250 * sum(unit_sampled(key, r, 0.5) for r in regions)
    sampled = _metrics(_run(demo_data, SEE, prelude=_prelude(key, rate=0.5)))["rows"]
    assert sampled == expected
    held = _metrics(
        _run(demo_data, SEE, prelude=_prelude(key, rate=0.5), holdout={"people": (0.3, 11)})
    )["rows"]
    assert held == sampled - int(holdout_mask(int(sampled), 0.3, 11).sum())


def test_the_key_is_gone_before_operator_code_runs(demo_data: DemoData) -> None:
    # operator code has no DuckDB of its own; the prelude's connection (with the key bound
    # to it while it ran) is closed, and the statements reset the variables before that
    view = _view()
    assert any("RESET VARIABLE" in sql for sql, _ in view.statements(b"k" * 32))
    frames = _run(demo_data, "import duckdb\n", prelude=_prelude(b"k" * 32))
    assert frames[-1].kind == "error" and frames[-1].name == "python.not_allowed"


def test_a_prelude_on_a_sql_job_is_refused(demo_data: DemoData) -> None:
    frames = _run(demo_data, "SELECT 1 AS x", kind="sql", prelude=_prelude(b"k" * 32))
    assert [(f.kind, f.name) for f in frames] == [("error", "job.invalid")]


def test_a_failing_prelude_is_an_internal_error_and_carries_no_message(
    demo_data: DemoData,
) -> None:
    bad = Prelude((("SELECT CAST(region AS INTEGER) FROM people", ()),), {"people": "nope"})
    frames = _run(demo_data, SEE, prelude=bad)
    assert [(f.kind, f.name, f.payload) for f in frames] == [("error", "agent.internal", b"")]


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"statements": [], "tables": {}},
        {"statements": [["SELECT 1"]], "tables": {"t": "t"}},
        {"statements": [["SELECT ?", ["not base64!"]]], "tables": {"t": "t"}},
        {"statements": [[1, []]], "tables": {"t": "t"}},
        {"statements": [], "tables": {"t": 1}},
    ],
)
def test_a_malformed_prelude_is_refused(raw: object) -> None:
    from sandbox.agent.errors import AgentError

    with pytest.raises(AgentError) as exc:
        parse_prelude(raw)
    assert exc.value.code == "job.invalid"


def test_the_prelude_round_trips_and_never_prints_its_parameters(demo_data: DemoData) -> None:
    key = secrets.token_bytes(32)
    prelude = _prelude(key)
    spec = demo_data.spec("x = 1", kind="python", prelude=prelude)
    parsed = parse_prelude(json.loads(bytes(spec.job_line(SandboxLimits())))["prelude"])
    assert parsed is not None
    assert (parsed.statements, parsed.tables) == (prelude.statements, prelude.tables)
    pads = [p for _, params in prelude.statements for p in params]
    assert pads and all(p.hex() not in repr(spec) and p.hex() not in repr(prelude) for p in pads)
