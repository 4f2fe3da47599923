"""The host accepts only well-formed answers; error codes map to our errors."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sandbox.agent.api import ipc_bytes
from sandbox.agent.protocol import Frame, encode_frame
from sandbox.errors import JobFailed, LimitExceeded, OutputRejected
from sandbox.outcome import OutputCollector, to_output

TABLE = ipc_bytes(pa.table({"n": [1]}))
Z = Frame(b"Z", "", b"")


def test_a_sql_answer_is_exactly_one_result_table() -> None:
    out = to_output([Frame(b"T", "result", TABLE), Z], "sql", 10)
    assert out.result.to_pylist() == [{"n": 1}]
    for frames in (
        [Frame(b"T", "other", TABLE), Z],
        [Frame(b"T", "result", TABLE), Frame(b"M", "m", b"1"), Z],
        [Frame(b"T", "result", TABLE), Frame(b"T", "result", TABLE), Z],
        [Frame(b"K", "m", b"PK"), Z],
    ):
        with pytest.raises(OutputRejected):
            to_output(frames, "sql", 10)


@pytest.mark.parametrize(
    "frame",
    [
        Frame(b"T", "t", b"not arrow"),
        Frame(b"T", "t", TABLE + b"trailing"),
        Frame(b"M", "m", b'"text"'),
        Frame(b"M", "m", b"NaN"),
        Frame(b"M", "m", b"true"),
        Frame(b"K", "m", b"\x80\x04pickle"),
    ],
)
def test_malformed_artifacts_are_rejected(frame: Frame) -> None:
    with pytest.raises(OutputRejected):
        to_output([frame, Z], "python", 10)


def test_an_unfinished_answer_or_an_unknown_error_code_is_rejected() -> None:
    with pytest.raises(OutputRejected):
        to_output([Frame(b"T", "result", TABLE)], "sql", 10)
    with pytest.raises(OutputRejected):
        to_output([Frame(b"E", "the secret value is 42", b"")], "sql", 10)


def test_error_codes_become_our_errors() -> None:
    with pytest.raises(JobFailed) as failed:
        to_output([Frame(b"E", "sql.not_allowed", b"")], "sql", 0)
    assert failed.value.code == "sandbox.sql.not_allowed"
    with pytest.raises(LimitExceeded) as limit:
        to_output([Frame(b"E", "limit.memory", b"")], "sql", 0)
    assert limit.value.details == {"limit": "memory"}


def test_the_collector_stops_at_the_output_limit_and_keeps_nothing() -> None:
    c = OutputCollector(100)
    assert not c.feed(encode_frame(b"H", "", b"{}"))
    assert c.feed(encode_frame(b"T", "result", b"x" * 200))  # announced too big
    assert c.over_limit and c.frames == []
    c2 = OutputCollector(100)
    assert c2.feed(b"T" + b"\x00" * 120)  # too many bytes, whatever they claim
    assert c2.over_limit
