"""Turn what came out of a sandbox into a validated :class:`JobOutput` or one of our errors.

Everything that leaves the container is output (design rule 4), so the host accepts only:

* frames that parse (:mod:`sandbox.agent.protocol`), within ``max_output_bytes`` in all;
* tables that are whole, valid Arrow IPC streams; metrics that are finite numbers; models
  that are skops archives (zip files with a ``schema.json``), never pickles;
* error codes from the agent's fixed list — the human message and hint are written here,
  by trusted code, so a failure cannot carry data values out.

The agent's stderr is never read (not even attached), and the container logs nothing.
"""

from __future__ import annotations

import io
import json
import math
import zipfile

import pyarrow as pa

from sandbox.agent.protocol import ERROR_CODES, Frame, FrameReader, FrameTooLarge, ProtocolError
from sandbox.errors import JobFailed, LimitExceeded, OutputRejected, SandboxError
from sandbox.job import JobKind, JobOutput

__all__ = ["AGENT_ERRORS", "OutputCollector", "job_failed", "limit_exceeded", "to_output"]

_LIMIT_TEXT: dict[str, tuple[str, str]] = {
    "memory": ("the job ran out of memory and was killed", "use less data or fewer columns"),
    "pids": ("the job hit the process/thread limit", "do not start threads or processes"),
    "cpu": ("the job used more CPU than allowed", "simplify the computation"),
    "time": ("the job ran past its wall-clock limit and was killed", "make it faster"),
    "scratch": ("the job filled its scratch space", "write less temporary data"),
    "output": (
        "the job's output passed the size limit; it was killed and nothing was accepted",
        "return aggregates, not rows",
    ),
}

AGENT_ERRORS: dict[str, tuple[str, str]] = {
    "job.invalid": ("the sandbox could not read the job", "this is a bug in shuyu; report it"),
    "data.unknown_table": ("the code names a table this job was not given", "use granted names"),
    "data.unavailable": ("a dataset file is missing or unreadable", "re-import the dataset"),
    "data.key_missing": (
        "the job asked for a column whose data key was not released to it",
        "read only the columns the scenario authorizes",
    ),
    "sql.parse": ("the SQL does not parse", "check the syntax"),
    "sql.not_allowed": (
        "the SQL is not a single SELECT, or uses a refused operation (files, extensions, "
        "settings, ATTACH, COPY)",
        "send exactly one SELECT over the granted tables",
    ),
    "sql.error": (
        "the query failed while running (the engine's message is withheld: it could quote "
        "data values)",
        "check types, casts and column names",
    ),
    "python.compile": ("the Python does not compile under RestrictedPython", "no names with _"),
    "python.not_allowed": (
        "the Python used a refused import, attribute or builtin",
        "use only the shuyu object, math, statistics, numpy, pandas and the allowed sklearn "
        "modules; no file I/O, no underscore names, no str.format",
    ),
    "python.error": ("the Python raised an error while running (message withheld)", "debug it "
                     "on the desensitized sample"),
    "python.bad_artifact": (
        "an emitted table, metric or model is not acceptable",
        "emit DataFrames or Arrow tables, finite numbers, scikit-learn estimators; names "
        "are lower-case identifiers, each once",
    ),
    "agent.internal": ("the sandbox agent failed", "this is a bug in shuyu; report it"),
}  # fmt: skip

_LIMIT_CODES = {"limit.memory": "memory", "limit.pids": "pids", "limit.scratch": "scratch"}


def limit_exceeded(limit: str, **details: object) -> LimitExceeded:
    message, hint = _LIMIT_TEXT[limit]
    return LimitExceeded(
        message, hint=hint, code=f"sandbox.limit.{limit}", details={"limit": limit, **details}
    )


def job_failed(agent_code: str) -> SandboxError:
    """The host-side error for an agent error code (only codes from the fixed list)."""
    if agent_code in _LIMIT_CODES:
        return limit_exceeded(_LIMIT_CODES[agent_code])
    message, hint = AGENT_ERRORS.get(agent_code, AGENT_ERRORS["agent.internal"])
    return JobFailed(
        message, hint=hint, code=f"sandbox.{agent_code}", details={"agent_code": agent_code}
    )


