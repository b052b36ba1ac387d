"""streams.read_ahead: a source's chunks made by a thread of their own, in order, errors included."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from dockwright.model.errors import DigestMismatchError
from dockwright.streams import read_ahead


def test_chunks_arrive_in_order_and_the_source_ends_with_them() -> None:
    chunks = [bytes([i]) * 1000 for i in range(100)]
    assert list(read_ahead(iter(chunks), depth=3)) == chunks


def test_an_error_at_the_sources_end_reaches_the_reader_after_its_chunks() -> None:
    def source() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise DigestMismatchError("blob sha256:00 has the wrong digest")

    seen: list[bytes] = []
    with pytest.raises(DigestMismatchError, match="wrong digest"):
        for chunk in read_ahead(source()):
            seen.append(chunk)
    assert seen == [b"a", b"b"]


def test_a_reader_that_stops_early_stops_and_closes_the_source() -> None:
    closed = threading.Event()
    made: list[int] = []

    def endless() -> Iterator[bytes]:
        try:
            while True:
                made.append(1)
                yield b"x"
        finally:
            closed.set()  # a download's connection goes back here

    reader = read_ahead(endless(), depth=2)
    assert next(reader) == b"x"
    reader.close()
    assert closed.is_set()  # closed before close() returned: the thread is gone
    assert len(made) <= 5  # it stopped within a few chunks of the reader
    assert not any(t.name == "read-ahead" and t.is_alive() for t in threading.enumerate())
