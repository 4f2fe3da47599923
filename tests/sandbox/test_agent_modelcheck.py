"""Check jobs in the agent: the model checks run next to the decrypted sample, and only a
report comes back. The agent runs in this process here (the real image runs the same code:
tests/shuyu/test_model_jobs.py); its report must equal the checks run directly on the same
rows, and the host must refuse any report that is not one."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from egress.errors import ModelCheckError
from egress.models import ModelData, ModelThresholds, check_model, dump_model, read_report
from sandbox.agent.main import Agent
from sandbox.agent.modelcheck.job import CheckRequest, parse_request
from sandbox.agent.protocol import Frame, FrameReader, encode_frame
from sandbox.errors import OutputRejected
from sandbox.job import JobSpec, Prelude
from sandbox.limits import SandboxLimits
from sandbox.outcome import to_output
from tests.sandbox.conftest import DemoData

FEATURES = ["age", "salary"]
COLUMNS = ("region", "age", "salary")
# the trusted split: a fifth of the ages held out; the target over each side is the row's
# number mod 7, which no feature explains: only a model of single rows fits it
TARGET_SQL = "(CAST((salary - 1000) / 7 AS BIGINT) % 7 = 0)"
STATEMENTS = (
    ("CREATE TABLE tr AS SELECT region, age, salary FROM people WHERE age % 5 <> 0", ()),
    ("CREATE TABLE ho AS SELECT region, age, salary FROM people WHERE age % 5 = 0", ()),
    (f"CREATE TABLE tr__y AS SELECT {TARGET_SQL} AS y FROM tr", ()),
    (f"CREATE TABLE ho__y AS SELECT {TARGET_SQL} AS y FROM ho", ()),
)


def _target(frame: pd.DataFrame) -> Any:
    return (((frame["salary"] - 1000) / 7).round().astype("int64") % 7 == 0).to_numpy()


def _sides(demo: DemoData) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = demo.table.to_pandas()
    held = frame["age"] % 5 == 0
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


def _request(blob: bytes, **changes: Any) -> CheckRequest:
    fields: dict[str, Any] = {
        "model": blob,
        "train": "tr",
        "holdout": "ho",
        "target": ("tr__y", "ho__y"),
        "unit_column": None,
        "identifiers": ("region",),
        "thresholds": ModelThresholds(),
    }
    return CheckRequest(**{**fields, **changes})


def _spec(demo: DemoData, request: CheckRequest, code: str = "", **kw: Any) -> JobSpec:
    tables = {t: t for t in request.tables}
    return demo.spec(
        code,
        kind="check",
        columns=COLUMNS,
        prelude=kw.pop("prelude", Prelude(STATEMENTS, tables)),
        check=kw.pop("check", request.to_json()),
        **kw,
    )


def _frames(demo: DemoData, spec: JobSpec) -> list[Frame]:
    line = bytes(spec.job_line(SandboxLimits()))
    return FrameReader(10**8).feed(b"".join(Agent(demo.store, keep_tables=False).handle(line)))


def _fitted(model: Any, demo: DemoData) -> tuple[bytes, pd.DataFrame, pd.DataFrame]:
    train, holdout = _sides(demo)
    model.fit(train[FEATURES], _target(train))
    return dump_model(model), train, holdout


def _shape(report: Any) -> dict[str, Any]:
    """The report without its timings (they differ between any two runs)."""
    body: dict[str, Any] = report.to_dict()
    body.pop("timings_s")
    for found in body["findings"]:
        found["metrics"] = {k: v for k, v in found["metrics"].items() if "seconds" not in k}
    return body


@pytest.mark.parametrize(
    "model",
    [LogisticRegression(max_iter=500), DecisionTreeClassifier(random_state=0)],
    ids=["logreg", "unpruned_tree"],
)
def test_the_check_job_reports_what_the_checks_say_on_the_same_rows(
    demo_data: DemoData, model: Any
) -> None:
    blob, train, holdout = _fitted(model, demo_data)
    frames = _frames(demo_data, _spec(demo_data, _request(blob)))
    out = to_output(frames, "check", 0)
    sandboxed = read_report(out.reports["report"])
    direct = check_model(
        blob,
        ModelData(train[FEATURES], _target(train)),
        ModelData(holdout[FEATURES], _target(holdout)),
        {"region": sorted(set(train["region"]) | set(holdout["region"]))},
    )
    assert _shape(sandboxed) == _shape(direct)
    assert sandboxed.card.training_rows == len(train) and sandboxed.card.holdout_rows == len(
        holdout
    )
    if isinstance(model, DecisionTreeClassifier):
        assert sandboxed.verdict == "block"
        assert "model.small_leaves" in {f.check for f in sandboxed.blocking}
    else:
        assert sandboxed.verdict == "review"


def test_the_report_carries_no_row_and_no_identifier_value(demo_data: DemoData) -> None:
    blob, _, _ = _fitted(LogisticRegression(max_iter=500), demo_data)
    frames = _frames(demo_data, _spec(demo_data, _request(blob)))
    assert [f.kind for f in frames] == ["report", "done"]
    text = frames[0].payload.decode()
    for region in ("north", "south", "east", "west"):
        assert region not in text


class _Boom:
    """A pickle that runs code when loaded: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_a_pickle_is_blocked_unloaded_and_its_code_never_runs(
    demo_data: DemoData, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Boom(marker))
    frames = _frames(demo_data, _spec(demo_data, _request(blob)))
    report = read_report(to_output(frames, "check", 0).reports["report"])
    assert not marker.exists()
    assert report.verdict == "block" and report.card.model_class == "unknown"
    found = {f.check: f for f in report.findings}
    assert "pickle" in found["model.format"].evidence


