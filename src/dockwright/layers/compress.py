"""A layer's blob: its tar stream cut into fixed blocks, compressed (gzip through ISA-L, zstd, or none) and
hashed on both sides in one pass: the diff_id of the tar bytes, the digest and size of the compressed ones.

Determinism: the tar stream is cut into fixed BLOCK_SIZE blocks before compression. ISA-L's
threaded gzip compresses each block independently (with the previous block's tail as
dictionary), so the output depends on the block size only, not on the thread count. zstd's
multi-threaded mode gives the same bytes for any worker count >= 1 (but not for 0), so it always
runs with at least one worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, Literal

from dockwright.model.errors import DockwrightError, UsageError
from dockwright.model.mediatypes import OCI_LAYER_TAR, OCI_LAYER_ZSTD, Format, layer_media_type_for, media_type

BLOCK_SIZE = 1 << 20
GZIP_LEVELS = range(0, 4)  # ISA-L levels
ZSTD_LEVELS = range(1, 23)
DEFAULT_LEVEL = {"gzip": 1, "zstd": 3}


@dataclasses.dataclass(frozen=True)
class Compression:
    algorithm: Literal["gzip", "zstd", "none"] = "gzip"
    level: int | None = None  # None: gzip 1 (ISA-L, 0-3), zstd 3 (1-22)
    threads: int = 0  # 0 = one per CPU; never changes the output bytes

    def resolved_level(self) -> int | None:
        """The effective level, validated; None for "none"."""
        if self.algorithm == "none":
            return None
        if self.algorithm not in DEFAULT_LEVEL:
            raise UsageError(f"unknown compression {self.algorithm!r}", hint="use gzip, zstd or none")
        level = DEFAULT_LEVEL[self.algorithm] if self.level is None else self.level
        allowed = GZIP_LEVELS if self.algorithm == "gzip" else ZSTD_LEVELS
        if level not in allowed:
            raise UsageError(
                f"invalid {self.algorithm} compression level {level}",
                hint=f"use {allowed.start}..{allowed.stop - 1} (gzip levels are ISA-L's: 0 fastest, 3 smallest)",
            )
        return level

    def resolved_threads(self) -> int:
        return max(1, self.threads or os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class LayerBlob:
    path: Path
    digest: str  # sha256 of the compressed bytes
    size: int
    diff_id: str  # sha256 of the uncompressed tar
    compression: str  # "gzip" | "zstd" | "none"
    entries: int = 0  # tar members written (0 for a recompressed stream)
    machines: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # ELF machine key -> paths (elf.py)


def layer_media_type(compression: str, fmt: Format) -> str:
    """The manifest media type of a layer we wrote; raises UsageError for zstd/none in Docker format."""
    oci = {"gzip": media_type("oci", "gzip"), "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER_TAR}[compression]
    return layer_media_type_for(fmt, oci)


class _HashingFile:
    """The compressed side: hash, count, write. Called from the compressor's writer thread.
    Without compression the two streams are the same, so hashing them twice is skipped."""

    def __init__(self, file: BinaryIO, hashing: bool) -> None:
        self.file = file
        self.hash = hashlib.sha256() if hashing else None
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        if self.hash is not None:
            self.hash.update(data)
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


class _BackgroundHash:
    """sha256 on a thread of its own. The thread framing the tar stream is the writer's bottleneck
    (Python, per file), and hashlib releases the GIL: the diff_id then costs it a queue put per block."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="dockwright-diff-id", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            self._hash.update(block)

    def update(self, block: bytes) -> None:
        self._queue.put(block)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.stop()
        return self._hash.hexdigest()


class BlobSink:
    """The uncompressed side: collects tar bytes into fixed blocks, hashes them, feeds the compressor."""

    def __init__(self, out: _HashingFile, compression: Compression) -> None:
        self.buffer = bytearray(BLOCK_SIZE)
        self.view = memoryview(self.buffer)
        self.pos = 0
        self.flushed = 0  # tar bytes passed on in whole blocks: with `pos`, what is packed so far
        self.hash = _BackgroundHash()
        level = compression.resolved_level()
        threads = compression.resolved_threads()
        if compression.algorithm == "gzip":
            from isal import igzip_threaded

            # Blocks go to the raw writer unbuffered: one write per block, block boundaries ours.
            self._closer = igzip_threaded.open(out, "wb", compresslevel=level, threads=threads,
                                               block_size=BLOCK_SIZE)
            self._write = self._closer.raw.write
        elif compression.algorithm == "zstd":
            import zstandard

            self._closer = zstandard.ZstdCompressor(level=level, threads=threads).stream_writer(
                out, closefd=False)
            self._write = self._closer.write
        else:
            self._closer = None
            self._write = out.write

    def write(self, data: bytes) -> None:
        end = self.pos + len(data)
        if end < BLOCK_SIZE:  # the common case: a header, a small file, padding
            self.buffer[self.pos : end] = data
            self.pos = end
            return
        view = memoryview(data)
        while view:
            n = min(len(view), BLOCK_SIZE - self.pos)
            self.view[self.pos : self.pos + n] = view[:n]
            self.pos += n
            view = view[n:]
            if self.pos == BLOCK_SIZE:
                self.flush_block()

    def flush_block(self) -> None:
        # One copy, which the threaded compressor makes anyway (bytes(bytes) is not a copy): the hash
        # thread and the compressor may hold the block while the buffer fills again.
        block = bytes(self.view[: self.pos])
        self.hash.update(block)
        self._write(block)
        self.flushed += self.pos
        self.pos = 0

    def close(self) -> None:
        if self.pos:
            self.flush_block()
        if self._closer is not None:
            self._closer.close()

    def abort(self) -> None:
        """Stop the hash and compressor threads after an error, ignoring what they had left."""
        self.hash.stop()
        if self._closer is not None:
            with contextlib.suppress(Exception):  # the original error is the one to report
                self._closer.close()


def compress_stream(chunks: Iterable[bytes], dest: Path, compression: Compression) -> LayerBlob:
    """Compress an existing tar stream (a docker-archive layer) into `dest`, with its digest and
    diff_id computed in the same pass. On failure `dest` is removed."""

    def feed(sink: BlobSink) -> None:
        for chunk in chunks:
            sink.write(chunk)

    return write_blob(dest, compression, feed)


def write_blob(dest: Path, compression: Compression, feed: Callable[[BlobSink], None]) -> LayerBlob:
    """Write what `feed` puts into the sink to `dest`, compressed, hashing both sides. On failure `dest` is
    removed."""
    compression.resolved_level()  # validate before creating anything
    try:
        file = open(dest, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise DockwrightError(f"cannot create layer file {dest}: {exc.strerror}") from None
    out = _HashingFile(file, hashing=compression.algorithm != "none")
    sink = BlobSink(out, compression)
    ok = False
    try:
        feed(sink)
        sink.close()
        file.close()  # flushes: a full disk may only show here
        ok = True
    except OSError as exc:
        raise DockwrightError(f"cannot write layer file {dest}: {exc.strerror}",
                              hint="free some space, or point --cache-dir at a larger disk") from None
    finally:
        if not ok:
            sink.abort()
            with contextlib.suppress(OSError):  # the original error is the one to report
                file.close()
            dest.unlink(missing_ok=True)
    diff_id = "sha256:" + sink.hash.hexdigest()
    digest = "sha256:" + out.hash.hexdigest() if out.hash is not None else diff_id
    return LayerBlob(dest, digest, out.size, diff_id, compression.algorithm)
