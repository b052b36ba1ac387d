"""Byte streams: a file over an iterator of chunks, and a layer blob's (gzip, zstd or plain) bytes
inflated with a cap on how much they may expand to."""

from __future__ import annotations

import contextlib
import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dockwright.model.errors import ImageFormatError

MAX_LAYER_BYTES = 32 << 30  # decompressed, per layer (per RootFS.from_layers call): the gzip-bomb guard
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (for tarfile, which reads files). `total`: the
    bytes taken from the chunks so far."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._pending = b""
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self.total += len(chunk)
            self._pending = chunk
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def drain(self) -> int:
        """Consume the chunks to their end (where a verifying source checks its digest); the number of
        bytes that were left unread."""
        left = len(self._pending) + sum(len(chunk) for chunk in self._chunks)
        self._pending = b""
        return left


def inflate(chunks: Iterable[bytes], name: str = "layer", max_bytes: int = MAX_LAYER_BYTES) -> Iterator[bytes]:
    """A layer blob's tar bytes from its chunks, gzip, zstd or plain (detected by magic bytes). More
    than `max_bytes` of them, or corrupt or truncated compressed data, raise ImageFormatError naming
    `name`."""
    total = 0
    for chunk in _decompress(chunks, name):
        total += len(chunk)
        if total > max_bytes:
            raise ImageFormatError(f"{name} expands to more than {max_bytes} bytes; refusing to read further",
                                   hint="the layer may be a decompression bomb")
        yield chunk


def _decompress(chunks: Iterable[bytes], name: str) -> Iterator[bytes]:
    raw = (chunk for chunk in chunks if chunk)
    head = b""
    for chunk in raw:
        head += chunk
        if len(head) >= 4:
            break
    if head.startswith(_GZIP_MAGIC):
        from isal import isal_zlib

        yield from _inflate(itertools.chain((head,), raw), name,
                            lambda: isal_zlib.decompressobj(wbits=31), (isal_zlib.error,))
    elif head.startswith(_ZSTD_MAGIC):
        import zstandard

        yield from _inflate(itertools.chain((head,), raw), name,
                            lambda: zstandard.ZstdDecompressor().decompressobj(), (zstandard.ZstdError,))
    else:
        yield from itertools.chain((head,), raw)


def _inflate(raw: Iterable[bytes], name: str, make: Callable[[], Any],
             errors: tuple[type[Exception], ...]) -> Iterator[bytes]:
    """Decompress member after member (concatenated gzip members / zstd frames are valid); zero
    padding after a complete member is ignored, a truncated stream is an error."""
    decoder = make()
    try:
        for data in raw:
            while data:
                if decoder is None:  # a member ended: padding, or the next member
                    if not data.strip(b"\0"):
                        break
                    decoder = make()
                out = decoder.decompress(data)
                if out:
                    yield out
                data = b""
                if decoder.eof:
                    data, decoder = decoder.unused_data, None
    except (*errors, ValueError) as exc:
        raise ImageFormatError(f"{name}: corrupt compressed data ({exc})") from None
    if decoder is not None:
        raise ImageFormatError(f"{name}: compressed data ends early (truncated download?)")


def read_ahead(chunks: Iterable[bytes], depth: int = 16) -> Iterator[bytes]:
    """`chunks`, made by a thread of their own up to `depth` chunks ahead of the reader, so that
    downloading and inflating a layer overlap with writing its files. The source's errors (a digest
    mismatch at its end, a broken download) reach the reader in order; a reader that stops early stops
    the thread at its next chunk, and the source is closed by the thread that runs it."""
    import queue
    import threading

    pipe: queue.Queue[tuple[bytes | None, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        source = iter(chunks)
        try:
            for chunk in source:
                while not stop.is_set():
                    try:
                        pipe.put((chunk, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the reader, which raises it
            pipe.put((None, exc))
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        pipe.put((None, None))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            chunk, error = pipe.get()
            if error is not None:
                raise error
            if chunk is None:
                return
            yield chunk
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting for room
            with contextlib.suppress(queue.Empty):
                pipe.get(timeout=0.1)
        thread.join()
