"""The frame format the agent and the host share."""

from __future__ import annotations

import io
import struct

import pytest

from sandbox.agent.protocol import FrameReader, ProtocolError, encode_frame, read_frames


def test_frames_round_trip_even_when_split_into_single_bytes() -> None:
    data = encode_frame(b"T", "result", b"x" * 300) + encode_frame(b"Z")
    reader = FrameReader(1000)
    frames = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert [(f.kind, f.name, len(f.payload)) for f in frames] == [
        ("table", "result", 300),
        ("done", "", 0),
    ]


def test_a_frame_claiming_more_than_the_limit_is_refused_before_buffering() -> None:
    header = struct.pack(">cH", b"T", 1) + b"r" + struct.pack(">Q", 10**12)
    with pytest.raises(ProtocolError, match="larger than allowed"):
        FrameReader(1024).feed(header)


def test_unknown_frame_types_and_truncated_streams_are_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown frame type"):
        FrameReader(100).feed(b"Q\x00\x00")
    with pytest.raises(ProtocolError, match="ends inside a frame"):
        read_frames(io.BytesIO(encode_frame(b"T", "t", b"abc")[:-1]), 100)