def test_a_model_naming_columns_the_sample_lacks_is_blocked(demo_data: DemoData) -> None:
    train, _ = _sides(demo_data)
    renamed = train[FEATURES].rename(columns={"salary": "wage"})
    blob = dump_model(LogisticRegression().fit(renamed, _target(train)))
    frames = _frames(demo_data, _spec(demo_data, _request(blob)))
    report = read_report(to_output(frames, "check", 0).reports["report"])
    assert [f.check for f in report.blocking] == ["model.features_unknown"]


def _error(frames: list[Frame]) -> str:
    assert len(frames) == 1 and frames[0].kind == "error", [f.kind for f in frames]
    return frames[0].name


def test_a_check_job_runs_no_code_it_is_sent(demo_data: DemoData) -> None:
    blob, _, _ = _fitted(LogisticRegression(max_iter=500), demo_data)
    spec = _spec(demo_data, _request(blob), code="shuyu.emit_metric('x', 1)")
    assert _error(_frames(demo_data, spec)) == "job.invalid"


@pytest.mark.parametrize(
    "change",
    [
        {"prelude": None},  # the sample must be made by trusted statements
        {"check": {"model": "not base64!", "train": "tr", "holdout": "ho"}},
        {"check": {"model": "", "train": "tr", "holdout": "nowhere"}},  # not made
        {"check": {"model": "", "train": "tr", "holdout": "ho", "thresholds": {"seed": "x"}}},
        {"check": {"model": "", "train": "tr", "holdout": "ho", "thresholds": {"nope": 1}}},
    ],
)
def test_a_malformed_check_job_is_refused(demo_data: DemoData, change: dict[str, Any]) -> None:
    spec = _spec(demo_data, _request(b""), **change)
    assert _error(_frames(demo_data, spec)) == "job.invalid"


def test_thresholds_and_requests_round_trip() -> None:
    limits = ModelThresholds(min_cell_size=25, max_dp_epsilon=0.5, dp_required=True)
    request = _request(b"PK\x03\x04", thresholds=limits, unit_column="__unit")
    assert parse_request(json.loads(json.dumps(request.to_json()))) == request


# --- what the host accepts back -------------------------------------------------------------


def _report_frames(payload: bytes) -> list[Frame]:
    return [Frame(b"R", "report", payload), Frame(b"Z", "", b"")]


def test_only_a_check_job_may_answer_with_a_report_and_only_with_one() -> None:
    payload = b"{}"
    with pytest.raises(OutputRejected):
        to_output(_report_frames(payload), "python", 0)
    with pytest.raises(OutputRejected):
        to_output([Frame(b"Z", "", b"")], "check", 0)
    with pytest.raises(OutputRejected):
        to_output([Frame(b"M", "x", b"1"), *_report_frames(payload)], "check", 0)
    assert encode_frame(b"R", "report", payload)  # a known frame type on the wire


def _good_report(demo: DemoData) -> dict[str, Any]:
    blob, _, _ = _fitted(DecisionTreeClassifier(random_state=0), demo)
    frames = _frames(demo, _spec(demo, _request(blob)))
    body: dict[str, Any] = json.loads(frames[0].payload)
    return body


@pytest.mark.parametrize(
    "tamper",
    [
        "verdict_review_despite_a_block",
        "check_outside_the_model_family",
        "evidence_too_long",
        "not_json",
        "too_large",
        "negative_epsilon",
    ],
)
def test_the_host_refuses_a_report_that_is_not_one(demo_data: DemoData, tamper: str) -> None:
    body = _good_report(demo_data)
    assert read_report(json.dumps(body).encode()).verdict == "block"
    if tamper == "verdict_review_despite_a_block":
        body["verdict"] = "review"
    elif tamper == "check_outside_the_model_family":
        body["findings"][0]["check"] = "row_level"
    elif tamper == "evidence_too_long":
        body["findings"][0]["evidence"] = "x" * 10_000
    elif tamper == "negative_epsilon":
        body["dp_epsilon"] = -1.0
    payload = json.dumps(body).encode()
    if tamper == "not_json":
        payload = b"\x00" + payload
    elif tamper == "too_large":
        payload = payload + b" " * (2 * 1024 * 1024)
    with pytest.raises(ModelCheckError) as err:
        read_report(payload)
    assert err.value.code == "egress.model_check" and err.value.hint


def test_the_holdout_side_never_trains_the_model(demo_data: DemoData) -> None:
    """The split the check job is sent keeps the sides apart: the trusted refit on the
    training side reproduces the model exactly (model.refit is info, not review)."""
    blob, _, _ = _fitted(LogisticRegression(max_iter=500), demo_data)
    frames = _frames(demo_data, _spec(demo_data, _request(blob)))
    report = read_report(to_output(frames, "check", 0).reports["report"])
    refit = next(f for f in report.findings if f.check == "model.refit")
    assert refit.severity == "info" and refit.metrics["max_relative_distance"] == 0.0