class OutputCollector:
    """Counts and decodes one job's answer as it streams in.

    ``feed`` returns True once the answer is complete (a ``Z`` or ``E`` frame) or the
    output limit was passed (``over_limit``); the caller then stops reading and, when over
    the limit, kills the sandbox.
    """

    def __init__(self, max_output_bytes: int) -> None:
        self.max_output_bytes = max_output_bytes
        self.total_bytes = 0
        self.frames: list[Frame] = []
        self.over_limit = False
        self.done = False
        self.malformed = False
        self.hello = False
        self._reader = FrameReader(max_output_bytes)

    def feed(self, data: bytes) -> bool:
        self.total_bytes += len(data)
        if self.total_bytes > self.max_output_bytes:
            self.over_limit = True
            self.frames.clear()  # nothing of an oversized answer is kept
            return True
        try:
            frames = self._reader.feed(data)
        except FrameTooLarge:
            self.over_limit = True  # announced, not yet sent: stop before it arrives
            self.frames.clear()
            return True
        except ProtocolError:
            self.malformed = True
            return True
        for frame in frames:
            if frame.type == b"H" and not self.hello and not self.frames:
                self.hello = True
                continue
            self.frames.append(frame)
            if frame.type in (b"Z", b"E"):
                self.done = True
        return self.done

    def next_job(self) -> None:
        """Reset for the next job on the same (warm) agent."""
        self.total_bytes = 0
        self.frames = []
        self.done = False


def to_output(frames: list[Frame], kind: JobKind, output_bytes: int) -> JobOutput:
    """Validate a complete answer; raises the job's error, or OutputRejected."""
    if not frames or frames[-1].type not in (b"Z", b"E"):
        raise _rejected("the answer did not end properly")
    last = frames[-1]
    if last.type == b"E":
        if len(frames) != 1 or last.name not in ERROR_CODES or last.payload:
            raise _rejected("the error frame is not a known code")
        raise job_failed(last.name)
    tables: dict[str, pa.Table] = {}
    metrics: dict[str, float] = {}
    models: dict[str, bytes] = {}
    reports: dict[str, bytes] = {}
    for f in frames[:-1]:
        if f.type == b"T" and f.name not in tables:
            tables[f.name] = _arrow(f.payload)
        elif f.type == b"M" and f.name not in metrics:
            metrics[f.name] = _number(f.payload)
        elif f.type == b"K" and f.name not in models and kind == "python":
            models[f.name] = _skops(f.payload)
        elif f.type == b"R" and f.name == "report" and not reports and kind == "check":
            reports[f.name] = f.payload  # read strictly by egress.models.read_report
        else:
            raise _rejected("an unexpected or repeated frame")
    if kind == "sql" and (set(tables) != {"result"} or metrics):
        raise _rejected("a SQL job must return exactly one result table")
    if kind == "check" and (tables or metrics or models or not reports):
        raise _rejected("a check job must return exactly one report")
    return JobOutput(
        tables=tables, metrics=metrics, models=models, reports=reports, output_bytes=output_bytes
    )


def _arrow(payload: bytes) -> pa.Table:
    try:
        source = pa.BufferReader(payload)
        table = pa.ipc.open_stream(source).read_all()
        if source.tell() != len(payload):
            raise ValueError("trailing bytes")
    except (pa.ArrowException, ValueError):
        raise _rejected("a table is not a valid Arrow IPC stream") from None
    return table


def _number(payload: bytes) -> float:
    try:
        value = json.loads(payload)
    except ValueError:
        raise _rejected("a metric is not JSON") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _rejected("a metric is not a finite number")
    return float(value)


def _skops(payload: bytes) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        raise _rejected("a model is not a skops archive") from None
    if "schema.json" not in names or any(n.endswith((".pkl", ".pickle")) for n in names):
        raise _rejected("a model is not a skops archive")
    return payload


def _rejected(why: str) -> OutputRejected:
    return OutputRejected(
        f"the sandbox's output was rejected: {why}; nothing of it was accepted",
        hint="this is a bug in shuyu or an attack on it; the attempt is audited",
    )
