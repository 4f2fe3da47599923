"""The agent's wire protocol: one JSON job line in on stdin, framed answers out on stdout.

In (host → agent), one line of UTF-8 JSON per job::

    {"v": 1, "job_id": "J-…", "kind": "sql" | "python" | "check", "code": "…",
     "datasets": {"<table>": {"path": "<dataset id>/v<n>", "columns": ["a", "b"]}},
     "keys": {"<key id>": "<base64 data key>"},
     "limits": {"memory_bytes": …, "threads": …},
     "holdout": {"<table>": {"fraction": 0.2, "seed": 123}},      # optional
     "prelude": {"statements": [["<sql>", ["<base64>"]]],         # optional, Python jobs:
                 "tables": {"<table>": "<made table>"}},          # see agent/prelude.py
     "check": {...}}               # check jobs only: see agent/modelcheck/job.py

Out (agent → host), a sequence of frames. Every frame is::

    type      1 byte   (ASCII letter, see FRAME_TYPES)
    name_len  2 bytes  big-endian unsigned
    name      name_len bytes of UTF-8 (an artifact name, or an error code)
    size      8 bytes  big-endian unsigned
    payload   size bytes

The agent writes ``H`` (hello) once when it is ready for jobs (its imports done); then for
each job any number of ``T``/``M``/``K`` frames followed by exactly one ``Z`` (done) or one
``E`` (failed, name = an error code from :data:`ERROR_CODES`, empty payload). A SQL job's
answer is a single ``T`` frame named ``result``; a check job's (trusted model checks, no
operator code) a single ``R`` frame named ``report``.

This module is shared: the host imports it to parse what the agent writes, so the two
cannot drift apart. It imports nothing but the standard library.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "ERROR_CODES",
    "FRAME_TYPES",
    "NAME_RE",
    "PROTOCOL_VERSION",
    "Frame",
    "FrameReader",
    "FrameTooLarge",
    "ProtocolError",
    "encode_frame",
    "hello_payload",
    "read_frames",
]

PROTOCOL_VERSION = 1

FRAME_TYPES: dict[bytes, str] = {
    b"H": "hello",  # payload: {"protocol": 1}
    b"T": "table",  # payload: an Arrow IPC stream
    b"M": "metric",  # payload: a JSON number
    b"K": "model",  # payload: a skops archive (a zip), never a pickle
    b"R": "report",  # payload: a check job's report, JSON (agent/modelcheck/job.py)
    b"E": "error",  # name: an error code; payload: empty
    b"Z": "done",  # payload: empty
}

# Artifact names: short identifiers, so a name cannot smuggle data out.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Every code the agent may report. The host accepts no other, so an error cannot carry
# data values out; the host holds the human message and hint for each.
ERROR_CODES: frozenset[str] = frozenset(
    {
        "job.invalid",  # the job line is not a valid job
        "data.unknown_table",  # the code names a table the job was not given
        "data.unavailable",  # a dataset file is missing or unreadable
        "data.key_missing",  # a column's data key was not released to this job
        "sql.parse",  # the SQL does not parse
        "sql.not_allowed",  # not exactly one SELECT, or a refused operation
        "sql.error",  # the query failed while running
        "python.compile",  # the Python does not compile under RestrictedPython
        "python.not_allowed",  # a refused import, attribute or operation
        "python.error",  # the Python raised while running
        "python.bad_artifact",  # an emitted table, metric or model is not acceptable
        "limit.memory",  # ran out of memory inside the sandbox
        "limit.pids",  # could not start a thread or process
        "limit.scratch",  # the scratch space is full
        "agent.internal",  # a bug in the agent
    }
)

_HEAD = struct.Struct(">cH")
_SIZE = struct.Struct(">Q")


class ProtocolError(Exception):
    """The byte stream is not a well-formed sequence of frames."""


class FrameTooLarge(ProtocolError):
    """A frame announces more bytes than the reader may take (an output limit)."""


@dataclass(frozen=True)
class Frame:
    type: bytes
    name: str
    payload: bytes

    @property
    def kind(self) -> str:
        return FRAME_TYPES[self.type]


def encode_frame(type_: bytes, name: str = "", payload: bytes = b"") -> bytes:
    if type_ not in FRAME_TYPES:
        raise ProtocolError(f"unknown frame type {type_!r}")
    raw = name.encode()
    return _HEAD.pack(type_, len(raw)) + raw + _SIZE.pack(len(payload)) + payload


def hello_payload() -> bytes:
    return json.dumps({"protocol": PROTOCOL_VERSION}).encode()


class FrameReader:
    """Incremental decoder: feed bytes as they arrive, take whole frames out.

    ``max_frame_bytes`` bounds one frame's payload before it is buffered, so a lying size
    field cannot make the reader allocate more than the caller allows.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return out
            out.append(frame)

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def _next(self) -> Frame | None:
        buf = self._buf
        if len(buf) < _HEAD.size:
            return None
        type_, name_len = _HEAD.unpack_from(buf, 0)
        if type_ not in FRAME_TYPES:
            raise ProtocolError("unknown frame type")
        off = _HEAD.size + name_len
        if len(buf) < off + _SIZE.size:
            return None
        (size,) = _SIZE.unpack_from(buf, off)
        if size > self._max:
            raise FrameTooLarge("frame larger than allowed")
        end = off + _SIZE.size + size
        if len(buf) < end:
            return None
        try:
            name = bytes(buf[_HEAD.size : off]).decode()
        except UnicodeDecodeError:
            raise ProtocolError("frame name is not UTF-8") from None
        frame = Frame(type_, name, bytes(buf[off + _SIZE.size : end]))
        del buf[:end]
        return frame


def read_frames(stream: BinaryIO, max_frame_bytes: int) -> list[Frame]:
    """Every frame of a finished stream (tests and the fake executor)."""
    reader = FrameReader(max_frame_bytes)
    frames = reader.feed(stream.read())
    if reader.pending_bytes:
        raise ProtocolError("stream ends inside a frame")
    return frames
