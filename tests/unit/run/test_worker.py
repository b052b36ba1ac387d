"""The frames a library build's RUN worker reads its layers in: a stream that ends without the end
frame (its source failed, e.g. a digest mismatch found at the end) is an error, never a short layer."""

from __future__ import annotations

import os
import struct

import pytest

from dockwright.model.errors import DockwrightError
from dockwright.run.worker import _Pipe

FRAME = struct.Struct(">Q")


def _pipe(data: bytes) -> int:
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return read_end


def test_a_complete_stream_gives_its_chunks() -> None:
    fd = _pipe(FRAME.pack(3) + b"abc" + FRAME.pack(2) + b"de" + FRAME.pack(0))
    assert b"".join(_Pipe(fd, "layer").open()) == b"abcde"


@pytest.mark.parametrize("data", [FRAME.pack(3) + b"abc", FRAME.pack(3) + b"ab", b""])
def test_a_stream_without_its_end_frame_is_an_error(data: bytes) -> None:
    with pytest.raises(DockwrightError, match="ended early"):
        b"".join(_Pipe(_pipe(data), "sha256:1234").open())


def test_a_layer_the_parent_did_not_send_is_an_error() -> None:
    with pytest.raises(DockwrightError, match="went away"):
        b"".join(_Pipe(None, "sha256:1234").open())
